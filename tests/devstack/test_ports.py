"""Race-free ports: a service's port is the one it logged it bound, and a readiness probe counts
only when the process probed holds the listening socket (`devstack.processes`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devstack import processes
from devstack.processes import Process


class _Ready(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stranger() -> Iterator[int]:
    """A server of this test process answering 200 to anything: the port's owner."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, name="stranger", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_probe_answered_by_another_process_does_not_count(stranger: int, tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{stranger}/readyz"
        service = Process("agent-c28", child.pid, str(tmp_path / "agent.log"), health=url)
        assert not processes.listens(child.pid, stranger)
        assert not processes.probe(service), "200 from the stranger is not the agent's"
        assert processes.probe(Process("stranger", os.getpid(), "", health=url))
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()


def test_the_port_is_read_from_this_run_of_the_log_only(tmp_path: Path) -> None:
    log = tmp_path / "issuer.log"
    earlier = {"event": processes.HEALTH_UP, "port": 1111}
    log.write_text(json.dumps(earlier) + "\n")
    run = Process("issuer", os.getpid(), str(log), log_offset=log.stat().st_size)
    assert processes.bound_port(run) is None, "the previous run's port is not this run's"
    with log.open("a") as out:
        out.write("not json " + processes.HEALTH_UP + "\n")
        out.write(json.dumps({"event": processes.HEALTH_UP, "port": 2222}) + "\n")
    assert processes.bound_port(run) == 2222
