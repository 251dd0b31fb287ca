"""The consumer seam without a server: librdkafka option mapping, backend selection, and the
confluent backend's grouping of messages into per-partition lists."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from batcher.config import KafkaConfig, load_config
from batcher.confluent_consumer import ConfluentConsumer, confluent_config
from batcher.consumer import PartitionRecords, Record, consumer_factory
from batcher.errors import ConfigError
from batcher.kafka_python_consumer import KafkaPythonConsumer
from sinks.base import TopicPartition

CONFIG = """
[kafka]
bootstrap_servers = "127.0.0.1:1"
{kafka}
[[routes]]
topic = "t"
table = "t"
hdfs_dir = "/d"
columns = [{{ name = "id", type = "int64", nullable = false }}]
"""


def kafka(**kw: Any) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers="b1:9092,b2:9092", **kw)


def test_consumer_settings_map_to_librdkafka_names() -> None:
    cfg = kafka(
        group_id="g",
        client_id="c",
        auto_offset_reset="latest",
        session_timeout_ms=7000,
        heartbeat_interval_ms=2000,
        max_poll_interval_ms=120_000,
        fetch_max_bytes=4 << 20,
        max_partition_fetch_bytes=1 << 20,
    )
    conf = confluent_config(cfg, {})
    assert conf["bootstrap.servers"] == "b1:9092,b2:9092"
    assert conf["group.id"] == "g"
    assert conf["client.id"] == "c"
    assert conf["auto.offset.reset"] == "latest"
    assert conf["session.timeout.ms"] == 7000
    assert conf["heartbeat.interval.ms"] == 2000
    assert conf["max.poll.interval.ms"] == 120_000
    assert conf["fetch.max.bytes"] == 4 << 20
    assert conf["max.partition.fetch.bytes"] == 1 << 20
    # The sinks hold the truth: nothing is committed or stored behind the daemon's back.
    assert conf["enable.auto.commit"] is False
    assert conf["enable.auto.offset.store"] is False
    assert conf["partition.assignment.strategy"] == "range,roundrobin"  # eager
    assert "receive.message.max.bytes" not in conf
    # Keep fetching while records are consumed (librdkafka's 1 s default capped the rate),
    # within a bounded prefetch.
    assert conf["fetch.queue.backoff.ms"] == 10
    assert conf["queued.max.messages.kbytes"] == 32768
    assert all("_" not in key for key in conf), "only librdkafka (dotted) names"


def test_huge_fetch_max_bytes_raises_the_receive_limit() -> None:
    conf = confluent_config(kafka(fetch_max_bytes=200_000_000), {})
    assert conf["receive.message.max.bytes"] == 200_000_512


def test_client_options_map_to_librdkafka_names() -> None:
    options = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/etc/ca.pem",
        "ssl_certfile": "/etc/client.pem",
        "ssl_keyfile": "/etc/client.key",
    }
    conf = confluent_config(kafka(), options)
    assert conf["security.protocol"] == "sasl_ssl"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "svc"
    assert conf["sasl.password"] == "s3cret"
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["ssl.certificate.location"] == "/etc/client.pem"
    assert conf["ssl.key.location"] == "/etc/client.key"
    assert not set(options) & set(conf)


def test_unknown_client_options_are_refused_by_name() -> None:
    with pytest.raises(ConfigError) as err:
        confluent_config(kafka(), {"ssl_cafile": "/ca", "api_version": (2, 8), "acks": "all"})
    text = str(err.value)
    assert "kafka.client_options" in text
    assert "acks, api_version" in text
    assert "ssl_cafile" not in text.split("(supported")[0]


def test_sasl_password_from_the_env_reaches_librdkafka(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        CONFIG.format(
            kafka='backend = "confluent"\nsasl_password_env = "KPW"\n'
            'client_options = { security_protocol = "SASL_PLAINTEXT", '
            'sasl_mechanism = "PLAIN", sasl_plain_username = "u" }'
        )
    )
    monkeypatch.setenv("KPW", "from-env")
    cfg = load_config(path, environ={})
    conf = confluent_config(cfg.kafka, cfg.kafka_client_options())
    assert conf["sasl.password"] == "from-env"
    assert conf["security.protocol"] == "sasl_plaintext"


def test_backend_defaults_to_kafka_python_and_env_selects_confluent(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG.format(kafka=""))
    assert load_config(path, environ={}).kafka.backend == "kafka-python"
    env = {"BATCHER__KAFKA__BACKEND": "confluent"}
    assert load_config(path, environ=env).kafka.backend == "confluent"
    with pytest.raises(ConfigError, match=r"kafka\.backend"):
        load_config(path, environ={"BATCHER__KAFKA__BACKEND": "librdkafka"})


def test_confluent_backend_without_the_package_fails_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG.format(kafka='backend = "confluent"'))
    cfg = load_config(path, environ={})
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # import raises ImportError
    with pytest.raises(ConfigError) as err:
        consumer_factory(cfg)
    assert "kafka.backend" in str(err.value)
    assert "pip install 'bulk-ingest[fast]'" in str(err.value)


def test_confluent_backend_with_bad_options_fails_at_start(tmp_path: Path) -> None:
    pytest.importorskip("confluent_kafka")
    path = tmp_path / "c.toml"
    path.write_text(CONFIG.format(kafka='backend = "confluent"\nclient_options = { x_y = 1 }'))
    with pytest.raises(ConfigError, match="x_y"):
        consumer_factory(load_config(path, environ={}))


def test_kafka_python_backend_accepts_its_own_options(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG.format(kafka="client_options = { api_version_auto_timeout_ms = 1 }"))
    factory = consumer_factory(load_config(path, environ={}))  # no connection yet
    assert callable(factory)
    assert KafkaPythonConsumer.commit_in_revoke is False
    assert ConfluentConsumer.commit_in_revoke is True


# -- the records handed to the daemon -------------------------------------------------------
TP = TopicPartition("t", 0)


def test_partition_records_from_offset_and_record() -> None:
    recs = PartitionRecords(TP, [5, 6, 8, 9], [b"a", b"b", None, b"d"], [None, b"k", None, None])
    assert recs.next_offset == 10
    assert recs.from_offset(5) is recs
    tail = recs.from_offset(7)
    assert tail.offsets == [8, 9] and tail.values == [None, b"d"] and len(tail) == 2
    assert len(recs.from_offset(10)) == 0
    assert recs.record(1) == Record("t", 0, 6, b"k", b"b")


class FakeError:
    def __init__(self, code: int, fatal: bool = False) -> None:
        self._code = code
        self._fatal = fatal

    def code(self) -> int:
        return self._code

    def fatal(self) -> bool:
        return self._fatal

    def name(self) -> str:
        return f"E{self._code}"

    def str(self) -> str:
        return f"error {self._code}"


class FakeMessage:
    def __init__(
        self, topic: str, part: int, off: int, value: bytes | None, err: Any = None
    ) -> None:
        self._t, self._p, self._o, self._v, self._e = topic, part, off, value, err

    def error(self) -> Any:
        return self._e

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes | None:
        return self._v

    def key(self) -> bytes | None:
        return None if self._v is None else b"k" + self._v


def fake_confluent(messages: list[FakeMessage]) -> ConfluentConsumer:
    ck = pytest.importorskip("confluent_kafka")

    class FakeClient:
        def consume(self, num: int, timeout: float) -> list[FakeMessage]:
            return messages

    c = ConfluentConsumer.__new__(ConfluentConsumer)
    c._ck = ck
    c._consumer = FakeClient()
    c._fatal = None
    c._callback_error = None
    c._warned = {}
    return c


def test_confluent_poll_groups_messages_per_partition_in_order() -> None:
    ck = pytest.importorskip("confluent_kafka")
    eof = FakeError(ck.KafkaError._PARTITION_EOF)
    msgs = [
        FakeMessage("a", 0, 10, b"x"),
        FakeMessage("a", 0, 11, None),
        FakeMessage("a", 1, 3, b"y"),
        FakeMessage("b", 1, 7, b"z"),
        FakeMessage("a", 1, 0, None, eof),  # end of partition: ignored
        FakeMessage("a", 0, 12, b"w"),
        FakeMessage("a", 1, 4, b"v"),
    ]
    got = fake_confluent(msgs).poll(0.1, 100)
    a0, a1, b1 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 1)
    assert list(got) == [a0, a1, b1]
    assert got[a0].offsets == [10, 11, 12]
    assert got[a0].values == [b"x", None, b"w"]
    assert got[a0].keys == [b"kx", None, b"kw"]
    assert got[a1].offsets == [3, 4] and got[a1].values == [b"y", b"v"]
    assert got[b1].offsets == [7] and got[b1].record(0) == Record("b", 1, 7, b"kz", b"z")


def test_confluent_poll_message_errors() -> None:
    from batcher.errors import FatalError

    transient = [FakeMessage("a", 0, 0, None, FakeError(3)), FakeMessage("a", 0, 1, b"x")]
    got = fake_confluent(transient).poll(0.1, 100)  # logged, librdkafka retries
    assert got[TopicPartition("a", 0)].offsets == [1]
    fatal = [FakeMessage("a", 0, 0, None, FakeError(3, fatal=True))]
    with pytest.raises(FatalError, match="error 3"):
        fake_confluent(fatal).poll(0.1, 100)
