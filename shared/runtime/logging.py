"""Structured JSON logs (structlog) with context bound per task.

Every line carries what `bind_contextvars` put there (object key, cluster, issuance id), so the
services bind once per message or reconcile and log plainly afterwards.
While a message is handled, the consumer binds its trace context too (`trace_id`, `span_id`,
`parent_span_id`: `shared.runtime.spans`), so the lines of one issuance can be followed across
the services.

As defence in depth, a processor replaces any logged string that contains a PEM private-key
header: key material must never reach a log line, even through a bug.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog
from pydantic import Field

from shared.runtime.settings import MeshtrustSettings

REDACTED = "[redacted: private key material]"
_KEY_MARKER = "PRIVATE KEY-----"


class LoggingSettings(MeshtrustSettings, env_prefix="MESHTRUST_LOG_"):
    """`MESHTRUST_LOG_LEVEL` and `MESHTRUST_LOG_FORMAT`."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level written."
    )
    format: Literal["json", "console"] = Field(
        default="json", description="json for machines (the default in pods), console for people."
    )


def redact_private_keys(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no value that looks like a private key survives."""
    for key, value in event_dict.items():
        if isinstance(value, str | bytes) and _KEY_MARKER in (
            value if isinstance(value, str) else value.decode("latin-1")
        ):
            event_dict[key] = REDACTED
    return event_dict


def configure_logging(settings: LoggingSettings | None = None) -> None:
    """Configure structlog, and route the standard library's `logging` through it, once."""
    settings = settings or LoggingSettings()
    level = getattr(logging, settings.level.upper())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared_processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_private_keys,
    ]
    structlog.configure(
        processors=[
            *shared_processors,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared_processors,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger named for its module; context comes from `structlog.contextvars`."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
