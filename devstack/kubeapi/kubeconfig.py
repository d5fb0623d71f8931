"""The kubeconfig a cluster hands to clients: one cluster, user and context, all named after the
emulated cluster, `current-context` set; TLS clusters carry their CA, token clusters their token.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import yaml


def build(*, name: str, url: str, ca_pem: bytes | None, token: str | None) -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": url}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    user: dict[str, Any] = {}
    if token is not None:
        user["token"] = token
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": user}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}
        ],
        "current-context": name,
        "preferences": {},
    }


def write(path: str | os.PathLike[str], config: dict[str, Any]) -> Path:
    """Write atomically (rename) with mode 0600, as kubectl does: it may hold a token."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(p)
    return p
