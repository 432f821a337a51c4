"""A throwaway PKI for TLS tests, made with the ``openssl`` command: two CAs, server and client certificates."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path  # signed none of the certificates below
    server: Leaf  # for 127.0.0.1 and localhost
    named_server: Leaf  # for orders.internal only
    client: Leaf


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> Path:
    _openssl(
        directory,
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}"),
        *("-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )
    return directory / f"{name}.pem"


def _leaf(directory: Path, name: str, ca: str, extensions: str) -> Leaf:
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        directory,
        *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"),
    )
    _openssl(
        directory,
        *("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-days", "2"),
        *("-set_serial", str(secrets.randbits(63)), "-extfile", f"{name}.ext", "-out", f"{name}.pem"),
    )
    return Leaf(directory / f"{name}.pem", directory / f"{name}.key")


def make_pki(directory: Path) -> Pki:
    ca = _ca(directory, "ca")
    other_ca = _ca(directory, "other-ca")
    server_usage = "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    return Pki(
        ca=ca,
        other_ca=other_ca,
        server=_leaf(directory, "server", "ca", server_usage + "subjectAltName=DNS:localhost,IP:127.0.0.1\n"),
        named_server=_leaf(directory, "named", "ca", server_usage + "subjectAltName=DNS:orders.internal\n"),
        client=_leaf(directory, "client", "ca", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"),
    )
