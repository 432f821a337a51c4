"""The config reference, docs/config.md, written from the config's JSON Schema (:func:`json_schema`).

Every field appears by its path (``pipelines.<name>.call.timeout``) with its type, allowed values, default and
description. The descriptions are the models' attribute docstrings, so the reference, ``streamcar schema`` and
an editor's hints say the same thing; a unit test fails when docs/config.md differs from :func:`reference`.
Regenerate it with::

    python -m streamcar.config.reference > docs/config.md
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from streamcar.config._durations import DURATION_PATTERN
from streamcar.config._limits import RATE_PATTERN
from streamcar.config._loader import json_schema
from streamcar.config._sizes import SIZE_PATTERN

REGENERATE = "python -m streamcar.config.reference > docs/config.md"

EXAMPLE = """\
kafka:
  bootstrap_servers: ${KAFKA_BOOTSTRAP:-127.0.0.1:9092}
  client_id: orders-sidecar
  security:                          # optional: PLAINTEXT without it
    protocol: SASL_SSL
    sasl_mechanism: SCRAM-SHA-512
    username: ${KAFKA_USER}
    password: ${KAFKA_PASSWORD}      # never logged, never in /status
    ca_file: /etc/kafka/ca.pem
  librdkafka: {session.timeout.ms: 20000}   # raw client settings, applied last
admin:
  listen: 127.0.0.1:8095             # 0.0.0.0:8095 in a container, for the kubelet's probes
  # token: ${ADMIN_TOKEN}            # for every endpoint but /healthz and /readyz
log: {format: json, level: info}
pipelines:
  orders:                            # the pipeline's name
    consume:
      topics: [orders]
      group: orders-service
      from: earliest                 # where a group without committed offsets starts
      # instance_id: ${POD_NAME}     # static membership
    call:
      url: http://127.0.0.1:8080/orders   # or grpc://host:port/pkg.Service/Method, or python:pkg.module:function
      timeout: 5s
      headers: {Authorization: "Bearer ${SERVICE_TOKEN}"}
      # batch: {max_messages: 100, max_wait: 5ms}   # batch delivery (the JSON envelope)
      # status: {"404": drop}        # per-code override of the reply mapping
    ordering: key                    # key | partition | none
    max_in_flight: 256
    retry: {attempts: 5, initial_backoff: 200ms, max_backoff: 30s}
    publish:
      topic: orders-enriched
      allow: [orders-review]         # other topics a reply may name
      # exactly_once: true           # replies, dead letters and offsets in one transaction
    dead_letter: {topic: orders-dlq} # without it, a message that failed for good holds its key
    shutdown_timeout: 30s
"""
"""A config using most sections; the test of the reference checks that streamcar accepts it."""

_INTRO = """\
The config is one YAML file, `streamcar.yaml` by default (`streamcar run -c FILE`). What it may hold:

- **Environment variables.** `${VAR}` and `${VAR:-default}` in any string value are replaced by the variable's
  value (the default when it is unset or empty); `$$` is a literal `$`. An unset variable without a default is
  an error naming the field. Values are substituted after the YAML is parsed, so a value with `: ` or `#` in it
  stays one string; inside `[...]` or `{...}`, quote a value that holds `${...}`.
- **Durations** take a unit: `250ms`, `5s`, `1.5s`, `2m`. A bare number is refused (seconds or milliseconds?).
- **Sizes** are bytes, or take a unit: `512KiB`, `16MiB`, `1GiB` (or `KB`, `MB`, `GB`, powers of 1000).
- **Unknown keys** are errors (with a suggestion for a near miss), as are duplicate keys.

`streamcar check -c streamcar.yaml` reports every invalid field by its path
(`pipelines.orders.call.timeout: a duration needs a unit: ms, s or m (e.g. 5s)`) and exits 2; it also checks what
the config points at on this machine (certificate files, `python:` handlers, librdkafka settings), which
`--static` skips. `streamcar schema` prints the JSON Schema, with the descriptions below, for editors.
"""


@dataclass(frozen=True)
class _Field:
    path: str
    node: dict[str, Any]
    """The field's own schema, with a reference or a nullable union resolved."""
    raw: dict[str, Any]
    """As the parent declares it: description and default sit here, beside a ``$ref``."""
    required: bool
    nullable: bool


class _Schema:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.root = schema
        self.defs: dict[str, Any] = schema.get("$defs", {})

    def resolve(self, node: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """``node`` with a ``$ref`` followed and ``X | None`` reduced to X; and whether None is allowed."""
        nullable = False
        options = node.get("anyOf")
        if options is not None:
            kept = [option for option in options if option.get("type") != "null"]
            nullable = len(kept) < len(options)
            if len(kept) == 1:
                node = kept[0]
        ref = node.get("$ref")
        if isinstance(ref, str):
            node = self.defs[ref.rsplit("/", 1)[-1]]
        return node, nullable

    def fields(self, model: dict[str, Any], prefix: str) -> Iterator[_Field]:
        required = set(model.get("required", ()))
        for name, raw in model.get("properties", {}).items():
            node, nullable = self.resolve(raw)
            yield _Field(f"{prefix}{name}", node, raw, name in required, nullable)


def _is_model(node: dict[str, Any]) -> bool:
    return "properties" in node


def _values(node: dict[str, Any]) -> dict[str, Any] | None:
    """The schema of the values, when ``node`` is a mapping of names to values (``call.headers``, ``pipelines``)."""
    if node.get("type") != "object":
        return None
    values = node.get("additionalProperties")
    if isinstance(values, dict):
        return values
    patterns = node.get("patternProperties")  # names restricted by a pattern: pipeline names
    if isinstance(patterns, dict) and len(patterns) == 1:
        only: dict[str, Any] = next(iter(patterns.values()))
        return only
    return None


def _model_map(schema: _Schema, node: dict[str, Any]) -> dict[str, Any] | None:
    """The model of each value, when ``node`` is a mapping of names to models (``pipelines``)."""
    values = _values(node)
    if values is not None:
        model, _ = schema.resolve(values)
        if _is_model(model):
            return model
    return None


_NAMED_PATTERNS = {DURATION_PATTERN: "duration", SIZE_PATTERN: "size", RATE_PATTERN: "rate (`500/s`, `30/m`)"}
_TYPE_NAMES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean", "null": "none"}
_FORMATS = {"password": "string (a secret)", "path": "file path"}


def _bounds(node: dict[str, Any]) -> str:
    parts = []
    for key, words in (
        ("minimum", "at least"),
        ("exclusiveMinimum", "more than"),
        ("maximum", "at most"),
        ("exclusiveMaximum", "less than"),
    ):
        if key in node:
            parts.append(f"{words} {node[key]:,}" if isinstance(node[key], int) else f"{words} {node[key]}")
    if node.get("minLength") == 1:
        parts.append("not empty")
    for key in ("minItems", "minProperties"):
        if key in node:
            parts.append(f"at least {node[key]} entr{'ies' if node[key] != 1 else 'y'}")
    return ", ".join(parts)


def _type(schema: _Schema, node: dict[str, Any]) -> str:
    """What a value of ``node`` is, in words: ``duration``, ``list of topic name``, ``one of `a`, `b```..."""
    node, _ = schema.resolve(node)
    options = [option for option in node.get("anyOf", ()) if option.get("type") != "null"]
    if len(options) > 1:
        return " or ".join(
            _type(schema, option) + (f" ({_bounds(option)})" if _bounds(option) else "") for option in options
        )
    if "const" in node:
        return f"`{node['const']}`"
    if "enum" in node:
        return "one of " + ", ".join(f"`{value}`" for value in node["enum"])
    pattern = node.get("pattern")
    if pattern in _NAMED_PATTERNS:
        return _NAMED_PATTERNS[pattern]
    kind = node.get("type")
    if kind == "array":
        return f"list of {_plural(_type(schema, node.get('items', {})))}"
    if kind == "object":
        values = _values(node)
        return f"mapping: name → {_type(schema, values)}" if values is not None else "mapping"
    if node.get("format") in _FORMATS:
        return _FORMATS[node["format"]]
    if isinstance(kind, list):
        # an integer is a number: "string, number or boolean" says it all
        names = [str(_TYPE_NAMES.get(k, k)) for k in kind if k != "integer" or "number" not in kind]
        return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
    if isinstance(kind, str):
        return _TYPE_NAMES.get(kind, kind) + (f" (`{pattern}`)" if pattern else "")
    return "any value"


def _plural(words: str) -> str:
    first, _, rest = words.partition(" ")
    if " or " not in words and (first in _TYPE_NAMES.values() or first in _NAMED_PATTERNS.values()):
        return f"{first}s {rest}".rstrip()
    return f"values, each {words}"


def _default(field: _Field) -> str:
    if field.required:
        return "required"
    if "default" not in field.raw:
        kind = field.node.get("type")
        return "default: empty" if kind in ("object", "array") else "optional"
    value = field.raw["default"]
    if value is None:
        return "default: none"
    if isinstance(value, dict) and value and _is_model(field.node):
        return "optional"  # its own fields say their defaults
    text = value if isinstance(value, str) else json.dumps(value)
    return f"default: `{text}`"


def _summary(schema: _Schema, field: _Field) -> str:
    words = [_type(schema, field.node)]
    bounds = _bounds(field.node)
    if bounds:
        words.append(bounds)
    if field.nullable and field.raw.get("default", ...) is not None:
        words.append("may be null")
    words.append(_default(field))
    return " · ".join(words)


def _describe(*texts: object) -> str:
    found: list[str] = []
    for text in texts:
        if isinstance(text, str) and text.strip() and text.strip() not in found:
            found.append(text.strip())
    return "\n\n".join(found)


def _anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces to ``-``."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


@dataclass(frozen=True)
class _Section:
    path: str
    intro: str
    fields: list[str]


def _sections(schema: _Schema, model: dict[str, Any], path: str, intro: str) -> Iterator[_Section]:
    prefix = f"{path}." if path else ""
    entries, nested = [], []
    for field in schema.fields(model, prefix):
        description = field.raw.get("description") or field.node.get("description")
        summary = _summary(schema, field)
        if _is_model(field.node):
            nested.append((field.node, field.path, _describe(summary, description, field.node.get("description"))))
        elif (values := _model_map(schema, field.node)) is not None:
            summary = summary.replace("→ mapping", "→ mapping (the fields below)")
            nested.append((values, f"{field.path}.<name>", _describe(summary, description, values.get("description"))))
        else:
            entries.append(f"### `{field.path}`\n\n{_summary(schema, field)}\n\n{description or ''}".rstrip())
    yield _Section(path, intro, entries)
    for child, child_path, child_intro in nested:
        yield from _sections(schema, child, child_path, child_intro)


def _depth(section: _Section, sections: list[_Section]) -> int:
    return sum(1 for other in sections if section.path.startswith(f"{other.path}."))


def reference(schema: dict[str, Any] | None = None) -> str:
    """docs/config.md: the config reference, from ``schema`` (default: the config's JSON Schema)."""
    tree = _Schema(schema if schema is not None else json_schema())
    sections = [s for s in _sections(tree, tree.root, "", "") if s.path]
    lines = [
        "# Config reference",
        "",
        f"<!-- Generated from the config's JSON Schema by `{REGENERATE}`. Edit the models' docstrings in "
        "src/streamcar/config/, not this file. -->",
        "",
        _INTRO,
        "## Contents",
        "",
        "- [An example](#an-example)",
        *(f"{'  ' * _depth(s, sections)}- [`{s.path}`](#{_anchor(s.path)})" for s in sections),
        "",
        "## An example",
        "",
        "```yaml",
        EXAMPLE.rstrip("\n"),
        "```",
        "",
    ]
    for section in sections:
        lines += [f"## `{section.path}`", ""]
        if section.intro:
            lines += [section.intro, ""]
        for entry in section.fields:
            lines += [entry, ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> int:
    sys.stdout.write(reference())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
