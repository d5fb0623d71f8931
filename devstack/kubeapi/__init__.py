"""A Kubernetes API emulator for tests and the local stack: see docs/kubeapi.md.

`KubeAPI` is the whole public surface: an async context manager serving one emulated cluster
over HTTP(S) to `kubernetes-asyncio`, `kubectl`, and anything else that speaks the Kubernetes
API.  It never imports a Kubernetes client: it is a server.
"""

from .cluster import KubeAPI

__all__ = ["KubeAPI"]
