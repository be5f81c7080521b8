"""docker-compose.yml's services started as processes, with no container engine: each Lethe
service's own command and environment (as `docker-compose config` resolves them), the
image's ENV and WORKDIR (Dockerfile), in dependency order, each checked by running its
own health check.

What a container would isolate is mapped, never invented: the services' host names
(redis, postgres) become the test's loopback servers; container paths (the image's
LETHE_HOME, the mounted registers, named volumes) become folders of the test; container
ports become free loopback ports, rewritten the same way in commands and health checks.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from harness import BIN, ROOT

DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Loopback:
    """What the compose services named by host stand for here: URL parts by host name."""

    hosts: dict[str, str]  # compose host name -> URL to use in its place (scheme ignored)


@dataclass
class Started:
    name: str
    process: subprocess.Popen
    log: Path
    env: dict[str, str]
    cwd: Path


@dataclass
class Stack:
    """The stack's Lethe services, started from the resolved compose file."""

    config: dict
    folder: Path
    loopback: Loopback
    external: set[str]  # services the loopback servers stand for (redis, postgres)
    ports: dict[int, int] = field(default_factory=dict)
    started: dict[str, Started] = field(default_factory=dict)

    # -- what a container would isolate, mapped --------------------------------------

    def image_env(self) -> tuple[dict[str, str], str]:
        """The last stage's ENV and WORKDIR of the Dockerfile."""
        text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
        stage = text.split("\nFROM ")[-1]
        env: dict[str, str] = {}
        workdir = "/"
        for line in stage.splitlines():
            if line.startswith("ENV "):
                for item in shlex.split(line[4:]):
                    key, _, value = item.partition("=")
                    env[key] = value
            elif line.startswith("WORKDIR "):
                workdir = line.split(None, 1)[1].strip()
        return env, workdir

    def paths(self, service: str) -> list[tuple[str, str]]:
        """(container path, host folder), longest first: the service's volumes, then its own
        writable folders (a container's file system is its own)."""
        mapped: dict[str, str] = {"/opt/lethe/bin": str(BIN)}
        image_env, workdir = self.image_env()
        for volume in self.config["services"][service].get("volumes", []):
            source, target = _volume(volume)
            if source.startswith(("/", ".")):
                mapped[target] = str((ROOT / source).resolve())
            else:  # a named volume: one folder, shared by the services that mount it
                folder = self.folder / "volumes" / source
                folder.mkdir(parents=True, exist_ok=True)
                mapped[target] = str(folder)
        # the image's copy of the registers is the repository's
        mapped.setdefault("/etc/lethe/registers", str(ROOT / "registers"))
        for own in {workdir, image_env.get("LETHE_HOME", workdir)}:
            if own not in mapped:
                folder = self.folder / "containers" / service / own.strip("/").replace("/", "_")
                folder.mkdir(parents=True, exist_ok=True)
                mapped[own] = str(folder)
        return sorted(mapped.items(), key=lambda item: -len(item[0]))

    def port(self, container_port: int) -> int:
        if container_port not in self.ports:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.ports[container_port] = probe.getsockname()[1]
        return self.ports[container_port]

    def rewrite(self, service: str, text: str) -> str:
        """A value, argument or health check of `service`, as it reads outside a container."""
        text = text.replace("$$", "$")  # compose's escape, undone when it runs the command
        for container, host in self.paths(service):
            text = re.sub(rf"(?<![\w/]){re.escape(container)}(?=/|\b|$)", host, text)
        for target in _container_ports(self.config["services"][service]):
            text = re.sub(rf"(?<!\d){target}(?!\d)", str(self.port(target)), text)
        return self._hosts(text)

    def _hosts(self, text: str) -> str:
        def url(match: re.Match) -> str:
            parts = urlsplit(match.group(0))
            stand_in = self.loopback.hosts.get(parts.hostname or "")
            if stand_in is None:
                return match.group(0)
            loop = urlsplit(stand_in)
            user = loop.username or parts.username
            password = parts.password if parts.password is not None else loop.password
            credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
            netloc = f"{credentials}{loop.hostname}:{loop.port}"
            return urlunsplit((parts.scheme, netloc, loop.path or parts.path, "", ""))

        return re.sub(r"[a-z][a-z0-9+]*://[^\s'\"]+", url, text)

    def environment(self, service: str) -> dict[str, str]:
        image_env, _ = self.image_env()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LETHE_", "FLOWER_"))}
        for key, value in image_env.items():
            if key == "PATH":
                continue  # the image's venv is this one: BIN leads PATH below
            env[key] = self.rewrite(service, value)
        for key, value in (self.config["services"][service].get("environment") or {}).items():
            env[key] = self.rewrite(service, "" if value is None else str(value))
        env["PATH"] = f"{BIN}:{os.environ.get('PATH', '')}"
        env["HOSTNAME"] = socket.gethostname()  # a container's $HOSTNAME is its host name
        return env

    # -- starting and checking --------------------------------------------------------

    def order(self) -> list[str]:
        """The services in dependency order (depends_on), the external ones left out."""
        services = self.config["services"]
        done: list[str] = []

        def visit(name: str, path: tuple[str, ...] = ()) -> None:
            assert name not in path, f"depends_on cycle: {' -> '.join((*path, name))}"
            if name in done:
                return
            for dependency in services[name].get("depends_on") or {}:
                visit(dependency, (*path, name))
            done.append(name)

        for name in services:
            visit(name)
        return [name for name in done if name not in self.external]

    def start(self, service: str) -> Started:
        spec = self.config["services"][service]
        for dependency, rule in (spec.get("depends_on") or {}).items():
            if dependency in self.external:
                continue
            condition = rule.get("condition") if isinstance(rule, dict) else "service_started"
            if condition == "service_completed_successfully":
                self.wait_exit(dependency, 0)
            elif condition == "service_healthy":
                self.wait_healthy(dependency)
        env = self.environment(service)
        _, workdir = self.image_env()
        cwd = Path(self.rewrite(service, workdir))
        command = [self.rewrite(service, str(arg)) for arg in spec["command"]]
        log = self.folder / f"{service}.log"
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started[service] = Started(service, process, log, env, cwd)
        return self.started[service]

    def wait_exit(self, service: str, code: int, timeout: float = 120) -> None:
        started = self.started[service]
        try:
            returned = started.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{service} did not finish:\n{self.tail(service)}") from None
        assert returned == code, f"{service} exited {returned}:\n{self.tail(service)}"

    def health(self, service: str) -> subprocess.CompletedProcess:
        """The service's own health check, run once as compose runs it."""
        test = self.config["services"][service]["healthcheck"]["test"]
        started = self.started[service]
        if test[0] == "CMD-SHELL":
            command = ["sh", "-c", self.rewrite(service, test[1])]
        else:
            assert test[0] == "CMD", test
            command = [self.rewrite(service, str(arg)) for arg in test[1:]]
        return subprocess.run(
            command, env=started.env, cwd=started.cwd, capture_output=True, text=True, timeout=60
        )

    def wait_healthy(self, service: str, timeout: float = 120) -> None:
        started = self.started[service]
        deadline = time.monotonic() + timeout
        while True:
            assert started.process.poll() is None, f"{service} died:\n{self.tail(service)}"
            result = self.health(service)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{service} never passed its health check: {result.stdout}{result.stderr}\n"
                    f"{self.tail(service)}"
                )
            time.sleep(1)

    def tail(self, service: str) -> str:
        return self.started[service].log.read_text()[-4000:]

    def stop(self) -> None:
        for started in self.started.values():
            if started.process.poll() is None:
                os.killpg(started.process.pid, 9)
                started.process.wait(timeout=30)


def _volume(volume: object) -> tuple[str, str]:
    if isinstance(volume, dict):
        return str(volume.get("source")), str(volume.get("target"))
    source, target = str(volume).split(":")[:2]
    return source, target


def _container_ports(spec: dict) -> list[int]:
    ports = []
    for entry in spec.get("ports", []):
        if isinstance(entry, dict):
            ports.append(int(entry["target"]))
        else:
            ports.append(int(str(entry).rsplit(":", 1)[-1].split("/")[0]))
    return ports
