"""HDFS for the local stack: one NameNode and one DataNode, each its own JVM, WebHDFS on."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

from stack import process
from stack.fetch import ensure_jars
from stack.settings import HADOOP_VERSION, StackSettings

NAMENODE = "namenode"
DATANODE = "datanode"

# What Hadoop's own launcher scripts add on Java 17 (hadoop-functions.sh).
_OPENS = [
    "java.io", "java.lang", "java.lang.reflect", "java.math", "java.net", "java.text",
    "java.util", "java.util.concurrent", "java.util.zip", "sun.security.util", "sun.security.x509",
]  # fmt: skip

_LOG4J = """\
log4j.rootLogger=INFO,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
log4j.logger.org.apache.hadoop.hdfs.StateChange=WARN
log4j.logger.org.apache.hadoop.hdfs.server.namenode.FSNamesystem.audit=WARN
log4j.logger.org.apache.hadoop.hdfs.server.datanode.DataNode.clienttrace=WARN
"""


_WEB_XML = """\
<?xml version="1.0" encoding="UTF-8"?>
<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee" version="3.1"></web-app>
"""


def _xml(props: dict[str, str]) -> str:
    rows = "".join(
        f"  <property><name>{k}</name><value>{v}</value></property>\n" for k, v in props.items()
    )
    return f'<?xml version="1.0"?>\n<configuration>\n{rows}</configuration>\n'


def _home(s: StackSettings) -> Path:
    return s.paths.root / "hadoop"


def _write_conf(s: StackSettings) -> Path:
    home, h, p = _home(s), s.host, s.ports
    conf = home / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "core-site.xml").write_text(
        _xml(
            {
                "fs.defaultFS": f"hdfs://{h}:{p.namenode_rpc}",
                "hadoop.security.authentication": "simple",
                "hadoop.tmp.dir": str(home / "tmp"),
            }
        )
    )
    (conf / "hdfs-site.xml").write_text(
        _xml(
            {
                "dfs.replication": "1",
                "dfs.namenode.name.dir": f"file://{home / 'name'}",
                "dfs.datanode.data.dir": f"file://{home / 'data'}",
                "dfs.namenode.rpc-address": f"{h}:{p.namenode_rpc}",
                "dfs.namenode.http-address": f"{h}:{p.namenode_http}",
                "dfs.datanode.address": f"{h}:{p.datanode}",
                "dfs.datanode.http.address": f"{h}:{p.datanode_http}",
                "dfs.datanode.ipc.address": f"{h}:{p.datanode_ipc}",
                # WebHDFS redirects clients to the DataNode by its registered host name.
                "dfs.datanode.hostname": h,
                "dfs.webhdfs.enabled": "true",
                "dfs.permissions.enabled": "false",
                "dfs.namenode.datanode.registration.ip-hostname-check": "false",
                # One DataNode: leave safe mode as soon as it has reported, not after 30 s.
                "dfs.namenode.safemode.extension": "0",
                "dfs.namenode.safemode.min.datanodes": "1",
                "dfs.blocksize": "134217728",
                "dfs.heartbeat.interval": "1",
                # WebHDFS writes go through the DataNode's own DFSClient, whose complete()
                # retries after 400 ms when the block report is a moment late: measured as
                # a 0.4 s stall on every other small upload. 20 ms retries lose nothing.
                "dfs.client.block.write.locateFollowingBlock.initial.delay.ms": "20",
            }
        )
    )
    (conf / "log4j.properties").write_text(_LOG4J)
    # The Maven jars lack the webapps/ tree of the binary tarball, but HttpServer2 looks it up
    # on the classpath before it starts the servlets (WebHDFS among them) that are registered
    # in code; empty web applications on the conf directory satisfy it.
    for app in ("hdfs", "datanode", "static"):
        web_inf = conf / "webapps" / app / "WEB-INF"
        web_inf.mkdir(parents=True, exist_ok=True)
        (web_inf / "web.xml").write_text(_WEB_XML)
    return conf


def _java(s: StackSettings, lib: Path, conf: Path, main: str, *args: str) -> list[str]:
    opens = [f"--add-opens=java.base/{pkg}=ALL-UNNAMED" for pkg in _OPENS]
    return [
        "java", "-Xms128m", "-Xmx512m", "-XX:+IgnoreUnrecognizedVMOptions", *opens,
        f"-Dhadoop.log.dir={s.paths.logs}", f"-Dhadoop.home.dir={_home(s)}",
        "-Dlog4j.configuration=file:" + str(conf / "log4j.properties"),
        "-cp", f"{conf}:{lib}/*", main, *args,
    ]  # fmt: skip


def start(s: StackSettings) -> bool:
    """Start whichever of the NameNode and DataNode is not running; True if any was started."""
    nn_up = process.recorded_pid(NAMENODE, s.paths.pids) is not None
    dn_up = process.recorded_pid(DATANODE, s.paths.pids) is not None
    if nn_up and dn_up:
        return False
    lib = ensure_jars(s.paths, "hadoop", HADOOP_VERSION, s.paths.logs / "fetch-hadoop.log")
    conf = _write_conf(s)
    home = _home(s)
    if not (home / "name" / "current" / "VERSION").exists():
        # A fresh NameNode gets a new cluster id: an old DataNode directory would not match.
        shutil.rmtree(home / "data", ignore_errors=True)
        fmt = ["-format", "-nonInteractive", "-force", "-clusterid", f"CID-{uuid.uuid4()}"]
        cmd = _java(s, lib, conf, "org.apache.hadoop.hdfs.server.namenode.NameNode", *fmt)
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"namenode format failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    if not nn_up:
        cmd = _java(s, lib, conf, "org.apache.hadoop.hdfs.server.namenode.NameNode")
        process.spawn(NAMENODE, cmd, s.paths.pids, s.paths.logs / "namenode.log", cwd=home)
    if not dn_up:
        cmd = _java(s, lib, conf, "org.apache.hadoop.hdfs.server.datanode.DataNode")
        process.spawn(DATANODE, cmd, s.paths.pids, s.paths.logs / "datanode.log", cwd=home)
    return True


def wait_ready(s: StackSettings, deadline: float, user: str) -> None:
    """A real round trip through WebHDFS: write a small file, read it back, delete it."""
    from hdfs import InsecureClient
    from hdfs.util import HdfsError
    from requests.exceptions import RequestException

    client = InsecureClient(f"http://{s.host}:{s.ports.namenode_http}", user=user, timeout=10)
    path = f"/tmp/_stack_probe_{uuid.uuid4().hex}"
    token = uuid.uuid4().bytes
    last: Exception | None = None
    while time.monotonic() < deadline:
        for name in (NAMENODE, DATANODE):
            if process.recorded_pid(name, s.paths.pids) is None:
                raise SystemExit(f"{name} exited during start; see {s.paths.logs}/{name}.log")
        try:
            client.write(path, data=token, overwrite=True)
            with client.read(path) as reader:
                got = reader.read()
            client.delete(path)
            if got == token:
                return
            last = RuntimeError("probe file read back different bytes")
        except (HdfsError, RequestException, OSError) as exc:
            last = exc
        time.sleep(1)
    raise SystemExit(f"hdfs not ready before the deadline: {last!r}; see {s.paths.logs}/")


def stop(s: StackSettings) -> bool:
    dn = process.stop(DATANODE, s.paths.pids, timeout=30)
    nn = process.stop(NAMENODE, s.paths.pids, timeout=30)
    return dn or nn
