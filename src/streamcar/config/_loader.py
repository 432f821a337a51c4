"""File -> YAML tree -> ``${ENV}`` interpolation -> validated :class:`Config`.

Every failure becomes a :class:`ConfigError` whose ``problems`` are single ``path: message`` lines, all of
them at once, so one ``streamcar check`` run shows everything to fix.
"""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Hashable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from streamcar.config._durations import DURATION_PATTERN, format_duration
from streamcar.config._env import interpolate
from streamcar.config.models import PROBLEMS_ERROR, Config
from streamcar.errors import ConfigError

Loc = tuple[str | int, ...]

# Only enum-like and number fields echo the offending value: any string field might hold a secret.
_SHOW_INPUT = {"literal_error", "int_parsing", "int_from_float", "bool_parsing", "float_parsing"}


class _Loader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate keys, which YAML would silently resolve to the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[str, yaml.Node] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                first = seen.setdefault(key_node.value, key_node)
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        problem=f"duplicate key {key_node.value!r} (first at line {first.start_mark.line + 1})",
                        problem_mark=key_node.start_mark,
                    )
        return super().construct_mapping(node, deep)


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at ``path``, interpolating ``${VAR}`` from ``env`` (os.environ)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the config is not UTF-8 text") from None
    return parse_config(text, env=env, source=str(path))


def parse_config(text: str, *, env: Mapping[str, str] | None = None, source: str = "<string>") -> Config:
    """Validate config YAML ``text``; ``source`` names it in messages about the document as a whole."""
    try:
        tree = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        line = "".join(text.splitlines()[mark.line : mark.line + 1]) if mark else ""
        # A plain ${VAR} inside [...] or {...} is the usual way to end up here: braces are YAML syntax there.
        hint = " (quote values with ${...} inside [...] or {...})" if "${" in line else ""
        raise ConfigError(f"{where}: invalid YAML: {exc.problem or exc.context}{hint}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(tree, dict):
        found = "empty" if tree is None else _kind(tree)
        raise ConfigError(f"{source}: the config must be a mapping with kafka and pipelines, not {found}")

    tree, env_problems = interpolate(tree, os.environ if env is None else env)
    problems = [f"{_dotted(path)}: {message}" for path, message in env_problems]
    try:
        config = Config.model_validate(tree)
    except ValidationError as exc:
        # A field whose variable is unset was already reported; its empty stand-in would only add noise.
        problems += [
            f"{_dotted(loc)}: {message}"
            for loc, message in _problems(exc)
            if not any(loc[: len(path)] == path for path, _ in env_problems)
        ]
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise ConfigError(f"{source}: invalid config ({count})", problems)
    return config


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file (keys as written in YAML, e.g. ``from``)."""
    schema = Config.model_json_schema(by_alias=True)
    _display_duration_defaults(schema)
    schema.pop("title", None)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "streamcar configuration", **schema}


def _display_duration_defaults(node: Any) -> None:
    # pydantic writes a field's default without its serializer, i.e. as seconds: show "30s" instead.
    if isinstance(node, dict):
        if node.get("pattern") == DURATION_PATTERN and isinstance(node.get("default"), int | float):
            node["default"] = format_duration(node["default"])
        for child in node.values():
            _display_duration_defaults(child)
    elif isinstance(node, list):
        for child in node:
            _display_duration_defaults(child)


def _problems(exc: ValidationError) -> Iterator[tuple[Loc, str]]:
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if part != "[key]")  # a bad key is reported at the key
        if error["type"] == PROBLEMS_ERROR:
            for sub, message in error["ctx"]["problems"]:
                yield (*loc, *sub), message
        else:
            yield loc, _message(error, loc)


def _message(error: ErrorDetails, loc: Loc) -> str:
    kind, value = error["type"], error["input"]
    if kind == "missing":
        return "required, but missing"
    if kind == "extra_forbidden":
        valid = _keys_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(valid)}"
        return f"unknown key {loc[-1]!r} ({hint})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, got {_kind(value)}"
    if kind == "string_type":
        return f"expected a string, got {_kind(value)}" + (" (quote it)" if isinstance(value, int | float) else "")
    if kind == "list_type":
        return f"expected a list, got {_kind(value)}"
    message = error["msg"].removeprefix("Value error, ")
    if message.startswith("Input should be"):
        message = "must be" + message.removeprefix("Input should be")
    return f"{message} (got {value!r})" if kind in _SHOW_INPUT else message


def _keys_at(loc: Loc) -> list[str]:
    """The keys allowed in the mapping at ``loc``, found by walking the models' type annotations."""
    node: Any = Config
    for part in (*loc, None):
        while get_origin(node) in (Union, types.UnionType, Annotated):
            node = next(arg for arg in get_args(node) if arg is not type(None))
        if isinstance(node, type) and issubclass(node, BaseModel):
            fields = {field.alias or name: field for name, field in node.model_fields.items()}
            if part is None:
                return list(fields)
            if part not in fields:
                break
            node = fields[str(part)].annotation
        elif get_origin(node) in (dict, list):
            node = get_args(node)[-1]
        else:
            break
    return []


def _dotted(loc: Loc) -> str:
    return ".".join(map(str, loc)) or "(top level)"


def _kind(value: object) -> str:
    kinds = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    kinds |= {list: "a list", dict: "a mapping"}
    return kinds.get(type(value), type(value).__name__)
