"""Byte sizes: ``16MiB``, ``512KiB``, ``1MB`` or a plain number of bytes in the config, an int in the code."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

SIZE_PATTERN = r"^\s*\d+\s*([KMG]i?B|B)?\s*$"

_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]i?B|B)?\s*$", re.I)
_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_size(value: object) -> int:
    """Bytes from ``"16MiB"``, ``"64KiB"``, ``"1MB"``, ``"100B"`` or an int."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"a size must be a number of bytes or a string such as 16MiB, not {type(value).__name__}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _SIZE.match(value)
    if match is None:
        raise ValueError(f"invalid size {value.strip()!r}: use bytes or a unit B, KiB, MiB, GiB, KB, MB, GB")
    return int(match[1]) * _UNITS[(match[2] or "b").lower()]


def format_size(size: int) -> str:
    """The most readable string that parses back to exactly ``size``: ``16MiB``, ``1500B``."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size, return_type=str),
    WithJsonSchema(
        {
            "type": ["string", "integer"],
            "pattern": SIZE_PATTERN,
            "description": "a size in bytes, or with a unit: B, KiB, MiB, GiB (or KB, MB, GB)",
            "examples": ["16MiB", "512KiB"],
        }
    ),
]
"""Bytes as an int; written as ``16MiB`` (or a plain number) in YAML and in dumps."""
