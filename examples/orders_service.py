"""An example service for the sidecar: enriches JSON orders. It never touches Kafka; it only answers HTTP.

    POST /orders  body: {"order_id": "o-1", "customer": "c-1", "amount": 12.5, "currency": "EUR", "items": [...]}

Replies 200 with the enriched order, which the sidecar publishes to the output topic (``orders-enriched``). The
reply also says where else records go, and the sidecar publishes them all before the order counts as done:
* a big order (100 or more) goes to ``orders-review`` too (routing: a record with its own topic);
* an order with ``items`` fans out one record per item to ``orders-items``, keyed by the order id.
Both topics are in the sidecar's ``publish.allow``. An order that can never be valid, or a body that is not JSON,
is answered with ``Reply.dead_letter(...)`` (HTTP 422 with ``Streamcar-Result: dead-letter``: dead-lettered by
the sidecar at once). It dedupes by the event's idempotency key
(``{topic}-{partition}-{offset}``, also sent as Idempotency-Key), as a real service should, so a redelivered order
is enriched the same way. streamcar.service turns the request into an Event and the Reply into the response.

Run: python examples/orders_service.py --port 8080
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from streamcar import Event, Record, Reply
from streamcar.service import aiohttp_event, aiohttp_response

TAX = {"EUR": 0.21, "USD": 0.08, "GBP": 0.20}
_seen: dict[str, Reply] = {}


def enrich(order: dict[str, Any], received_at: str) -> dict[str, Any]:
    amount = float(order["amount"])
    currency = str(order.get("currency", "EUR"))
    tax = round(amount * TAX.get(currency, 0.0), 2)
    return {
        **order,
        "currency": currency,
        "tax": tax,
        "total": round(amount + tax, 2),
        "tier": "gold" if amount >= 100 else "silver" if amount >= 20 else "bronze",
        "enriched_at": received_at,
    }


async def handle(request: web.Request) -> web.Response:
    event = await aiohttp_event(request)
    return aiohttp_response(process(event))


def process(event: Event) -> Reply:
    key = event.idempotency_key
    if key in _seen:  # a redelivery: the same answer
        return _seen[key]
    try:
        order = json.loads(event.value or b"")
    except ValueError:
        return Reply.dead_letter("body is not JSON")
    if not isinstance(order, dict) or "order_id" not in order or "amount" not in order:
        return Reply.dead_letter("an order needs order_id and amount")
    if not isinstance(order["amount"], int | float) or order["amount"] < 0:
        return Reply.dead_letter(f"amount must be a non-negative number, got {order['amount']!r}")
    enriched = enrich(order, datetime.now(UTC).isoformat(timespec="seconds"))
    reply = route(enriched)
    _seen[key] = reply
    return reply


def route(enriched: dict[str, Any]) -> Reply:
    """One record to orders-enriched, plus one to orders-review for a big order and one per item to orders-items."""
    body = json.dumps(enriched).encode()
    records = [Record(body, content_type="application/json")]
    if enriched["amount"] >= 100:
        records.append(Record(body, topic="orders-review", content_type="application/json"))
    for item in enriched.get("items") or ():
        line = json.dumps({"order_id": enriched["order_id"], **item}).encode()
        records.append(Record(line, key=str(enriched["order_id"]).encode(), topic="orders-items"))
    if len(records) == 1:
        return Reply.success(body, content_type="application/json")
    return Reply.records(records)


async def health(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/orders", handle)
    app.router.add_get("/healthz", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
