"""docs/config.md is generated from the config's JSON Schema: it must be what the generator writes today, and
every field must carry a description (the schema's, so that editors show it too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamcar.config import json_schema, parse_config
from streamcar.config.reference import EXAMPLE, REGENERATE, reference

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_docs_config_md_is_the_generated_reference() -> None:
    written = (DOCS / "config.md").read_text(encoding="utf-8")
    assert written == reference(), f"docs/config.md is out of date with the config models: run `{REGENERATE}`"


def test_the_module_prints_the_reference() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamcar.config.reference"], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == reference()


def _properties(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = [("(top level)", schema)]
    found += [(f"{name}.{field}", node) for name, model in schema["$defs"].items() for field, node in _props(model)]
    found += [(field, node) for field, node in _props(schema)]
    return found


def _props(model: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return list(model.get("properties", {}).items())


def _ref_description(schema: dict[str, Any], node: dict[str, Any]) -> str | None:
    for option in [node, *node.get("anyOf", ())]:
        ref = option.get("$ref")
        if ref is not None:
            found: str | None = schema["$defs"][ref.rsplit("/", 1)[-1]].get("description")
            return found
    return None


def test_every_field_and_model_of_the_schema_is_described() -> None:
    schema = json_schema()
    undescribed = [
        name
        for name, node in _properties(schema)
        if not (node.get("description") or _ref_description(schema, node))
        or node.get("description", "").startswith(("a duration with a unit", "a size in bytes"))  # the type's
    ]
    undescribed += [name for name, model in schema["$defs"].items() if not model.get("description")]
    assert undescribed == []


def test_descriptions_are_unwrapped_markdown_not_restructured_text() -> None:
    schema = json_schema()
    descriptions = [node["description"] for _, node in _properties(schema) if "description" in node]
    assert descriptions
    assert not [text for text in descriptions if "``" in text or "\n" in text.replace("\n\n", "")]


def test_the_reference_lists_each_field_by_its_path_with_type_default_and_allowed_values() -> None:
    text = reference()
    entry = text.split("### `pipelines.<name>.call.timeout`\n\n", 1)[1].split("\n### ", 1)[0]
    assert entry.startswith("duration · default: `5s`\n\n")
    assert "How long one call may take" in entry
    assert "### `pipelines.<name>.ordering`\n\none of `key`, `partition`, `none` · default: `key`\n" in text
    assert "### `pipelines.<name>.call.max_response_bytes`\n\nsize · default: `16MiB`\n" in text
    batch = "### `pipelines.<name>.call.batch.max_messages`\n\ninteger · at least 1, at most 10,000 · default: `1`"
    assert batch in text
    assert "### `kafka.bootstrap_servers`\n\nstring · required\n" in text
    assert "### `kafka.security.password`\n\nstring (a secret) · default: none\n" in text
    assert "### `pipelines.<name>.consume.from`\n" in text  # the YAML key, not the Python name
    assert "## `pipelines.<name>.circuit_breaker`\n" in text
    assert "- [`pipelines.<name>.call.batch`](#pipelinesnamecallbatch)" in text


def test_every_leaf_of_the_schema_is_in_the_reference() -> None:
    text = reference()
    schema = json_schema()
    paths: list[str] = []

    def walk(node: dict[str, Any], prefix: str) -> None:
        for name, raw in node.get("properties", {}).items():
            field = raw
            for option in [raw, *raw.get("anyOf", ())]:
                if "$ref" in option:
                    field = schema["$defs"][option["$ref"].rsplit("/", 1)[-1]]
            if "properties" in field:
                walk(field, f"{prefix}{name}.")
            elif "patternProperties" in field:
                (values,) = field["patternProperties"].values()
                walk(schema["$defs"][values["$ref"].rsplit("/", 1)[-1]], f"{prefix}{name}.<name>.")
            else:
                paths.append(f"{prefix}{name}")

    walk(schema, "")
    assert len(paths) > 50
    missing = [path for path in paths if f"### `{path}`\n" not in text]
    assert missing == []


def test_a_schema_change_shows_in_the_reference() -> None:
    """What keeps docs/config.md honest: a field added to the schema is a difference the first test reports."""
    schema = json_schema()
    schema["$defs"]["LogConfig"]["properties"]["colour"] = {"type": "boolean", "default": True, "description": "Hue."}
    changed = reference(schema)
    assert changed != reference()
    assert "### `log.colour`\n\nboolean · default: `true`\n\nHue.\n" in changed


@pytest.mark.parametrize("text", [EXAMPLE, (DOCS / "config.md").read_text(encoding="utf-8")])
def test_the_example_is_a_config_streamcar_accepts(text: str) -> None:
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0] if "```yaml" in text else text
    env = {"KAFKA_USER": "u", "KAFKA_PASSWORD": "p", "SERVICE_TOKEN": "t"}
    config = parse_config(example, env=env)
    orders = config.pipelines["orders"]
    assert orders.publish is not None
    assert orders.publish.allows("orders-review")
    assert orders.dead_letter is not None
    assert config.kafka.librdkafka == {"session.timeout.ms": 20000}
