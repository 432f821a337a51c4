"""The admin endpoints (docs/operations.md): ``/healthz``, ``/readyz``, ``/metrics``, ``/status`` and the page ``/``."""

from streamcar.admin.server import AdminServer

__all__ = ["AdminServer"]
