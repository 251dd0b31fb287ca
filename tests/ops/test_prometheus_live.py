"""A real Prometheus scrapes a real batcher: every dashboard and alert query parses and has data.

Prometheus is Debian's ``prometheus`` binary (installed by ``stack.prometheus``), on a free
loopback port with its own TSDB in a temp dir, scraping the daemon every second and loading
config/prometheus/alerts.yml. The daemon (the harness's subprocess) ingests a few thousand
events, some malformed (dead letters). Its Postgres connection goes through a TCP proxy the
test owns, so the test can cut Postgres off for a few seconds without touching the stack:
that makes the flush-failure, degraded, paused and not-ready series real too. Then:

- every ``expr`` of config/grafana/batcher.json (Grafana's ``$instance``,
  ``$__rate_interval`` and ``$__range`` replaced by what Grafana would send) answers
  ``success`` with a non-empty result;
- every alerting rule is loaded with health ``ok``; its full expression answers
  ``success``; and since a healthy daemon makes most alert expressions empty by design, the
  expression is also evaluated with every comparison against a number removed (``x > 0.9``
  becomes ``x``, ``a > 0 and b > 10000`` becomes ``a and b``): what remains is the alert's
  metric selectors and arithmetic, which must return data. The rule text comes from
  Prometheus's own ``/api/v1/rules`` (as parsed and printed by Prometheus), so the
  stripping works on its canonical form. BatcherNotReady and BatcherPartitionPaused are
  also evaluated unstripped at a moment of the Postgres cut, where they must return data;
- ``promtool check metrics`` finds nothing to complain about in a live scrape of /metrics.

Prometheus, the daemon and the proxy are always stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ingest import synthetic
from tests.integration.harness import Pipeline, free_port, produce, wait_for
from tests.ops import DASHBOARD, PROMETHEUS_DIR, prometheus_bindir

pytestmark = pytest.mark.integration

# A comparison with a number literal, as Prometheus prints it: "> 0", "== 0", "> bool 1e+04".
COMPARISON = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?-?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?")
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "10m", "$instance": ".+"}


# -- a TCP proxy in front of Postgres that the test can cut -----------------------------------
class TcpProxy:
    """Forwards 127.0.0.1:port to upstream; ``cut()`` drops every connection and refuses new
    ones (accepts and closes them at once) until ``restore()``."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._forwarding = True
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="pg-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if not self._forwarding:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._forwarding = False
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self._forwarding = True

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._thread.join(5)
        self._listener.close()


@dataclass
class ProxiedPipeline(Pipeline):
    pg_port: int = 0

    def conninfo(self) -> str:
        e = self.env
        return f"host=127.0.0.1 port={self.pg_port} user={e['PGUSER']} dbname={e['PGDATABASE']}"


# -- a real Prometheus ------------------------------------------------------------------------
class Prometheus:
    def __init__(self, binary: Path, tmp: Path, target_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {  # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
            "scrape_configs": [
                {
                    "job_name": "batcher",
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
                }
            ],
        }
        path = tmp / "prometheus.yml"
        path.write_text(json.dumps(config))
        self.log = tmp / "prometheus.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(binary),
                    f"--config.file={path}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def get(self, path: str, **params: str) -> dict[str, Any]:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return dict(json.load(resp))
        except urllib.error.HTTPError as exc:  # 400 with a JSON error body: a parse error
            return dict(json.load(exc))

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.get("/api/v1/query", **params)

    def has_data(self, expr: str) -> bool:
        answer = self.query(expr)
        return answer.get("status") == "success" and bool(answer["data"]["result"])

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def prometheus_binary() -> Path:
    return prometheus_bindir() / "prometheus"


@pytest.fixture
def proxy(stack_env: dict[str, str]) -> Iterator[TcpProxy]:
    p = TcpProxy(stack_env["PGHOST"], int(stack_env["PGPORT"]))
    yield p
    p.close()


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def grafana_to_promql(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"a Grafana variable the test does not know: {expr}"
    return expr


def strip_comparisons(expr: str) -> str:
    return COMPARISON.sub("", expr)


def test_strip_comparisons() -> None:
    assert strip_comparisons("batcher_ready == 0") == "batcher_ready"
    assert strip_comparisons('up{job="batcher"} == 0') == 'up{job="batcher"}'
    assert (
        strip_comparisons("deriv(batcher_lag_records[10m]) > 0 and batcher_lag_records > 10000")
        == "deriv(batcher_lag_records[10m]) and batcher_lag_records"
    )
    assert strip_comparisons('x{sink=~"hdfs|local"} > 300') == 'x{sink=~"hdfs|local"}'
    assert strip_comparisons("a / b > 0.9") == "a / b"


def _poll_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    wait_for(cond, timeout, what, every=0.5)


def test_dashboard_and_alert_queries_against_a_live_batcher(
    stack_env: dict[str, str],
    tmp_path: Path,
    new_topic: Callable[..., str],
    pg_schema: str,
    hdfs_dir: str,
    prometheus_binary: Path,
    proxy: TcpProxy,
) -> None:
    p = ProxiedPipeline(stack_env, tmp_path, new_topic(3), pg_schema, hdfs_dir, pg_port=proxy.port)
    bootstrap = stack_env["KAFKA_BOOTSTRAP"]
    # A few thousand events, 5% malformed: dead letters of several reasons.
    produce(bootstrap, p.topic, synthetic.records(3000, seed=21, bad_ratio=0.05))
    prom = Prometheus(prometheus_binary, tmp_path, p.port)
    proc = None
    code = None
    try:
        _poll_until(prom.ready, 60, "Prometheus ready")
        proc = p.start()
        wait_for(p.all_committed, 120, "all offsets committed")
        _poll_until(
            lambda: prom.has_data('up{job="batcher"} == 1') and prom.has_data("batcher_ready"),
            60,
            "Prometheus scraped the batcher",
        )
        scrape = proc.metrics(p.port)

        # Cut Postgres off while records arrive: flushes fail, the sink is degraded,
        # partitions pause and /readyz answers 503, until the proxy forwards again.
        proxy.cut()
        produce(bootstrap, p.topic, synthetic.records(300, seed=22))
        outage_at: float | None = None
        try:
            _poll_until(
                lambda: prom.has_data("increase(batcher_flush_failures_total[1m]) > 0"),
                60,
                "flush failures scraped",
            )
            _poll_until(
                lambda: (
                    prom.has_data("batcher_ready == 0")
                    and prom.has_data("batcher_partition_paused == 1")
                ),
                60,
                "not ready and paused, scraped",
            )
            outage_at = time.time()
        finally:
            proxy.restore()
        wait_for(p.all_committed, 120, "all committed after the cut")
        _poll_until(
            lambda: (
                prom.has_data("batcher_ready == 1")
                and prom.has_data("max(batcher_partition_paused) == 0")
            ),
            60,
            "ready again, scraped",
        )

        problems: list[str] = []

        # 1. Every dashboard query parses and has data.
        exprs = dashboard_exprs()
        assert len(exprs) >= 7
        for title, raw in exprs:
            expr = grafana_to_promql(raw)
            answer = prom.query(expr)
            if answer.get("status") != "success":
                problems.append(f"dashboard {title!r}: {expr}: {answer.get('error')}")
            elif not answer["data"]["result"]:
                problems.append(f"dashboard {title!r}: {expr}: no data")

        # 2. Every alert rule is loaded and healthy; its expression parses; what remains
        #    without the comparisons has data.
        groups = prom.get("/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"] if r["type"] == "alerting"]
        names = {r["name"] for r in rules}
        assert len(names) == 8, names
        for rule in rules:
            name, expr = rule["name"], rule["query"]
            if rule["health"] == "err":
                problems.append(f"alert {name}: evaluation error {rule.get('lastError')}")
            answer = prom.query(expr)
            if answer.get("status") != "success":
                problems.append(f"alert {name}: {expr}: {answer.get('error')}")
            inner = strip_comparisons(expr)
            assert inner != expr, f"{name}: no comparison found in {expr}"
            answer = prom.query(inner)
            if answer.get("status") != "success":
                problems.append(f"alert {name} (stripped): {inner}: {answer.get('error')}")
            elif not answer["data"]["result"]:
                problems.append(f"alert {name} (stripped): {inner}: no data")
            if name in ("BatcherNotReady", "BatcherPartitionPaused"):
                assert outage_at is not None
                answer = prom.query(expr, at=outage_at)
                if not answer.get("data", {}).get("result"):
                    problems.append(f"alert {name}: {expr}: no data during the cut")
        assert not problems, "\n".join(problems)

        # 3. Metric hygiene: promtool's linter on a live scrape.
        promtool = prometheus_binary.parent / "promtool"
        check = subprocess.run(
            [str(promtool), "check", "metrics"],
            input=scrape, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        assert "batcher_flushed_rows_total" in scrape
    finally:
        prom.stop()
        if proc is not None and proc.alive():
            code = proc.terminate()
        p.close()
    assert proc is not None and code == 0, proc.output()[-3000:] if proc else ""
