"""`KubeAPI`: one emulated cluster - its store, its HTTP server, its controllers - as an async
context manager.

Lifecycle: `__aenter__` binds the port and starts one supervisor task that owns the
controllers (and the state-file writer) in a TaskGroup; `__aexit__` refuses new requests, ends
every watch, cancels the supervisor and waits for it, stops the HTTP server, and writes the state
file.  Nothing outlives the context.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import ssl
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from . import crds, errors, kubeconfig
from . import tls as tlsgen  # not `tls`: that is KubeAPI's keyword argument
from .access import ALWAYS_ALLOW, RBAC, Access
from .controllers import Controllers
from .faults import Faults
from .operations import Context, Operations
from .resources import Registry, access_resources
from .server import PUBLIC_PATHS, Server
from .store import Store
from .tokens import Signer

log = logging.getLogger(__name__)

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
STATE_WRITE_DEBOUNCE = 0.2  # seconds between a write and the state file catching up
DEFAULT_POD_TERMINATION_DELAY = 0.5
"""Seconds a deleted Pod stays Terminating by default: containers that stop promptly on SIGTERM
(most do), so that tests and the devstack's rollouts stay fast."""


class KubeAPI:
    """An emulated kube-apiserver.

    Keyword arguments (all optional):
      name: the cluster's name; the kubeconfig's cluster, user and context are named after it.
      host, port: where to listen; port 0 picks a free port (see `url`).
      tls: serve HTTPS with a freshly generated CA (carried by the kubeconfig).
      token: require `Authorization: Bearer <token>` on every API request.
      authorization: "AlwaysAllow" (any request with the token may do anything) or "RBAC"
        (ServiceAccounts, their tokens, Roles and bindings are served and enforced; the token,
        generated if not given, is the cluster-admin's: see access.py).
      pod_ready_delay: seconds from a Pod's creation until the emulated kubelet makes it Ready.
      pod_termination_delay: seconds a deleted Pod's containers take to stop (at most its grace
        period, `terminationGracePeriodSeconds`, 30 by default), after which the kubelet removes
        it; None waits the whole grace period, as for containers that ignore SIGTERM.
      state_file: load state from this JSON file if it exists, and keep it up to date.
      bookmark_interval: seconds between BOOKMARK events on watches that allow them
        (kube-apiserver sends them about once a minute; tests want them sooner).
      max_history: watch events kept before the oldest are compacted away (410 Expired).
      service_account_key: the key ServiceAccount tokens are signed with (random if None: the
        tokens die with this KubeAPI).
    """

    def __init__(
        self,
        *,
        name: str = "kubeapi",
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        token: str | None = None,
        authorization: str = ALWAYS_ALLOW,
        pod_ready_delay: float = 0.5,
        pod_termination_delay: float | None = DEFAULT_POD_TERMINATION_DELAY,
        state_file: str | os.PathLike[str] | None = None,
        bookmark_interval: float = 1.0,
        max_history: int = 20_000,
        service_account_key: bytes | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.tls = tls
        self.token = random_token() if token is None and authorization == RBAC else token
        self.pod_ready_delay = pod_ready_delay
        self.state_file = Path(state_file) if state_file is not None else None
        self.bookmark_interval = bookmark_interval
        self.store = Store(max_history=max_history)
        self.registry = Registry()
        self.ops = Operations(self.store, self.registry)
        self.faults = Faults(self.store)
        if authorization == RBAC:
            for rt in access_resources():
                self.registry.add(rt)
        self.access = Access(self.ops, token=self.token, mode=authorization, public=PUBLIC_PATHS)
        self.access.signer = Signer(service_account_key)
        self.controllers = Controllers(
            self.ops, pod_ready_delay=pod_ready_delay, pod_termination_delay=pod_termination_delay
        )
        self._certs: tlsgen.ServerCerts | None = None
        self._runner: web.AppRunner | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._state_dirty = asyncio.Event()
        self._write_lock = threading.Lock()
        self._encoded: dict[tuple[str, str, str], tuple[str, str]] = {}
        """Each stored object's JSON for the state file, with the resourceVersion it was made
        at: a state write encodes only what changed since the previous one."""
        self.stopping = False

    # --- public surface ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def ca_pem(self) -> bytes | None:
        return self._certs.ca_pem if self._certs else None

    def kubeconfig_dict(self) -> dict[str, Any]:
        return kubeconfig.build(name=self.name, url=self.url, ca_pem=self.ca_pem, token=self.token)

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> Path:
        return kubeconfig.write(path, self.kubeconfig_dict())

    async def __aenter__(self) -> KubeAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if not self._load_state():
            namespaces = self.registry.by_key("/namespaces")
            assert namespaces is not None
            for ns in SYSTEM_NAMESPACES:
                ctx = Context(manager="kube-apiserver")
                self.ops.create(namespaces, "v1", "", {"metadata": {"name": ns}}, ctx)
        ssl_ctx: ssl.SSLContext | None = None
        if self.tls:
            self._certs = await asyncio.to_thread(self._server_certs)
            ssl_ctx = self._certs.ssl_context()
        app = Server(self).app()
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, ssl_context=ssl_ctx, reuse_address=True
        )
        await site.start()
        addresses = self._runner.addresses
        assert addresses, "the site is not listening"
        self.port = int(addresses[0][1])
        self._ensure_kubernetes_service()
        self.access.bootstrap()
        self.store.listeners.append(lambda _ev: self._state_dirty.set())
        self._supervisor = asyncio.create_task(self._supervise(), name=f"kubeapi[{self.name}]")

    def _ensure_kubernetes_service(self) -> None:
        """The `kubernetes` Service in `default` that kube-apiserver keeps, pointing at us."""
        services = self.registry.by_key("/services")
        assert services is not None
        if self.store.peek(services.key, "default", "kubernetes") is not None:
            return
        body = {
            "metadata": {
                "name": "kubernetes",
                "labels": {"component": "apiserver", "provider": "kubernetes"},
            },
            "spec": {
                "clusterIP": "10.96.0.1",
                "ports": [{"name": "https", "port": 443, "targetPort": self.port}],
            },
        }
        self.ops.create(services, "v1", "default", body, Context(manager="kube-apiserver"))

    async def _supervise(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.controllers.run(), name=f"kubeapi[{self.name}].controllers")
            if self.state_file is not None:
                tg.create_task(self._persist(), name=f"kubeapi[{self.name}].state")

    async def stop(self) -> None:
        self.stopping = True
        self.store.close_watches()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        if self._runner is not None:
            self.store.close_watches()
            await self._runner.cleanup()
            self._runner = None
        self._save_state()

    # --- state file ----------------------------------------------------------------------------

    async def _persist(self) -> None:
        while True:
            await self._state_dirty.wait()
            await asyncio.sleep(STATE_WRITE_DEBOUNCE)
            self._state_dirty.clear()
            # Encoded on the loop (a consistent snapshot, and mostly cached), written off it.
            await asyncio.to_thread(self._write_state, self._state_json())

    def _save_state(self) -> None:
        if self.state_file is not None:
            self._write_state(self._state_json())

    def _state_json(self) -> str:
        """The state file's content: `{"resourceVersion": N, "objects": {key: [object, ...]}}`."""
        rv, objects = self.store.dump()
        kinds = []
        kept: dict[tuple[str, str, str], tuple[str, str]] = {}
        for key, items in objects.items():
            encoded = []
            for obj in items:
                md = obj["metadata"]
                ident = (key, md.get("namespace", ""), md["name"])
                version = str(md.get("resourceVersion"))
                hit = self._encoded.get(ident)
                if hit is None or hit[0] != version:
                    hit = (version, json.dumps(obj))
                kept[ident] = hit
                encoded.append(hit[1])
            kinds.append(f"{json.dumps(key)}:[{','.join(encoded)}]")
        self._encoded = kept
        return f'{{"resourceVersion":{rv},"objects":{{{",".join(kinds)}}}}}'

    def _write_state(self, text: str) -> None:
        """Atomically (a rename). Writes are serialised: the final write at stop waits for one
        still running in the writer thread, so the newest snapshot is the one that stays."""
        assert self.state_file is not None
        with self._write_lock:
            tmp = self.state_file.with_name(self.state_file.name + ".tmp")
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text)
            tmp.replace(self.state_file)

    def _server_certs(self) -> tlsgen.ServerCerts:
        """Fresh ones; with a state file, kept beside it (`<state>.tls`, mode 600) and used
        again by the next start, as kube-apiserver keeps its serving certificate: clients
        that pinned the CA go on trusting a restarted cluster."""
        kept = (
            None
            if self.state_file is None
            else self.state_file.with_name(self.state_file.name + ".tls")
        )
        if kept is not None and kept.exists():
            pems = json.loads(kept.read_text())
            return tlsgen.ServerCerts(**{k: v.encode() for k, v in pems.items()})
        certs = tlsgen.generate(self.name, self.host)
        if kept is not None:
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.touch(mode=0o600)
            pems = {k: getattr(certs, k).decode() for k in ("ca_pem", "cert_pem", "key_pem")}
            kept.write_text(json.dumps(pems))
        return certs

    def _load_state(self) -> bool:
        if self.state_file is None or not self.state_file.exists():
            return False
        try:
            data = json.loads(self.state_file.read_text())
            rv = int(data["resourceVersion"])
            objects = data["objects"]
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.internal(f"state file {self.state_file} is unreadable: {exc}") from exc
        self.store.load(rv, objects)
        for crd in self.store.objects_of("apiextensions.k8s.io/customresourcedefinitions"):
            self.registry.add(crds.resource_type(crd))
        return True


def random_token() -> str:
    return secrets.token_urlsafe(24)
