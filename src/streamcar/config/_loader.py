"""File -> YAML tree -> ``${ENV}`` interpolation -> validated :class:`Config`.

Every failure becomes a :class:`ConfigError` whose ``problems`` are single ``path: message`` lines, all of
them at once, so one ``streamcar check`` run shows everything to fix. A mapping given to :func:`load_config`
joins the same road at the tree: interpolated and reported like a file, so the two cannot drift apart.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Hashable, Iterator, Mapping
from os import PathLike
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from streamcar.config._durations import DOCUMENT, DURATION_PATTERN, format_duration
from streamcar.config._env import interpolate
from streamcar.config._sizes import SIZE_PATTERN, format_size
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


def load_config(source: str | PathLike[str] | Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """The validated config of ``source``: the path of a YAML file (a ``str`` or a ``Path``), or a mapping with
    the same tree (as ``yaml.safe_load`` of such a file gives it). Either way ``${VAR}`` and ``${VAR:-default}``
    in string values are interpolated from ``env`` (default: ``os.environ``), ``$$`` is a literal ``$``, and a
    :class:`ConfigError` lists every invalid field by its path. (``Config(...)`` and ``Config.model_validate``
    take values as they are, without interpolation.)"""
    if isinstance(source, Mapping):
        return _validate(dict(source), env=env, source="the config mapping")
    if not isinstance(source, str | PathLike):
        raise TypeError(f"load_config takes a file path (str or Path) or a mapping, not {type(source).__name__}")
    path = Path(source)
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
    return _validate(tree, env=env, source=source)


def _validate(tree: dict[Any, Any], *, env: Mapping[str, str] | None, source: str) -> Config:
    tree, env_problems = interpolate(tree, os.environ if env is None else env)
    problems = [f"{_dotted(path)}: {message}" for path, message in env_problems]
    try:
        config = Config.model_validate(tree, context=DOCUMENT)
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
    """The JSON Schema of the config file (keys as written in YAML, e.g. ``from``), with a description of every
    field (the models' docstrings)."""
    schema = Config.model_json_schema(by_alias=True)
    _for_people(schema)
    schema.pop("title", None)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "streamcar configuration", **schema}


_LITERAL = re.compile(r"``(.+?)``")


def _for_people(node: Any) -> None:
    """Defaults as a person writes them and descriptions as an editor shows them, in place."""
    if isinstance(node, dict):
        if isinstance(node.get("description"), str):
            # docstrings are wrapped at 120 columns and written in reST: unwrap lines, keep paragraphs
            paragraphs = node["description"].split("\n\n")
            node["description"] = "\n\n".join(" ".join(p.split()) for p in paragraphs)
            node["description"] = _LITERAL.sub(r"`\1`", node["description"])
        # pydantic writes a field's default without its serializer, i.e. as seconds and bytes: "30s" and
        # "16MiB" are what a person would write
        default = node.get("default")
        if isinstance(default, int | float) and not isinstance(default, bool):
            if node.get("pattern") == DURATION_PATTERN:
                node["default"] = format_duration(default)
            elif node.get("pattern") == SIZE_PATTERN and isinstance(default, int):
                node["default"] = format_size(default)
        for child in node.values():
            _for_people(child)
    elif isinstance(node, list):
        for child in node:
            _for_people(child)


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
            fields = {yaml_name(name, field): field for name, field in node.model_fields.items()}
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


def yaml_name(name: str, field: FieldInfo) -> str:
    """The key a field has in YAML: its alias (``from`` for ``from_``), else its name."""
    return field.serialization_alias or field.alias or name


def _dotted(loc: Loc) -> str:
    return ".".join(map(str, loc)) or "(top level)"


def _kind(value: object) -> str:
    kinds = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    kinds |= {list: "a list", dict: "a mapping"}
    return kinds.get(type(value), type(value).__name__)
