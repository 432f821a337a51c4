"""The overview across sidecars from their /status documents: the graph, its layers, the page and the terminal."""

from __future__ import annotations

import argparse
import io
from typing import Any

import pytest
from rich.console import Console

from streamcar.admin.overview import Answer, build
from streamcar.admin.overview_page import render_overview
from streamcar.cli import main
from streamcar.config import parse_config
from streamcar.errors import UsageError
from streamcar.tools.overview import peers_of, show

from dom import parse

HOSTILE = "<img src=x onerror=alert(1)>"


def entry(
    name: str, reads: str, writes: str | None, *, state: str = "running", lag: int = 0, rate: float = 5.0, **more: Any
) -> dict[str, Any]:
    per_s = {
        "consumed": rate,
        "done": rate,
        "published": rate,
        "dead_lettered": 0.0,
        "retries": 0.0,
        "call_errors": 0.5,
        "calls": rate,
    }
    return {
        "name": name,
        "group": f"{name}-group",
        "topics": [reads],
        "call": {"url": f"http://127.0.0.1:1/{name}"},
        "publish_topic": writes,
        "dead_letter_topic": f"{name}-dlq",
        "partitions": [{"topic": reads, "partition": 0, "next_offset": 3, "lag": lag}],
        "lag": lag,
        "rates": {
            "10s": {"span_s": 10.0, "per_s": per_s},
            "1m": {"span_s": 60.0, "per_s": {**per_s, "dead_lettered": 0.1}},
        },
        "latency": {"10s": {"calls": 10, "p50": 0.004, "p99": 0.02}},
        "routed": [{"topic": writes, "count": 300, "per_s": rate}] if writes and rate else [],
        "state": state,
        "state_reason": "lag 40 and no message finished in the last 10 s" if state == "stalled" else "messages flow",
        **more,
    }


def sidecar(url: str, *pipelines: dict[str, Any], own: bool = False) -> Answer:
    document = {"ready": True, "version": "0.1.0", "host": "pod", "uptime_s": 61, "pipelines": list(pipelines)}
    return Answer(url, document, own=own)


def chain() -> list[Answer]:
    """a → s1 → b → s2 → c → s3 → d, s2 stalled; and a sidecar that did not answer."""
    return [
        sidecar("http://127.0.0.1:9003/", entry("s3", "c", "d", state="idle", rate=0.0)),
        sidecar("http://127.0.0.1:9001/", entry("s1", "a", "b"), own=True),
        sidecar("http://127.0.0.1:9002/", entry("s2", "b", "c", state="stalled", lag=40, rate=0.0)),
        Answer("http://127.0.0.1:9009/", None, "cannot connect: Connection refused"),
    ]


def test_a_chain_of_services_is_laid_out_left_to_right() -> None:
    graph = build(chain(), now=0.0)
    columns = {n["name"]: n["column"] for n in [*graph["pipelines"], *graph["topics"]]}
    assert columns == {"a": 0, "s1": 1, "b": 2, "s2": 3, "c": 4, "s3": 5, "d": 6, "s1-dlq": 2, "s2-dlq": 4, "s3-dlq": 6}
    assert graph["chains"] == [
        ["topic:a", "group:s1-group", "topic:b", "group:s2-group", "topic:c", "group:s3-group", "topic:d"]
    ]
    s2 = next(p for p in graph["pipelines"] if p["name"] == "s2")
    assert (s2["state"], s2["level"], s2["lag"], s2["rate"]) == ("stalled", "bad", 40, 0.0)
    inputs = {(e["from"], e["to"]): e for e in graph["edges"] if e["kind"] == "input"}
    assert inputs[("topic:b", "group:s2-group")]["lag"] == 40
    assert {s["url"]: s["reachable"] for s in graph["sidecars"]}["http://127.0.0.1:9009/"] is False
    # the main chain on one row; the dead-letter topics below it, even where their name sorts first
    rows = {n["name"]: n["row"] for n in [*graph["pipelines"], *graph["topics"]]}
    assert {rows[n] for n in ("a", "s1", "b", "s2", "c", "s3", "d")} == {0}
    assert {rows[n] for n in ("s1-dlq", "s2-dlq", "s3-dlq")} == {1}
    renamed = build([sidecar("http://h:1/", entry("s1", "a", "zz", dead_letter_topic="aa-dlq"))])
    assert {t["name"]: t["row"] for t in renamed["topics"]} == {"a": 0, "zz": 0, "aa-dlq": 1}


def test_instances_of_one_group_are_one_pipeline_with_the_worst_state() -> None:
    answers = [
        sidecar("http://10.0.0.1:8095/", entry("orders", "in", "out", lag=3)),
        sidecar("http://10.0.0.2:8095/", entry("orders", "in", "out", lag=4, state="circuit-open")),
    ]
    (orders,) = build(answers)["pipelines"]
    assert (orders["state"], orders["lag"], orders["rate"], orders["consumed_rate"]) == ("circuit-open", 7, 10.0, 10.0)
    assert [i["sidecar"] for i in orders["instances"]] == ["http://10.0.0.1:8095/", "http://10.0.0.2:8095/"]
    assert orders["error_rate"] == 1.0


def test_a_cycle_is_cut_where_it_closes() -> None:
    graph = build([sidecar("http://h:1/", entry("p", "x", "y"), entry("q", "y", "x"))])
    assert {p["name"]: p["column"] for p in graph["pipelines"]} == {"p": 3, "q": 1}
    assert {t["name"]: t["column"] for t in graph["topics"] if not t["dead_letters"]} == {"x": 2, "y": 4}
    assert graph["chains"] == [["group:p-group", "topic:y", "group:q-group", "topic:x"]]


def test_the_page_draws_the_graph_and_escapes_what_peers_send() -> None:
    answers = chain()
    answers.append(sidecar("http://127.0.0.1:9004/", entry(HOSTILE, "d", None, state="partly-stalled")))
    page = parse(render_overview(build(answers), nonce="n0nce"))
    assert page.find_all("img") == []
    assert page.find_all("script") == []
    svg = page.one("svg")
    boxes = {g.attrs["data-pipeline"]: g for g in svg.find_all("g", **{"class": "pipe"}) if "data-pipeline" in g.attrs}
    assert set(boxes) == {"s1", "s2", "s3", HOSTILE}
    s2 = svg.one("g", data_pipeline="s2")
    assert s2.attrs["class"] == "pipe bad"
    assert [t.text for t in s2.find_all("text")][1:3] == ["stalled", "0.0/s · lag 40 · err 0.5/s"]
    edge = svg.one("g", data_from="topic:b", data_to="group:s2-group")
    assert edge.attrs["class"] == "edge input bad"
    assert [t.text for t in edge.find_all("text")] == ["0.0/s", "lag 40"]
    assert page.one("div", **{"class": "banner"}).text.startswith(
        "1 of 5 sidecars did not answer: http://127.0.0.1:9009/"
    )
    unreachable = page.one("tr", data_sidecar="http://127.0.0.1:9009/")
    assert "unreachable" in unreachable.text
    assert "Connection refused" in unreachable.text
    style = page.one("style")
    assert style.attrs["nonce"] == "n0nce"
    assert page.one("meta", **{"http-equiv": "refresh"}).attrs["content"] == "5"


def test_the_terminal_shows_the_chain_and_what_needs_a_look() -> None:
    out = io.StringIO()
    show(build(chain(), now=0.0), Console(file=out, width=200, markup=False, highlight=False))
    text = out.getvalue()
    assert "a → s1 [running 5.0/s lag 0] → b → s2 [stalled 0.0/s lag 40] → c → s3 [idle 0.0/s lag 0] → d" in text
    assert "Needs a look: s2 (stalled: lag 40 and no message finished in the last 10 s)" in text
    assert "4 sidecars (1 unreachable)" in text
    assert "unreachable: cannot connect: Connection refused" in text  # as the answer said


def args(**given: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"admin": None, "config": None, "json": False, "timeout": 2.0, **given})


def test_urls_are_checked_and_tokens_come_from_the_environment_or_the_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("STREAMCAR_ADMIN_TOKEN", "t0k")
    peers = peers_of(args(admin=["http://10.0.0.1:8095", "https://gw/sidecars/a/"]))
    assert [(p.url, p.token) for p in peers] == [("http://10.0.0.1:8095/", "t0k"), ("https://gw/sidecars/a/", "t0k")]
    with pytest.raises(UsageError, match=r"^--admin: 'ftp://x': an http:// or https:// URL is expected$"):
        peers_of(args(admin=["ftp://x"]))
    with pytest.raises(UsageError, match="give the sidecars"):
        peers_of(args())
    config = tmp_path / "streamcar.yaml"
    config.write_text(
        "kafka: {bootstrap_servers: 127.0.0.1:9092}\n"
        "admin: {listen: 0.0.0.0:8095, token: own, peers: [http://b:1, {url: 'http://c:2', token: peer}]}\n"
        "pipelines: {p: {consume: {topics: [a], group: g}, call: {url: 'http://127.0.0.1:1/x'}}}\n"
    )
    monkeypatch.delenv("STREAMCAR_ADMIN_TOKEN")
    peers = peers_of(args(config=config))
    assert [(p.url, p.token) for p in peers] == [
        ("http://127.0.0.1:8095/", "own"),
        ("http://b:1/", None),
        ("http://c:2/", "peer"),
    ]


def test_peers_in_the_config_and_their_tokens_are_secrets() -> None:
    config = parse_config(
        "kafka: {bootstrap_servers: 127.0.0.1:9092}\n"
        "admin: {peers: [{url: 'http://c:2', token: s3cret}]}\n"
        "pipelines: {p: {consume: {topics: [a], group: g}, call: {url: 'http://127.0.0.1:1/x'}}}\n"
    )
    assert "s3cret" in config.secrets()
    assert "s3cret" not in repr(config)


def test_the_cli_says_bad_usage_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["overview", "--admin", "not a url"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("streamcar: --admin: 'not a url': an http:// or https:// URL is expected")
    assert main(["overview", "--admin", "http://127.0.0.1:1", "--timeout", "0.5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("streamcar: no sidecar answered: http://127.0.0.1:1/ (cannot connect: ")
    assert err.count("\n") == 1
