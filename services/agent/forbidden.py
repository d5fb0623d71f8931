"""An issuance the agent's own RBAC does not allow: FAILED, with what to grant, retried.

A 403 from the API on an object the IssuedCertificate names (its issued Secret, its key Secret)
is not a passing fault: retrying at once cannot succeed until an administrator grants the
permission (deploy/remote/agent-rbac.yaml names the Secrets the agent may read and write) or the
declaration names a Secret the agent may use. So the IssuedCertificate goes to FAILED with the
server's refusal and what to do, and is retried with the usual failure backoff: once the RBAC
or the declaration is fixed, the next attempt goes through with no other step. A 403 on the
IssuedCertificate itself cannot be written down there; it stays a requeue with backoff (logged).
The server's message names the user, verb, resource and namespace, never any Secret's content.
"""

from __future__ import annotations

from shared.k8s.errors import Forbidden

__all__ = ["forbidden_error"]


def forbidden_error(error: Forbidden) -> str:
    """The status `error`: the server's refusal and what an operator can do."""
    return (
        f"forbidden: {error.message}; the agent's ServiceAccount lacks this permission: grant it "
        "(deploy/remote/agent-rbac.yaml lists by name the Secrets the agent may read and write) "
        "or name a Secret it may use in the declaration"
    )
