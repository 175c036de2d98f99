"""A single-node Apache Kafka (KRaft, broker + controller) from Maven Central jars."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from geostream.stack.system import StackError, pid_alive, port_open, run, wait_for_port

log = logging.getLogger("geostream.stack")

POM_TEMPLATE = Path(__file__).with_name("kafka-pom.xml")
HOST = "127.0.0.1"
LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
"""


@dataclass(frozen=True, slots=True)
class KafkaNode:
    """One KRaft node in ``root``: jars, config, data, log and PID file."""

    root: Path
    version: str
    port: int = 9092
    controller_port: int = 9093
    heap: str = "1g"

    @property
    def libs(self) -> Path:
        return self.root / "libs"

    @property
    def pid_file(self) -> Path:
        return self.root / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "kafka.log"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def fetch(self) -> bool:
        """Copy the broker's jars from Maven into ``libs``; False if they were there already."""
        marker = self.libs / f".kafka-{self.version}"
        if marker.exists():
            return False
        shutil.rmtree(self.libs, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        pom = self.root / "pom.xml"
        pom.write_text(
            POM_TEMPLATE.read_text().replace(
                "<kafka.version>3.9.2</kafka.version>",
                f"<kafka.version>{self.version}</kafka.version>",
            )
        )
        log.info("fetching Apache Kafka %s jars with Maven", self.version)
        run(
            ["mvn", "-B", "-q", "-f", pom, "dependency:copy-dependencies",
             f"-DoutputDirectory={self.libs}", "-DincludeScope=runtime"],
            log_file=self.root / "maven.log",
        )  # fmt: skip
        marker.touch()
        return True

    def configure(self) -> bool:
        """Write server.properties and format the storage once; False if already formatted."""
        data = self.root / "data"
        properties = self.root / "server.properties"
        properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{HOST}:{self.controller_port}",
                    f"listeners=PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://{HOST}:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={data}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=12",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "min.insync.replicas=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "delete.topic.enable=true",
                    "",
                ]
            )
        )
        (self.root / "log4j.properties").write_text(LOG4J)
        if (data / "meta.properties").exists():
            return False
        log.info("formatting Kafka storage in %s", data)
        run(
            ["java", "-cp", f"{self.libs}/*", "kafka.tools.StorageTool", "format",
             "-t", _cluster_id(), "-c", properties],
            log_file=self.root / "format.log",
        )  # fmt: skip
        return True

    def running(self) -> bool:
        return pid_alive(self.pid_file) is not None

    def start(self) -> bool:
        """Start the broker in its own session; False if ours was already running."""
        if self.running():
            return False
        if port_open(HOST, self.port):
            raise StackError(f"port {self.port} is taken by another process")
        log.info("starting Kafka %s on %s", self.version, self.bootstrap)
        with self.log_file.open("a") as out:
            process = subprocess.Popen(
                [
                    "java", f"-Xmx{self.heap}", "-Xms256m", "-XX:+UseG1GC",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j.configuration=file:{self.root / 'log4j.properties'}",
                    f"-Dkafka.logs.dir={self.root}",
                    "-cp", f"{self.libs}/*",
                    "kafka.Kafka", str(self.root / "server.properties"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self.pid_file.write_text(f"{process.pid}\n")
        wait_for_port(HOST, self.port, 60, "Kafka", self.log_file)
        return True

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM for a controlled shutdown, SIGKILL after ``timeout``."""
        pid = pid_alive(self.pid_file)
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        log.info("stopping Kafka (pid %s)", pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(self.pid_file) is not None:
            _reap(pid)
            time.sleep(0.2)
        if pid_alive(self.pid_file) is not None:
            os.kill(pid, signal.SIGKILL)
            _reap(pid, block=True)
        self.pid_file.unlink(missing_ok=True)
        return True

    def remove_data(self) -> None:
        shutil.rmtree(self.root / "data", ignore_errors=True)


def _cluster_id() -> str:
    """A KRaft cluster id as Kafka makes them: a random UUID, base64url without padding, drawn
    again when it starts with "-" (as Kafka's Uuid.randomUuid does): the storage tool would
    take it for an option (1 format in 64 failed)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _reap(pid: int, block: bool = False) -> None:
    """Collect the exit status when the broker is our own child, so it is not left a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0 if block else os.WNOHANG)
