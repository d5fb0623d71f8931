"""Process plumbing every service shares: settings, logging, lifecycle, retry, error kinds.

Deliberately not here: anything that talks to NATS (`shared.bus`) or Kubernetes (`shared.k8s`).
"""

from shared.runtime.errors import PermanentError, TransientError
from shared.runtime.lifecycle import Component, supervise
from shared.runtime.logging import LoggingSettings, configure_logging, get_logger
from shared.runtime.retry import RetryPolicy, retry
from shared.runtime.settings import MeshtrustSettings

__all__ = [
    "Component",
    "LoggingSettings",
    "MeshtrustSettings",
    "PermanentError",
    "RetryPolicy",
    "TransientError",
    "configure_logging",
    "get_logger",
    "retry",
    "supervise",
]
