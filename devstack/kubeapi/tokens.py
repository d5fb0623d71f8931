"""ServiceAccount tokens: JWTs with kube's claims, signed with a key of the emulated cluster.

kube-apiserver signs bound tokens (TokenRequest, `kubectl create token`) with RS256 and the
service-account key; here HS256 with a random key that lives as long as the `KubeAPI` (a
restarted emulator refuses the tokens of the previous one, as a cluster whose key was rotated
would), or with the key given (`--service-account-key-file`), whose tokens outlive a restart.
The claims are kube's (`sub`, `aud`, `exp`, `iat`, `nbf`, `iss`, `jti`, and
`kubernetes.io` with the namespace and the ServiceAccount's name and uid), so a client that
decodes its token sees what it would see against a real cluster.  Checking that the
ServiceAccount still exists with that uid is the caller's business (`access.py`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_AUDIENCES = (ISSUER,)
DEFAULT_EXPIRATION = 3600  # seconds: TokenRequest's default expirationSeconds
MIN_EXPIRATION = 600  # seconds: kube refuses a shorter one


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Claims:
    namespace: str
    name: str
    uid: str
    expires: int  # Unix seconds


class Signer:
    """Issues and verifies the tokens of one cluster."""

    def __init__(self, key: bytes | None = None) -> None:
        """`key`: kube-apiserver's --service-account-key-file (tokens outlive a restart);
        None: a random one (they die with this signer)."""
        self._key = key if key is not None else secrets.token_bytes(32)

    def _sign(self, signing_input: str) -> str:
        return _b64(hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest())

    def issue(self, claims: Claims, *, audiences: list[str], now: int) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload: dict[str, Any] = {
            "aud": audiences,
            "exp": claims.expires,
            "iat": now,
            "iss": ISSUER,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {
                "namespace": claims.namespace,
                "serviceaccount": {"name": claims.name, "uid": claims.uid},
            },
            "nbf": now,
            "sub": f"system:serviceaccount:{claims.namespace}:{claims.name}",
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{header}.{body}.{self._sign(f'{header}.{body}')}"

    def verify(self, token: str, *, now: int) -> Claims | None:
        """The claims of a token this signer issued and that has not expired, else None."""
        parts = token.split(".")
        if len(parts) != 3 or not hmac.compare_digest(
            parts[2], self._sign(f"{parts[0]}.{parts[1]}")
        ):
            return None
        try:
            payload = json.loads(_unb64(parts[1]))
            kube = payload["kubernetes.io"]
            claims = Claims(
                kube["namespace"],
                kube["serviceaccount"]["name"],
                kube["serviceaccount"]["uid"],
                int(payload["exp"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        return claims if now < claims.expires else None
