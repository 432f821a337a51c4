"""The docs cannot rot quietly: docs/python.md's code runs as written, every link between the README and the pages
of docs/ leads to a file and a heading that exist, and nothing points outside the repository."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from streamcar import Event, Reply, Result
from streamcar.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def code_blocks(page: Path, language: str) -> list[str]:
    text = page.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


def anchors(page: Path) -> set[str]:
    """The anchors GitHub makes of a page's headings: lower case, punctuation but - and _ dropped, spaces as -."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _FENCE.sub("", page.read_text(encoding="utf-8")), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def test_the_python_page_runs_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)  # the page's mapping falls back to its default
    blocks = code_blocks(DOCS / "python.md", "python")
    assert len(blocks) >= 4
    module: dict[str, Any] = {"__name__": "docs_python"}
    for block in blocks:
        exec(compile(block, str(DOCS / "python.md"), "exec"), module)

    # the handler does what the page says it does
    enrich = module["enrich"]
    event = Event("orders", 0, 7, 0, b"o-1", b'{"amount": 12}')
    assert asyncio.run(enrich(event)) == b'{"amount": 12, "checked": true}'
    big = asyncio.run(enrich(Event("orders", 0, 8, 0, b"o-2", b'{"amount": 1200}')))
    assert isinstance(big, Reply)
    assert (big.result, big.topic) == (Result.SUCCESS, "orders-review")
    keyless = asyncio.run(enrich(Event("orders", 0, 9, 0, None, b"{}")))
    assert isinstance(keyless, Reply)
    assert keyless.result is Result.DEAD_LETTER
    # the configs the page builds are what it says: the handler's pipeline, from a mapping and in code
    orders = module["config"].pipelines["orders"]
    assert (orders.call.url, orders.call.timeout) == ("python:orders.handlers:enrich", 2.0)
    assert orders.publish.allows("orders-review")
    assert callable(module["main"])


def test_the_readmes_first_config_is_one_streamcar_accepts() -> None:
    (first, *_) = code_blocks(ROOT / "README.md", "yaml")
    config = parse_config(first, env={})
    assert config.pipelines["orders"].call.url == "http://127.0.0.1:8080/orders"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_leads_to_a_file_and_heading_that_exist(page: Path) -> None:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path_text, _, anchor = target.partition("#")
        linked = (page.parent / path_text).resolve() if path_text else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no such heading in {linked.name}")
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_points_outside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert "../shared" not in text
    assert "DESIGN.md" not in text


def test_the_index_links_every_page() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    linked = {(DOCS / target.partition("#")[0]).resolve() for target in _LINK.findall(index)}
    pages = {page.resolve() for page in DOCS.glob("*.md")} - {(DOCS / "README.md").resolve()}
    assert pages - linked == set()
    assert DOCS / "tutorial.md" in linked
