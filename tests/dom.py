"""Reading a page as a browser left it: a small DOM tree from HTML text, and a comparable shape of a subtree."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        def matches(n: Node) -> bool:
            wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
            classes = n.attrs.get("class", "").split()
            cls = wanted.pop("class", None)
            return (
                (tag is None or n.tag == tag)
                and (cls is None or cls in classes)
                and all(n.attrs.get(k) == v for k, v in wanted.items())
            )

        return [n for n in self.walk() if matches(n)]

    def one(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"expected one {tag} {attrs}, found {len(found)}"
        return found[0]

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        children = self.stack[-1].children
        if children and isinstance(children[-1], str):
            children[-1] += data
        else:
            children.append(data)


def parse(document: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(document)
    builder.close()
    return builder.root


def shape(node: Node | str, skip: Callable[[Node], bool]) -> Any:
    """A comparable form of a subtree (tags, attributes, text), leaving out the nodes ``skip`` names."""
    if isinstance(node, str):
        return node
    kept = [shape(c, skip) for c in node.children if isinstance(c, str) or not skip(c)]
    return (node.tag, sorted(node.attrs.items()), kept)
