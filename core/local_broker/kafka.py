"""Apache Kafka (KRaft, combined broker + controller) as a local process: the broker the tests,
the bench and the demo run, and `callscore broker` for a user without Docker.

Its jars come from Maven Central (`kafka-broker.pom.xml` pins every version), fetched once by
Maven into a cache outside the checkout. A cluster of N nodes shares one cluster id and one
controller quorum; each node formats its own storage, listens on free loopback ports, logs to
its own folder and is stopped by its pid. Without Java or Maven, or when the fetch fails,
`LocalBrokerError` says in one line what is missing and what to do.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import CallscoreError
from core.local_broker.common import LocalBroker, free_port, port_answers, stop_process

POM = Path(__file__).with_name("kafka-broker.pom.xml")
READY_LINE = "Kafka Server started"  # logged by kafka.server.KafkaRaftServer once it serves
START_TIMEOUT_SECONDS = 90.0
JAVA_MIN_MAJOR = 11  # Kafka 3.9's broker; 17 is what the machines and compose's image run


# Broker settings that every deployment of ours shares, the compose file's Kafka included
# (tests/test_compose.py compares them with its KAFKA_* variables): a join is not held back
# waiting for more members, and the internal topics' replication fits the cluster's size.
def shared_settings(nodes: int) -> dict[str, str]:
    return {
        "process.roles": "broker,controller",
        "offsets.topic.replication.factor": str(min(nodes, 3)),
        "transaction.state.log.replication.factor": str(min(nodes, 3)),
        "transaction.state.log.min.isr": str(min(nodes, 2)),
        "group.initial.rebalance.delay.ms": "0",
    }


# What the topics of a cluster of `nodes` get: three replicas at most, all but one of them in
# sync for an acks=all write (3 and 2: one broker may be down). As Settings updates
# (replication_factor, min_insync_replicas) for the clients that create topics on the cluster;
# the compose file's three-broker layout sets the same (tests/test_compose.py compares).
def topic_replication(nodes: int) -> dict[str, int]:
    replicas = min(nodes, 3)
    return {"replication_factor": replicas, "min_insync_replicas": max(1, replicas - 1)}


# Only for the local process: a small heap must hold the log cleaner's dedupe buffer (128 MiB
# by default), and topics of a multi-node cluster default to its replication (topic_replication:
# what a topic made without them gets, Faust's own among them).
def launcher_settings(nodes: int) -> dict[str, str]:
    settings = {"log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024)}
    if nodes > 1:
        replication = topic_replication(nodes)
        settings["default.replication.factor"] = str(replication["replication_factor"])
        settings["min.insync.replicas"] = str(replication["min_insync_replicas"])
    return settings


LOG4J = """\
log4j.rootLogger=WARN, file
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.log.LogCleaner=INFO
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={path}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=1
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


class LocalBrokerError(CallscoreError):
    """The local broker cannot start here: Java or Maven is missing, or the fetch failed."""


def kafka_version() -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    found = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    assert found is not None and found.text, f"{POM} names no kafka.version"
    return found.text


def jars_dir() -> Path:
    """The cache of this pom's jars: outside the checkout, one folder per pom content."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:10]
    return cache / "callqueue-scorer" / f"kafka-{kafka_version()}-{digest}"


def java_binary() -> str:
    java = shutil.which("java")
    if java is None:
        raise LocalBrokerError(
            "Apache Kafka needs Java 17 and `java` is not on PATH: install it (Debian: apt-get "
            "install openjdk-17-jre-headless) or use the Tansu fallback (--broker tansu)"
        )
    shown = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    major = re.search(r'version "(\d+)', shown)
    if major is None or int(major.group(1)) < JAVA_MIN_MAJOR:
        raise LocalBrokerError(
            f"Apache Kafka needs Java {JAVA_MIN_MAJOR} or newer, `java -version` says "
            f"{shown.splitlines()[0] if shown else 'nothing'}: install OpenJDK 17"
        )
    return java


def fetch_jars() -> Path:
    """The broker's jars, fetched with Maven on first use (a few seconds from a warm ~/.m2)."""
    target = jars_dir()
    if (target / f"kafka_2.13-{kafka_version()}.jar").exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalBrokerError(
            "fetching Apache Kafka's jars needs Maven and `mvn` is not on PATH: install it "
            "(Debian: apt-get install maven) or use the Tansu fallback (--broker tansu)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    plugin = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"
    result = subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(POM),
            plugin,
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        said = [line for line in (result.stdout + result.stderr).splitlines() if "ERROR" in line]
        raise LocalBrokerError(
            f"Maven could not fetch Apache Kafka {kafka_version()} from Maven Central (exit "
            f"{result.returncode}: {said[0].strip() if said else 'no error line'}): check the "
            "network or ~/.m2/settings.xml, or use the Tansu fallback (--broker tansu)"
        )
    try:
        staging.rename(target)
    except OSError:  # another process fetched it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return target


def new_cluster_id() -> str:
    """What `kafka-storage.sh random-uuid` prints: a UUID in URL-safe base64 without padding,
    never starting with "-" (Kafka's Uuid.randomUuid draws again too: StorageTool's argument
    parser reads such an id as an option, and the format fails, 1 start in 64)."""
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


@dataclass
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.folder / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.folder / "server.log"

    def properties(self, voters: str, nodes: int) -> dict[str, str]:
        return {
            **shared_settings(nodes),
            **launcher_settings(nodes),
            "node.id": str(self.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.folder / "data"),
        }

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class KafkaCluster(LocalBroker):
    """N KRaft nodes on loopback; `kill` and `start_node` are for fault tests."""

    nodes: list[KafkaNode] = field(default_factory=list)
    java: str = "java"
    jars: Path = Path()
    heap_mb: int = 512
    temporary_folder: Path | None = None  # removed by stop(): data nobody asked to keep

    def stop(self) -> None:
        super().stop()
        if self.temporary_folder is not None:
            shutil.rmtree(self.temporary_folder, ignore_errors=True)

    def start_node(self, node_id: int, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Start one node (again, after `kill`) and wait until it serves."""
        node = self.node(node_id)
        self._wait_ready(node, self._spawn(node), timeout)
        self.wait_registered(timeout)

    def wait_registered(self, timeout: float) -> None:
        """Until every running node's metadata lists every running node as a broker: a node
        that logged "started" may not be registered with the controller yet, and each broker
        learns of the others a moment apart, so a client creating a 3-replica topic in that
        moment, asking whichever node it picks, saw two brokers."""
        from confluent_kafka.admin import AdminClient

        running = [n for n in self.nodes if n.running]
        wanted = {n.node_id for n in running}
        admins = [
            AdminClient({"bootstrap.servers": f"127.0.0.1:{n.port}", "log_level": 0})
            for n in running
        ]
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(wanted <= set(a.list_topics(timeout=5).brokers) for a in admins):
                    return
            except Exception:  # a node in between: ask again
                pass
            if time.monotonic() > deadline:
                raise LocalBrokerError(
                    f"Apache Kafka nodes {sorted(wanted)} did not all see each other within "
                    f"{timeout:.0f} s"
                )
            time.sleep(0.1)

    def _spawn(self, node: KafkaNode) -> int:
        """Start the node's process; the offset of its log where this start's lines begin."""
        log4j = node.folder / "log4j.properties"
        log4j.write_text(LOG4J.format(path=node.log_path))
        offset = node.log_path.stat().st_size if node.log_path.exists() else 0
        console = open(node.folder / "console.log", "ab")  # noqa: SIM115 - the child's
        node.process = subprocess.Popen(
            [
                self.java,
                f"-Xmx{self.heap_mb}m",
                "-Xms64m",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j.configuration=file:{log4j}",
                "-cp",
                f"{self.jars}/*",
                "kafka.Kafka",
                str(node.config_path),
            ],
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes = [n.process for n in self.nodes if n.process is not None]
        return offset

    def _wait_ready(self, node: KafkaNode, offset: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if node.log_path.exists():
                with node.log_path.open("rb") as log:
                    log.seek(offset)
                    started = READY_LINE.encode() in log.read()
                if started and port_answers("127.0.0.1", node.port):
                    return
            assert node.process is not None
            if node.process.poll() is not None:
                raise LocalBrokerError(
                    f"Apache Kafka node {node.node_id} exited ({node.process.returncode}) while "
                    f"starting: {last_error(node)} (logs in {node.folder})"
                )
            if time.monotonic() > deadline:
                stop_process(node.process, 5)
                raise LocalBrokerError(
                    f"Apache Kafka node {node.node_id} did not start within {timeout:.0f} s: "
                    f"{last_error(node)} (logs in {node.folder})"
                )
            time.sleep(0.1)

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: no controlled shutdown, as when a machine dies."""
        process = self.node(node_id).process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def last_error(node: KafkaNode) -> str:
    """The node's last ERROR line, for a one-line message."""
    for path in (node.log_path, node.folder / "console.log"):
        if path.exists():
            errors = [
                line
                for line in path.read_text(errors="replace").splitlines()
                if " ERROR " in line or "Exception" in line
            ]
            if errors:
                return errors[-1].strip()[:300]
    return "no error logged"


def start_kafka(
    nodes: int = 1,
    folder: Path | None = None,
    heap_mb: int = 512,
    timeout: float = START_TIMEOUT_SECONDS,
) -> KafkaCluster:
    """A fresh cluster of `nodes` KRaft nodes (combined mode) in `folder` (default: a new
    temporary folder, removed by `stop()`), every node started and serving."""
    java = java_binary()
    jars = fetch_jars()
    temporary = None if folder else Path(tempfile.mkdtemp(prefix="kafka-"))
    folder = Path(folder) if folder else temporary
    assert folder is not None
    members = [
        KafkaNode(i, free_port(), free_port(), folder / f"node-{i}") for i in range(1, nodes + 1)
    ]
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in members)
    cluster_id = new_cluster_id()
    cluster = KafkaCluster(
        bootstrap_servers=",".join(f"127.0.0.1:{n.port}" for n in members),
        kind="kafka",
        origin=f"Apache Kafka {kafka_version()} ({nodes} node{'s' if nodes > 1 else ''})",
        grace_seconds=15.0,
        nodes=members,
        java=java,
        jars=jars,
        heap_mb=heap_mb,
        temporary_folder=temporary,
    )
    for node in members:
        node.folder.mkdir(parents=True, exist_ok=True)
        node.config_path.write_text(
            "".join(f"{k}={v}\n" for k, v in node.properties(voters, nodes).items())
        )
        formatted = subprocess.run(
            [
                java,
                "-cp",
                f"{jars}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(node.config_path),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
        )
        if formatted.returncode != 0:
            raise LocalBrokerError(
                f"formatting Apache Kafka's storage failed: {formatted.stderr.strip()[-300:]}"
            )
    try:
        # A node serves once the controller quorum has a leader: start them all, then wait.
        offsets = [cluster._spawn(node) for node in members]
        for node, offset in zip(members, offsets, strict=True):
            cluster._wait_ready(node, offset, timeout)
        cluster.wait_registered(timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster
