"""Which re-issuances are an operator's business: the Warning Events of a tampered issued Secret.

A re-issuance because the issued Secret (Istio's `cacerts`) was changed under the agent is not
routine: something or someone wrote it. `tamper_warning(reason, message)` (pure) says which
Warning Event such an `Issue` decision is recorded as, or None for a routine one (new, spec
changed, renewal due):

- `ForeignCA`: the Secret holds a CA that chains to none of the pinned roots (a foreign CA
  found in `cacerts`);
- `IssuedSecretTampered`: it is unreadable or unfit, or holds another certificate than the
  current issuance's.
"""

from __future__ import annotations

from shared.api import reasons

__all__ = ["tamper_warning", "warning_message"]


def tamper_warning(reason: str, message: str) -> str | None:
    """The Warning Event's reason for an `Issue` of `reason`, or None (a Normal Event)."""
    if reason == reasons.SECRET_INVALID and reasons.UNTRUSTED_ROOT in message:
        return reasons.FOREIGN_CA
    if reason in (reasons.SECRET_INVALID, reasons.SECRET_MISMATCH):
        return reasons.SECRET_TAMPERED
    return None


def warning_message(warning: str, message: str, *, secret: str) -> str:
    """The Event's message: what was found, what the agent does, what to check."""
    found = (
        f"a foreign CA was found in {secret}"
        if warning == reasons.FOREIGN_CA
        else f"{secret} was changed outside meshtrust"
    )
    return (
        f"{found} ({message}); a new certificate is being issued: find out what else writes "
        f"{secret}"
    )
