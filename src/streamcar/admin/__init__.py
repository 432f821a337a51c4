"""The admin endpoints (docs/contract.md): ``/healthz``, ``/readyz``, ``/metrics``, ``/status`` and the page ``/``."""

from streamcar.admin.server import AdminServer

__all__ = ["AdminServer"]
