"""``streamcar overview``: the graph of topics and pipelines across sidecars, in the terminal (or as JSON).

    streamcar overview --admin http://orders-0:8095 http://billing-0:8095 [--json]
    streamcar overview -c streamcar.yaml        # this sidecar (admin.listen) and its admin.peers, with tokens

Each sidecar's /status is asked at the same time (``--timeout``, 2 s by default); the graph is
:mod:`streamcar.admin.overview`'s, as the ``/overview`` page draws it. ``$STREAMCAR_ADMIN_TOKEN`` is sent as the
bearer token to the ``--admin`` URLs (a token on the command line would show in ``ps``).

Exit codes: 0 when the overview could be drawn (sidecars that did not answer are shown as such), 1 when no
sidecar answered at all, 2 for a bad URL or option.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from streamcar.admin.html import clock, duration_text, fmt, rate_text, seconds_text
from streamcar.admin.overview import Peer, build, gather
from streamcar.config import load_config
from streamcar.config._cluster import admin_base_url
from streamcar.errors import StreamcarError, UsageError
from streamcar.tools._common import plain_console

TOKEN_ENV = "STREAMCAR_ADMIN_TOKEN"
STYLES = {"ok": "green", "warn": "yellow", "bad": "bold red", "idle": "dim"}


def peers_of(args: argparse.Namespace) -> list[Peer]:
    """The sidecars to ask: ``--admin`` URLs (with ``$STREAMCAR_ADMIN_TOKEN``), then ``-c``'s own and its peers."""
    found: list[Peer] = []
    token = os.environ.get(TOKEN_ENV) or None
    for url in args.admin or []:
        try:
            found.append(Peer(admin_base_url(url), token))
        except ValueError as exc:
            raise UsageError(f"--admin: {exc}") from None
    if args.config is not None:
        config = load_config(args.config)
        host, port = config.admin.host, config.admin.port
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # listening everywhere
        own = config.admin.token.get_secret_value() if config.admin.token is not None else None
        found.append(Peer(admin_base_url(f"http://{f'[{host}]' if ':' in host else host}:{port}"), own))
        found += [Peer(p.url, p.token.get_secret_value() if p.token else None) for p in config.admin.peers]
    if not found:
        raise UsageError("give the sidecars to look at: --admin URL [URL ...], or -c streamcar.yaml")
    unique = {peer.url: peer for peer in found}  # one sidecar asked once
    return list(unique.values())


def overview_command(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise UsageError("--timeout must be more than 0 seconds")
    peers = peers_of(args)
    answers = asyncio.run(gather(peers, args.timeout))
    if not any(answer.document is not None for answer in answers):
        reasons = "; ".join(f"{answer.url} ({answer.error})" for answer in answers)
        raise StreamcarError(f"no sidecar answered: {reasons}")
    graph = build(answers)
    if args.json:
        print(json.dumps(graph, indent=2))
    else:
        show(graph, plain_console())
    return 0


def _styled(level: object) -> str:
    return STYLES.get(str(level), "bold red")


def show(graph: Mapping[str, Any], console: Console) -> None:
    sidecars = graph.get("sidecars") or []
    pipelines = {p["id"]: p for p in graph.get("pipelines") or []}
    topics = {t["id"]: t for t in graph.get("topics") or []}
    missing = [s for s in sidecars if not s.get("reachable")]
    heading = Text(f"streamcar overview · {len(sidecars)} sidecars", style="bold")
    if missing:
        heading.append(f" ({len(missing)} unreachable)", style="bold red")
    heading.append(f" · {len(pipelines)} pipelines · {clock(graph.get('at'))} UTC")
    console.print(heading)
    stuck = [p for p in pipelines.values() if p.get("level") in ("bad", "warn")]
    if stuck:
        line = Text("Needs a look: ", style="bold")
        for i, p in enumerate(stuck):
            line.append(", " if i else "")
            line.append(f"{p['name']} ({_state(p)}: {p.get('state_reason')})", style=_styled(p.get("level")))
        console.print(line)
    console.print()
    console.print(Text("Chains", style="bold"))
    for chain in graph.get("chains") or []:
        console.print(chain_text(chain, pipelines, topics))
    console.print()
    console.print(pipeline_table(list(pipelines.values())))
    console.print(sidecar_table(sidecars))


def _state(p: Mapping[str, Any]) -> str:
    return str(p.get("state") or "").replace("-", " ")


def chain_text(chain: Sequence[str], pipelines: Mapping[str, Any], topics: Mapping[str, Any]) -> Text:
    """``a → s1 [running 12.3/s lag 0] → b → ...``: topics plain, each pipeline in its state's colour."""
    text = Text("  ")
    for i, node in enumerate(chain):
        if i:
            text.append(" → ", style="dim")
        if node in pipelines:
            p = pipelines[node]
            style = _styled(p.get("level"))
            text.append(str(p["name"]), style=style)
            text.append(f" [{_state(p)} {rate_text(p.get('rate'))}/s lag {fmt(p.get('lag'))}]", style=style)
        else:
            text.append(str((topics.get(node) or {}).get("name") or node.removeprefix("topic:")), style="cyan")
    return text


def pipeline_table(pipelines: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="Pipelines", title_justify="left", title_style="bold")
    for name, justify in (("Pipeline", "left"), ("State", "left"), ("Rate", "right"), ("Lag", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for name in ("Errors", "p99"):
        table.add_column(name, justify="right")
    table.add_column("Reads → writes")
    table.add_column("Sidecars")
    ordered = sorted(pipelines, key=lambda p: (int(p.get("column") or 0), int(p.get("row") or 0)))
    for p in ordered:
        style = _styled(p.get("level"))
        state = Text(_state(p), style=style)
        if p.get("state_reason"):
            state.append(f"\n{p['state_reason']}", style="dim")
        topics = f"{', '.join(p.get('inputs') or [])} → {', '.join(sorted(p.get('outputs') or {})) or '-'}"
        table.add_row(
            Text(str(p.get("name")), style="bold"),
            state,
            f"{rate_text(p.get('rate'))}/s",
            fmt(p.get("lag")),
            f"{rate_text(p.get('error_rate'))}/s",
            seconds_text(p.get("p99")),
            topics,
            "\n".join(str(i.get("sidecar")) for i in p.get("instances") or []),
        )
    return table


def sidecar_table(sidecars: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="Sidecars", title_justify="left", title_style="bold")
    for name in ("Admin URL", "Answer", "Version", "Host", "Up", "Pipelines"):
        table.add_column(name)
    for s in sidecars:
        if s.get("reachable"):
            answer = Text("ready", style="green") if s.get("ready") else Text("not ready", style="yellow")
        else:
            answer = Text(f"unreachable: {s.get('error')}", style="bold red")
        table.add_row(
            str(s.get("url")),
            answer,
            str(s.get("version") or "-"),
            str(s.get("host") or "-"),
            duration_text(s.get("uptime_s")),
            ", ".join(s.get("pipelines") or []) or "-",
        )
    return table
