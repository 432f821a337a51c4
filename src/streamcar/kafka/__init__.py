"""Thin typed wrappers over confluent-kafka: a consumer thread bridged to asyncio, an awaitable producer."""
