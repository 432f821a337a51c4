"""The admin endpoints of DESIGN.md: ``/healthz``, ``/readyz``, ``/metrics``, ``/status`` and the status page ``/``."""

from streamcar.admin.server import AdminServer

__all__ = ["AdminServer"]
