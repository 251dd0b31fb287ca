"""Configuration: validation names the key, env overrides, secrets stay out of files."""

from __future__ import annotations

from pathlib import Path

import pytest

from batcher.config import load_config
from batcher.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
[kafka]
bootstrap_servers = "127.0.0.1:1"
[[routes]]
topic = "t"
table = "t"
hdfs_dir = "/d"
columns = [{ name = "id", type = "int64", nullable = false }]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_example_and_local_configs_are_valid() -> None:
    env = {"KAFKA_BOOTSTRAP": "h:1", "PGHOST": "h", "PGPORT": "1", "HDFS_URL": "http://h:2"}
    for name in ("batcher.toml", "local.toml"):
        cfg = load_config(REPO / "config" / name, environ=env)
        assert cfg.routes[0].topic == "events"


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        pytest.param('[metrics]\nport = "x"\n', "metrics.port", id="wrong-type"),
        pytest.param("[limits]\nbad_ratio_max = 2\n", "limits.bad_ratio_max", id="out-of-range"),
        pytest.param("[kafka_typo]\nx = 1\n", "kafka_typo", id="unknown-section"),
        pytest.param(
            '[postgres]\nconninfo = "host=h password=secret"\n', "postgres.conninfo", id="pw-in-dsn"
        ),
    ],
)
def test_errors_name_the_key(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, MINIMAL + extra), environ={})
    assert key in str(err.value)


def test_bad_column_type_names_the_route_column(tmp_path: Path) -> None:
    text = MINIMAL.replace('type = "int64"', 'type = "int128"')
    with pytest.raises(ConfigError, match=r"routes\.0\.columns\.0\.type"):
        load_config(write(tmp_path, text), environ={})


def test_env_overrides_any_key_and_parses_literals(tmp_path: Path) -> None:
    env = {
        "BATCHER__KAFKA__GROUP_ID": "g2",
        "BATCHER__METRICS__PORT": "9999",
        "BATCHER__ROUTES__0__TABLE": "other",
    }
    cfg = load_config(write(tmp_path, MINIMAL), environ=env)
    assert (cfg.kafka.group_id, cfg.metrics.port, cfg.routes[0].table) == ("g2", 9999, "other")


def test_unset_variable_is_a_clear_error(tmp_path: Path) -> None:
    text = MINIMAL.replace('"127.0.0.1:1"', '"${NOPE_NOT_SET}"')
    with pytest.raises(ConfigError, match="NOPE_NOT_SET"):
        load_config(write(tmp_path, text), environ={})


def test_flush_bytes_above_the_budget_is_refused(tmp_path: Path) -> None:
    text = MINIMAL + "[limits]\nmemory_budget_bytes = 1000\n"
    with pytest.raises(ConfigError, match="memory_budget_bytes"):
        load_config(write(tmp_path, text), environ={})


def test_passwords_are_refused_in_client_options(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'bootstrap_servers = "127.0.0.1:1"',
        'bootstrap_servers = "127.0.0.1:1"\nclient_options = { sasl_plain_password = "x" }',
    )
    with pytest.raises(ConfigError, match="sasl_password_env"):
        load_config(write(tmp_path, text), environ={})


def test_sasl_password_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = MINIMAL.replace(
        'bootstrap_servers = "127.0.0.1:1"',
        'bootstrap_servers = "127.0.0.1:1"\nsasl_password_env = "MY_SASL_PW"\n'
        'client_options = { security_protocol = "SASL_PLAINTEXT", sasl_mechanism = "PLAIN" }',
    )
    monkeypatch.setenv("MY_SASL_PW", "hunter22")
    cfg = load_config(write(tmp_path, text), environ={})
    opts = cfg.kafka_client_options()
    assert opts["sasl_plain_password"] == "hunter22"
    assert opts["security_protocol"] == "SASL_PLAINTEXT"
