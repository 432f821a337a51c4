"""A /status document to render: every field the pages show, with hostile text where untrusted text goes."""

from __future__ import annotations

from typing import Any

NOW = 1_764_072_000.0  # 2025-11-25 12:00:00 UTC
HOSTILE_KEY = "</script><script>alert('key')</script>"
HOSTILE_ERROR = "HTTP 422: <img src=x onerror=alert(1)> & <b>bold</b>"


def pipeline_status(**overrides: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": "orders",
        "group": "orders-service",
        "topics": ["orders"],
        "call": {"url": "http://127.0.0.1:8080/orders", "timeout": "5s", "batch": {"max_messages": 1}},
        "kafka_error": None,
        "publish_topic": "orders-enriched",
        "publish_allow": ["orders-*"],
        "dead_letter_topic": "orders-dlq",
        "service_failing": False,
        "circuit": "closed",
        "circuit_reason": None,
        "circuit_opened": 0,
        "last_call_error": None,
        "partitions": [
            {"topic": "orders", "partition": 0, "next_offset": 1200, "lag": 0},
            {"topic": "orders", "partition": 1, "next_offset": 1234567, "lag": 17},
        ],
        "lag": 17,
        "in_flight": 3,
        "buffered": 12,
        "consumed": 1235767,
        "results": {"dead-letter": 2, "success": 1235750, "drop": 1},
        "published": 1235750,
        "dead_lettered": 2,
        "retries": 5,
        "calls": 1235760,
        "call_errors": 1,
        "last_errors": [],
        "recent_dead_letters": [],
        "dead_letter_groups": [
            {
                "kind": "rejected",
                "error": HOSTILE_ERROR,
                "count": 3,
                "first_at": NOW - 600,
                "last_at": NOW - 60,
                "sample": {"topic": "orders", "partition": 1, "offset": 7, "key": HOSTILE_KEY},
            },
            {
                "kind": "http-status",
                "error": "HTTP 422: x",
                "count": 1,
                "first_at": NOW - 900,
                "last_at": NOW - 900,
                "sample": {"topic": "orders", "partition": 0, "offset": 41, "key": None},
            },
        ],
        "rates": {
            "10s": {
                "span_s": 10.0,
                "per_s": {
                    "consumed": 1234.5,
                    "done": 1234.0,
                    "published": 1230.25,
                    "dead_lettered": 0.0,
                    "retries": 0.25,
                    "call_errors": 0.05,
                    "calls": 1234.0,
                },
                "count": {
                    "consumed": 12345,
                    "done": 12340,
                    "published": 12302,
                    "dead_lettered": 0,
                    "retries": 2,
                    "call_errors": 0,
                    "calls": 12340,
                },
            },
            "1m": {
                "span_s": 60.0,
                "per_s": {
                    "consumed": 1100.0,
                    "done": 1100.0,
                    "published": 1100.0,
                    "dead_lettered": 0.05,
                    "retries": 0.1,
                    "call_errors": 0.0,
                    "calls": 1100.0,
                },
                "count": {
                    "consumed": 66000,
                    "done": 66000,
                    "published": 66000,
                    "dead_lettered": 3,
                    "retries": 6,
                    "call_errors": 0,
                    "calls": 66000,
                },
            },
        },
        "latency": {
            "10s": {"calls": 12340, "p50": 0.0042, "p99": 0.045},
            "1m": {"calls": 66000, "p50": 0.004, "p99": 1.5},
        },
        "routed": [
            {"topic": "orders-enriched", "count": 65000, "per_s": 1083.333},
            {"topic": "orders-eu", "count": 60, "per_s": 1.0},
        ],
        "trend": {
            "slice_s": 5.0,
            "end": NOW,
            "consumed": [1000.0, 1200.5, 1100.0],
            "dead_lettered": [0.0, 0.2, 0.0],
            "p50": [0.004, None, 0.0042],
            "p99": [0.04, None, 0.045],
            "lag": [0, 40, 17],
        },
        "stuck": [{"topic": "orders", "partition": 1, "next_offset": 1234567, "lag": 17, "for_s": 42}],
        "state": "partly-stalled",
        "state_reason": "orders[1] stuck at offset 1234567 for 42 s (lag 17)",
    }
    status.update(overrides)
    return status


def healthy(**overrides: Any) -> dict[str, Any]:
    return pipeline_status(stuck=[], state="running", state_reason="messages flow", **overrides)


def document(*pipelines: dict[str, Any], ready: bool = True) -> dict[str, Any]:
    about = {"ready": ready, "version": "0.1.0", "host": "pod-7", "started_at": NOW - 3725, "uptime_s": 3725}
    return {**about, "pipelines": list(pipelines)}
