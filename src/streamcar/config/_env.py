"""``${VAR}`` / ``${VAR:-default}`` interpolation over an already parsed YAML tree.

Interpolating values after parsing, rather than the raw text before it, means a substituted value can never
change the document's structure (a password containing ``: `` or ``#`` stays one string) and every problem
is reported at the path of the field that holds it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

Path = tuple[str | int, ...]

# "$$" is an escaped "$"; "${" starts a reference, which may be unterminated (reported, not passed through).
_TOKEN = re.compile(r"\$\$|\$\{[^}]*\}?")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    problems: list[str] = []

    def replace(token: re.Match[str]) -> str:
        if token[0] == "$$":
            return "$"
        ref = _REFERENCE.fullmatch(token[0])
        if ref is None:
            problems.append(f"invalid reference {token[0]!r}: use ${{VAR}} or ${{VAR:-default}} ($$ is a literal $)")
            return ""
        name, default = ref[1], ref[2]
        value = env.get(name)
        if default is not None and not value:  # like the shell and docker compose: unset or empty
            return default
        if value is None:
            problems.append(f"environment variable {name} is not set")
            return ""
        return value

    return _TOKEN.sub(replace, text), problems


def interpolate(tree: Any, env: Mapping[str, str], path: Path = ()) -> tuple[Any, list[tuple[Path, str]]]:
    """``tree`` with every string value interpolated, and the ``(path, message)`` of each failed reference."""
    problems: list[tuple[Path, str]] = []
    if isinstance(tree, str):
        value, messages = _substitute(tree, env)
        return value, [(path, "; ".join(messages))] if messages else []
    if isinstance(tree, Mapping):  # a dict from YAML; any mapping from a caller of load_config
        result: dict[Any, Any] = {}
        for key, item in tree.items():
            result[key], found = interpolate(item, env, (*path, str(key)))
            problems += found
        return result, problems
    if isinstance(tree, list | tuple):
        items = []
        for index, item in enumerate(tree):
            value, found = interpolate(item, env, (*path, index))
            items.append(value)
            problems += found
        return items, problems
    return tree, problems
