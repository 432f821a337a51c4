"""The files a config names (certificates, keys), read with errors that name the field."""

from __future__ import annotations

from pathlib import Path

from streamcar.errors import ConfigError


def read_pem(path: Path, field: str) -> bytes:
    """The PEM file at ``path``; ConfigError ``{field}: ...`` when it cannot be read or holds no PEM data."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read {path}: {exc.strerror or exc}") from exc
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{field}: {path} holds no PEM data")
    return data
