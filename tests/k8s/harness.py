"""Helpers for the Kubernetes integration tests: waiting for conditions, and a pausable TCP hop.

`TcpProxy` is a real network hop between a client and the emulator, so a test can cut the
client off (every connection dropped, new ones refused) while other clients keep writing, then
heal it: a network partition, not a patched object.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

CRD_DIR = Path(__file__).parents[2] / "deploy" / "crds"


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    within: float = 20.0,
    interval: float = 0.02,
    message: str = "condition",
) -> None:
    """Poll `condition` until it holds; fail the test with `message` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {message}")
        await asyncio.sleep(interval)


def crd_documents() -> list[dict[str, Any]]:
    """The CRDs of deploy/crds, parsed."""
    return [yaml.safe_load(p.read_text()) for p in sorted(CRD_DIR.glob("*.yaml"))]


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `partition()` cuts it, `heal()` restores it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._partitioned = False
        self.port = 0
        self.connections_made = 0

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        self._drop_all()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def partition(self) -> None:
        """Drop every open connection and refuse (accept-and-close) new ones."""
        self._partitioned = True
        self._drop_all()

    def heal(self) -> None:
        self._partitioned = False

    def _drop_all(self) -> None:
        for writer in list(self._connections):
            writer.transport.abort()
        self._connections.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._partitioned:
            writer.transport.abort()
            return
        self.connections_made += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._connections.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.transport.abort()
            self._connections.discard(dst)


def issued_certificate(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A valid IssuedCertificate body."""
    body: dict[str, Any] = {
        "hosts": [f"spiffe://cluster.local/ns/{namespace}/sa/{name}"],
        "org": "meshtrust",
        "signingCertificateSecret": {"name": "root-ca", "namespace": "mgmt"},
        "issuedCertificateSecret": {"name": f"{name}-cacerts", "namespace": namespace},
    }
    body.update(spec)
    return {
        "apiVersion": "certificates.smh.solo.io/v1alpha2",
        "kind": "IssuedCertificate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def config_map(
    name: str, namespace: str, labels: dict[str, str] | None = None, **data: str
) -> dict[str, Any]:
    """A ConfigMap body."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}
