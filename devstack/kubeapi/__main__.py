"""`meshtrust-kubeapi`: run one or more emulated clusters until SIGINT/SIGTERM.

    meshtrust-kubeapi --listen 127.0.0.1:0 --kubeconfig /tmp/east.kubeconfig [--name east] [--tls]
        [--token TOKEN] [--authorization-mode RBAC] [--state FILE] [--pod-ready-delay 0.5]
        [--pod-termination-delay 0.5] [--service-account-key-file FILE]
    meshtrust-kubeapi --cluster mgmt=127.0.0.1:0:/tmp/mgmt.kubeconfig \
                      --cluster east=127.0.0.1:0:/tmp/east.kubeconfig [--tls] ...

Each cluster writes its kubeconfig and, once it serves, prints one line on stdout: the URL for
the `--listen` cluster, `NAME URL` for each `--cluster`.
With `--state`, a multi-cluster host keeps one file per cluster (`FILE.NAME`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass

from shared.runtime.memory import freeze_start_up

from .access import ALWAYS_ALLOW, MODES
from .cluster import DEFAULT_POD_TERMINATION_DELAY, KubeAPI


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    host: str
    port: int
    kubeconfig: str
    named_output: bool = True  # print "NAME URL" (--cluster) or just "URL" (--listen)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _cluster(text: str) -> ClusterSpec:
    name, sep, rest = text.partition("=")
    parts = rest.split(":", 2)
    if not sep or not name or len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
        raise argparse.ArgumentTypeError(f"expected NAME=HOST:PORT:KUBECONFIG, got {text!r}")
    return ClusterSpec(name, parts[0] or "127.0.0.1", int(parts[1]), parts[2])


def _termination_delay(value: str) -> float | None:
    return None if value == "grace" else float(value)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[ClusterSpec]]:
    p = argparse.ArgumentParser(prog="meshtrust-kubeapi", description="Kubernetes API emulator")
    p.add_argument("--listen", help="HOST:PORT to serve one cluster on (PORT 0 picks a free port)")
    p.add_argument("--kubeconfig", help="where to write the kubeconfig of the --listen cluster")
    p.add_argument(
        "--name", default="kubeapi", help="cluster name (kubeconfig cluster/user/context)"
    )
    p.add_argument(
        "--cluster",
        action="append",
        type=_cluster,
        default=[],
        metavar="NAME=HOST:PORT:KUBECONFIG",
        help="serve another cluster (repeatable)",
    )
    p.add_argument("--tls", action="store_true", help="serve HTTPS with a generated CA")
    p.add_argument("--token", help="require this bearer token")
    p.add_argument(
        "--authorization-mode",
        choices=MODES,
        default=ALWAYS_ALLOW,
        help="RBAC: authenticate ServiceAccount tokens and enforce Roles and bindings "
        "(the --token, generated if not given, is the cluster-admin's)",
    )
    p.add_argument("--state", help="JSON file to keep state in across restarts")
    p.add_argument(
        "--service-account-key-file",
        help="the key ServiceAccount tokens are signed with, so that they outlive a restart "
        "(default: a random key per start)",
    )
    p.add_argument(
        "--pod-ready-delay", type=float, default=0.5, help="seconds until a Pod turns Ready"
    )
    p.add_argument(
        "--pod-termination-delay",
        type=_termination_delay,
        default=DEFAULT_POD_TERMINATION_DELAY,
        help="seconds a deleted Pod's containers take to stop, at most its grace period "
        "('grace' waits the whole grace period)",
    )
    p.add_argument(
        "--bookmark-interval", type=float, default=1.0, help="seconds between watch bookmarks"
    )
    args = p.parse_args(argv)
    specs = list(args.cluster)
    if args.listen:
        if not args.kubeconfig:
            p.error("--listen needs --kubeconfig")
        host, port = _host_port(args.listen)
        specs.insert(0, ClusterSpec(args.name, host, port, args.kubeconfig, named_output=False))
    if not specs:
        p.error("give --listen HOST:PORT --kubeconfig PATH, or one or more --cluster")
    if len({s.name for s in specs}) != len(specs):
        p.error("cluster names must be unique")
    return args, specs


async def serve(
    args: argparse.Namespace, specs: list[ClusterSpec], key: bytes | None = None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        for spec in specs:
            state = None
            if args.state:
                state = args.state if len(specs) == 1 else f"{args.state}.{spec.name}"
            api = KubeAPI(
                name=spec.name,
                host=spec.host,
                port=spec.port,
                tls=args.tls,
                token=args.token,
                authorization=args.authorization_mode,
                pod_ready_delay=args.pod_ready_delay,
                pod_termination_delay=args.pod_termination_delay,
                state_file=state,
                bookmark_interval=args.bookmark_interval,
                service_account_key=key,
            )
            await stack.enter_async_context(api)
            api.write_kubeconfig(spec.kubeconfig)
            print(f"{spec.name} {api.url}" if spec.named_output else api.url, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    args, specs = parse_args(argv)
    key = None
    if args.service_account_key_file:
        with open(args.service_account_key_file, "rb") as file:
            key = file.read()
    freeze_start_up()
    try:
        asyncio.run(serve(args, specs, key))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
