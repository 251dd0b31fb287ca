"""A single-node Kafka (KRaft: broker and controller in one JVM) on 127.0.0.1."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import time
from pathlib import Path

from stack import process
from stack.fetch import ensure_jars
from stack.settings import KAFKA_VERSION, StackSettings

NAME = "kafka"

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def _home(s: StackSettings) -> Path:
    return s.paths.root / "kafka"


def _properties(s: StackSettings) -> str:
    p, h = s.ports, s.host
    data = _home(s) / "data"
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{h}:{p.kafka_controller}
listeners=PLAINTEXT://{h}:{p.kafka},CONTROLLER://{h}:{p.kafka_controller}
advertised.listeners=PLAINTEXT://{h}:{p.kafka}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
# Tests create topics with explicit partition counts; 3 makes auto-created ones multi-partition.
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests start and stop consumers often; do not wait 3 s before the first rebalance.
group.initial.rebalance.delay.ms=0
# Batcher tests use short session timeouts to see rebalances quickly.
group.consumer.min.session.timeout.ms=1000
group.min.session.timeout.ms=1000
auto.create.topics.enable=true
log.retention.hours=24
log.segment.bytes=268435456
"""


def _java(lib: Path, home: Path, main: str, *args: str) -> list[str]:
    return [
        "java", "-Xms256m", "-Xmx768m", "-XX:+UseG1GC",
        f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
        "-cp", f"{lib}/*", main, *args,
    ]  # fmt: skip


def start(s: StackSettings) -> bool:
    """Start the broker unless it already runs; True if it was started now."""
    if process.recorded_pid(NAME, s.paths.pids) is not None:
        return False
    lib = ensure_jars(s.paths, "kafka", KAFKA_VERSION, s.paths.logs / "fetch-kafka.log")
    home = _home(s)
    home.mkdir(parents=True, exist_ok=True)
    props = home / "server.properties"
    props.write_text(_properties(s))
    (home / "log4j2.properties").write_text(_LOG4J2)
    if not (home / "data" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(secrets.token_bytes(16))
        cmd = _java(lib, home, "kafka.tools.StorageTool", "format", "-t",
                    cluster_id.decode().rstrip("="), "-c", str(props), "-g")  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"kafka storage format failed:\n{out.stdout}{out.stderr}")
    cmd = _java(lib, home, "kafka.Kafka", str(props))
    process.spawn(NAME, cmd, s.paths.pids, s.paths.logs / "kafka.log", cwd=home)
    return True


def wait_ready(s: StackSettings, deadline: float) -> None:
    """A real round trip: create a topic, produce a record and consume it back."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    bootstrap = f"{s.host}:{s.ports.kafka}"
    topic = "_stack_probe"
    last: Exception | None = None
    while time.monotonic() < deadline:
        _check_alive(s)
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
            try:
                admin.create_topics([NewTopic(topic, 1, 1)])
            except TopicAlreadyExistsError:
                pass
            finally:
                admin.close()
            token = os.urandom(8).hex().encode()
            producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
            meta = producer.send(topic, token).get(timeout=10)
            producer.close()
            consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=5000)
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            consumer.seek(tp, meta.offset)
            got = [m.value for m in consumer]
            consumer.close()
            if token in got:
                return
            last = RuntimeError("probe record not read back")
        except (KafkaError, OSError) as exc:
            last = exc
        time.sleep(1)
    raise SystemExit(f"kafka not ready before the deadline: {last!r}; see {s.paths.logs}/kafka.log")


def _check_alive(s: StackSettings) -> None:
    if process.recorded_pid(NAME, s.paths.pids) is None:
        raise SystemExit(f"kafka exited during start; see {s.paths.logs}/kafka.log")


def stop(s: StackSettings) -> bool:
    return process.stop(NAME, s.paths.pids, timeout=30)
