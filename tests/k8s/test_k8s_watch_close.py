"""Leaving a watch closes its socket before `async with` returns, over TLS too.

Over TLS aiohttp closes a dropped connection's socket only after the close_notify exchange, in
the background, and nothing waits for it: an event loop closed right after (a test's, at its
end) left the socket open for the garbage collector to find in whichever test ran next
(`ResourceWarning: unclosed <socket.socket ... raddr=(emulator)>`, an unraisable-exception
failure under `filterwarnings = error`). The sockets are read from /proc: this process's open
descriptors that are TCP connections to the server's port.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from devstack.kubeapi import KubeAPI
from devstack.kubeapi.kubeconfig import build
from shared.k8s import watchstream
from shared.k8s.client import KubeClient
from shared.k8s.resources import PODS


def sockets_to(port: int) -> set[str]:
    """This process's open TCP sockets whose remote end is 127.0.0.1:`port` (inodes)."""
    inodes = set()
    with open("/proc/net/tcp") as rows:
        next(rows)
        for row in rows:
            fields = row.split()
            remote, inode = fields[2], fields[9]
            if int(remote.rsplit(":", 1)[1], 16) == port and inode != "0":
                inodes.add(f"socket:[{inode}]")
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            mine.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # closed since listed (the listing's own descriptor among them)
    return inodes & mine


async def test_leaving_a_watch_over_tls_closes_its_socket(tmp_path: Path) -> None:
    async with KubeAPI(name="east", tls=True, pod_ready_delay=0.05) as api:
        path = api.write_kubeconfig(tmp_path / "kubeconfig")
        async with KubeClient.from_kubeconfig(path) as kube:
            assert api.url.startswith("https://")
            before = sockets_to(api.port)
            async with kube.watch(PODS, namespace="default", timeout_seconds=60):
                opened = sockets_to(api.port) - before
                assert len(opened) == 1, "the watch's own connection, open while it runs"
            assert not sockets_to(api.port) & opened, "left open after the watch was left"


@pytest.fixture
async def mute_tls_server(tmp_path: Path) -> AsyncIterator[tuple[int, bytes]]:
    """A TLS server that answers a watch with headers and then stops reading: it never answers
    the client's close_notify. Yields its port and its CA's PEM."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    writers: list[asyncio.StreamWriter] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        await writer.drain()
        writer.transport.pause_reading()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1], ca.cert_pem.bytes()
    finally:
        for writer in writers:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


async def test_a_server_mute_to_close_notify_gets_the_socket_aborted(
    mute_tls_server: tuple[int, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watchstream, "CLOSE_GRACE", 0.2)
    port, ca_pem = mute_tls_server
    config = build(name="mute", url=f"https://127.0.0.1:{port}", ca_pem=ca_pem, token=None)
    async with KubeClient.from_kubeconfig_dict(config) as kube:
        async with kube.watch(PODS, namespace="default", timeout_seconds=60):
            opened = sockets_to(port)
            assert len(opened) == 1
        assert not sockets_to(port) & opened, "still waiting for the server's close_notify"
