"""Parsing of addresses (``host:port``) and call URLs into small typed values."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

# Underscores are not valid in DNS names but appear in docker-compose service names, so tolerate them.
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_GRPC = re.compile(r"^(grpcs?)://([^/]+)(/[A-Za-z_][A-Za-z0-9_.]*/[A-Za-z_][A-Za-z0-9_]*)$")
_PYTHON = re.compile(r"^python:([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*):([A-Za-z_][A-Za-z0-9_]*)$")


def split_host_port(address: str, *, min_port: int = 1) -> tuple[str, int]:
    """``("::1", 8095)`` from ``"[::1]:8095"``; the host is an IPv4 address, a bracketed IPv6 address or a name."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{address!r} is not host:port")
    if not port_text.isdigit() or not min_port <= int(port_text) <= 65535:
        raise ValueError(f"{address!r} has an invalid port (expected {min_port}..65535)")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{address!r} has an invalid IPv6 address") from None
        return host[1:-1], int(port_text)
    if ":" in host:
        raise ValueError(f"{address!r}: write an IPv6 host in brackets, e.g. [::1]:{port_text}")
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{address!r} has an invalid IPv4 address") from None
    elif not _HOSTNAME.match(host):
        raise ValueError(f"{address!r} has an invalid host name")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class HttpTarget:
    url: str
    tls: bool
    kind: Literal["http"] = "http"


@dataclass(frozen=True, slots=True)
class GrpcTarget:
    host: str
    port: int
    method: str
    """The full method path, ``/pkg.Service/Method``."""
    tls: bool
    kind: Literal["grpc"] = "grpc"


@dataclass(frozen=True, slots=True)
class PythonTarget:
    module: str
    function: str
    kind: Literal["python"] = "python"


CallTarget = HttpTarget | GrpcTarget | PythonTarget

_CALL_FORMS = "http(s)://host[:port]/path, grpc(s)://host:port/pkg.Service/Method or python:pkg.module:function"


def parse_target(url: str) -> CallTarget:
    scheme = url.partition(":")[0].lower()
    if scheme in ("http", "https"):
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 -- the property raises on a bad port
        except ValueError:
            raise ValueError(f"{url!r} has an invalid port") from None
        if not parts.hostname or any(c.isspace() for c in url):
            raise ValueError(f"{url!r} is not a valid {scheme} URL (expected {scheme}://host[:port]/path)")
        return HttpTarget(url=url, tls=scheme == "https")
    if scheme in ("grpc", "grpcs"):
        match = _GRPC.match(url)
        if match is None:
            raise ValueError(f"{url!r} is not a valid gRPC target (expected {scheme}://host:port/pkg.Service/Method)")
        host, port = split_host_port(match[2])
        return GrpcTarget(host=host, port=port, method=match[3], tls=match[1] == "grpcs")
    if scheme == "python":
        match = _PYTHON.match(url)
        if match is None:
            raise ValueError(f"{url!r} is not a valid Python target (expected python:pkg.module:function)")
        return PythonTarget(module=match[1], function=match[2])
    raise ValueError(f"unsupported call url {url!r}: use {_CALL_FORMS}")
