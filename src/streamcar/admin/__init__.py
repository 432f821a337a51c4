"""The admin endpoints of DESIGN.md: ``/healthz``, ``/readyz``, ``/metrics`` and ``/status``."""

from streamcar.admin.server import AdminServer

__all__ = ["AdminServer"]
