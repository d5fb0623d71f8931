"""Process plumbing every service shares: settings, logging, lifecycle, retry, error kinds.

Deliberately not here: anything that talks to NATS (`shared.bus`) or Kubernetes (`shared.k8s`).
"""

from shared.runtime.errors import InvalidInput, MeshtrustError, PermanentError, TransientError
from shared.runtime.lifecycle import Component, supervise
from shared.runtime.logging import LoggingSettings, configure_logging, get_logger
from shared.runtime.retry import RetryPolicy, retry
from shared.runtime.settings import MeshtrustSettings

__all__ = [
    "Component",
    "InvalidInput",
    "LoggingSettings",
    "MeshtrustError",
    "MeshtrustSettings",
    "PermanentError",
    "RetryPolicy",
    "TransientError",
    "configure_logging",
    "get_logger",
    "retry",
    "supervise",
]
