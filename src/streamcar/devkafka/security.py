"""The local Kafka's SASL_SSL listener: a dev user (SCRAM-SHA-512) and a self-made CA made with ``openssl``.

The CA and the brokers' keystore live in ``<data-dir>/tls``::

    ca.pem, ca.key          the CA (clients trust ca.pem: ``kafka.security.ca_file``)
    broker.pem              the brokers' key and certificate chain in one PEM file (``ssl.keystore.type=PEM``)

The broker certificate names ``127.0.0.1`` and ``localhost``, so clients verify it against the address they
dial. Keys are EC P-256, unencrypted (a local development broker), and the files are readable by their owner
only. Certificates are remade when they are missing or expire within a day. The dev user is created when the
storage is formatted (KRaft keeps SCRAM credentials in the metadata log), so it survives restarts.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from streamcar.errors import ToolingError

MODES = ("plaintext", "sasl-ssl")
DEV_USER = "streamcar"
SCRAM_MECHANISM = "SCRAM-SHA-512"
VALID_DAYS = 825  # what browsers and most tools accept at most for a leaf; plenty for a dev broker
RENEW_WITHIN = 86_400  # seconds: a certificate that expires sooner is remade at the next start
_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True)
class Security:
    """The SASL_SSL listener's dev user and CA: what a client needs (``kafka.security`` in streamcar.yaml)."""

    username: str
    password: str
    ca_file: str
    mechanism: str = SCRAM_MECHANISM
    protocol: str = "SASL_SSL"

    @classmethod
    def new(cls, tls_dir: Path) -> Security:
        # token_urlsafe: no character that StorageTool's --add-scram "[name=...,password=...]" syntax would split on
        return cls(DEV_USER, secrets.token_urlsafe(18), str(tls_dir / "ca.pem"))

    def kafka_security(self) -> dict[str, str]:
        """The ``kafka.security`` section of a streamcar.yaml for this user."""
        return {
            "protocol": self.protocol,
            "sasl_mechanism": self.mechanism,
            "username": self.username,
            "password": self.password,
            "ca_file": self.ca_file,
        }

    def client_config(self) -> dict[str, str]:
        """The same as librdkafka settings."""
        return {
            "security.protocol": self.protocol,
            "sasl.mechanism": self.mechanism,
            "sasl.username": self.username,
            "sasl.password": self.password,
            "ssl.ca.location": self.ca_file,
        }

    def format_args(self) -> list[str]:
        """StorageTool format arguments that create the user. The password is on that JVM's command line for the
        second it runs: acceptable for a loopback dev broker, and StorageTool has no other way in."""
        return ["--add-scram", f"{self.mechanism}=[name={self.username},password={self.password}]"]

    def listener_properties(self, tls_dir: Path) -> dict[str, str]:
        """server.properties of the SASL_SSL listener (the caller adds it to the listeners and the
        protocol map): SCRAM over TLS, the key and certificate chain from one PEM file."""
        prefix = "listener.name.sasl_ssl"
        login = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return {
            f"{prefix}.sasl.enabled.mechanisms": self.mechanism,
            # the broker side of SCRAM needs a login module but no credentials: users live in the metadata log
            f"{prefix}.{self.mechanism.lower()}.sasl.jaas.config": login,
            f"{prefix}.ssl.keystore.type": "PEM",
            f"{prefix}.ssl.keystore.location": str(tls_dir / "broker.pem"),
        }


@dataclass(frozen=True)
class BrokerPki:
    ca: Path
    """The CA certificate clients trust."""
    keystore: Path
    """The broker's PKCS#8 key followed by its certificate and the CA's: Kafka's PEM keystore file."""


def _openssl(directory: Path, *args: str) -> str:
    binary = shutil.which("openssl")
    if binary is None:
        raise ToolingError("the openssl command is needed to make the local Kafka's certificates: install openssl")
    try:
        result = subprocess.run([binary, *args], cwd=directory, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ToolingError(f"openssl {args[0]} did not finish within 60s") from exc
    if result.returncode != 0:
        tail = " | ".join(result.stderr.strip().splitlines()[-2:])
        raise ToolingError(f"openssl {args[0]} failed: {tail or 'no output'}")
    return result.stdout


def make_ca(directory: Path, name: str = "ca", *, common_name: str = "streamcar local Kafka CA") -> Path:
    """A self-signed CA: ``<name>.pem`` and ``<name>.key`` in ``directory``; returns the certificate's path."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        directory,
        *("req", "-x509", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.pem"),
        *("-days", str(VALID_DAYS), "-subj", f"/CN={common_name}"),
        *("-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )
    (directory / f"{name}.key").chmod(0o600)
    return directory / f"{name}.pem"


def make_broker_keystore(directory: Path, ca: str = "ca", name: str = "broker") -> Path:
    """A server certificate for 127.0.0.1/localhost signed by ``<ca>.pem``, as one PEM file: key, cert, CA."""
    with tempfile.TemporaryDirectory(dir=directory, prefix=".pki-") as tmp:
        work = Path(tmp)
        (work / "ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        )
        _openssl(work, "req", *_EC, "-keyout", "key", "-out", "csr", "-subj", "/CN=127.0.0.1")
        _openssl(
            work,
            *(
                "x509",
                "-req",
                "-in",
                "csr",
                "-CA",
                str(directory / f"{ca}.pem"),
                "-CAkey",
                str(directory / f"{ca}.key"),
            ),
            *("-days", str(VALID_DAYS), "-set_serial", str(secrets.randbits(63)), "-extfile", "ext", "-out", "crt"),
        )
        # Kafka's PEM keystore reads PKCS#8 keys only ("BEGIN PRIVATE KEY"), not openssl's EC form
        key = _openssl(work, "pkcs8", "-topk8", "-nocrypt", "-in", "key")
        staged = work / "keystore"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(key + (work / "crt").read_text() + (directory / f"{ca}.pem").read_text())
        target = directory / f"{name}.pem"
        staged.replace(target)
    return target


def _valid(directory: Path, cert: str) -> bool:
    path = directory / cert
    if not path.exists():
        return False
    try:
        _openssl(directory, "x509", "-in", cert, "-noout", "-checkend", str(RENEW_WITHIN))
    except ToolingError:  # expires soon, or unreadable: remake it
        return False
    return True


def ensure_broker_pki(directory: Path) -> BrokerPki:
    """The CA and the broker keystore in ``directory``, made (or remade, when near expiry) as needed."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    renewed = False
    if not (_valid(directory, "ca.pem") and (directory / "ca.key").exists()):
        make_ca(directory)
        renewed = True
    if renewed or not _valid(directory, "broker.pem"):
        make_broker_keystore(directory)
    return BrokerPki(ca=directory / "ca.pem", keystore=directory / "broker.pem")
