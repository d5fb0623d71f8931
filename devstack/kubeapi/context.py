"""What shapes one request's writes (`Context`), and the API's clock format.

Not here: the request's parsing (server.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utcnow() -> str:
    return datetime.now(UTC).strftime(TIME_FORMAT)


@dataclass
class Context:
    """Per-request options that shape a write."""

    manager: str = "unknown"
    dry_run: bool = False
    field_validation: str = "Warn"  # Strict | Warn | Ignore
    warnings: list[str] = field(default_factory=list)
