"""Which hosts the admin server answers; how many connections, and how, is connections.py's.

**Known hosts** (:func:`host_allowed`): a ``Host`` the server does not go by gets 403. A page on another site
can reach a loopback server by rebinding its own DNS name to 127.0.0.1, but the browser still sends that name as
``Host``: refusing unknown names is what stops it. IP addresses are always accepted (a rebinding attack cannot
send one, and Kubernetes probes and Prometheus do).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterable


def default_hosts(listen_host: str) -> set[str]:
    """The names the admin server goes by when ``admin.allowed_hosts`` is not set (IP addresses always pass)."""
    names = {"localhost", listen_host, socket.gethostname()}
    with contextlib.suppress(OSError):
        names.add(socket.getfqdn())
    names |= {os.environ[name] for name in ("POD_NAME", "HOSTNAME") if os.environ.get(name)}
    return {name.lower() for name in names if name}


def host_allowed(host: str | None, allowed: Iterable[str]) -> bool:
    """Whether a request's ``Host`` (``name``, ``name:port``, ``[v6]:port``) is one the server answers: an IP
    address, a name in ``allowed``, or a ``name:port`` in ``allowed``. A request without ``Host`` (HTTP/1.0) is
    not from a browser: it passes."""
    if host is None:
        return True
    host = host.strip().lower()
    name = host
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        name = host.split(":", 1)[0]
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    names = {entry.lower() for entry in allowed}
    return name.rstrip(".") in names or host in names
