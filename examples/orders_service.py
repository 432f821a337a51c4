"""An example service for the sidecar: enriches JSON orders. It never touches Kafka; it only answers HTTP.

    POST /orders  body: {"order_id": "o-1", "customer": "c-1", "amount": 12.5, "currency": "EUR"}

Replies 200 with the enriched order (published by the sidecar to the output topic); an order that can never be
valid, or a body that is not JSON, is answered with ``Reply.dead_letter(...)`` (HTTP 422 with
``Streamcar-Result: dead-letter``: dead-lettered by the sidecar at once). It dedupes by the event's idempotency key
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

from streamcar import Event, Reply
from streamcar.service import aiohttp_event, aiohttp_response

TAX = {"EUR": 0.21, "USD": 0.08, "GBP": 0.20}
_seen: dict[str, bytes] = {}


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
    if key in _seen:
        return Reply.success(_seen[key], content_type="application/json")
    try:
        order = json.loads(event.value or b"")
    except ValueError:
        return Reply.dead_letter("body is not JSON")
    if not isinstance(order, dict) or "order_id" not in order or "amount" not in order:
        return Reply.dead_letter("an order needs order_id and amount")
    if not isinstance(order["amount"], int | float) or order["amount"] < 0:
        return Reply.dead_letter(f"amount must be a non-negative number, got {order['amount']!r}")
    body = json.dumps(enrich(order, datetime.now(UTC).isoformat(timespec="seconds"))).encode()
    _seen[key] = body
    return Reply.success(body, content_type="application/json")


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
