"""Replies the broker refused as too large, remembered across the aborted transactions of an exactly-once pipeline.

At least once, a record the broker refuses as too large for its topic is sent again alone (the broker refuses the
whole batch it was in), and dead-lettered if it is refused alone too (:meth:`Outcomes.refused
<streamcar.engine.outcomes.Outcomes.refused>`). Exactly once, the refusal dooms the open transaction instead: it
is aborted, each partition with records in it goes back to its committed offsets, and the service is called
again. The same reply was refused again, and again: one 5,000-byte reply to a topic taking 2,000-byte records
cost 23 calls per input and stalled its partition for good.

So the inputs whose reply was refused as too large are remembered here (they are gone from the engine after the
rewind), and when their reply comes again it is dead-lettered (kind ``publish``) instead of sent, if its own size
is over its topic's ``max.message.bytes``: a record refused because of the batch it was in, not because of
itself, goes again. Where the topic's limit is not known (reading topic configs not allowed), a reply refused
:data:`FOR_GOOD` times is dead-lettered all the same.
"""

from __future__ import annotations

from collections import OrderedDict

from streamcar.engine.records import OutRecord

Id = str
"""An input, by its ``Event.idempotency_key`` (``{topic}-{partition}-{offset}``)."""

FOR_GOOD = 3
"""Refusals of one input's reply, with its topic's limit unknown, after which it is dead-lettered."""
REMEMBERED = 10_000
"""Inputs remembered at most (the oldest forgotten first): their memory lasts until their redo."""
RECORD_OVERHEAD = 96
"""Bytes a record costs in a batch besides its key, value and headers (the batch's header, lengths, deltas)."""


def size_of(record: OutRecord) -> int:
    """The bytes ``record`` takes in a batch, uncompressed."""
    headers = sum(len(name) + len(value or b"") + 4 for name, value in record.headers)
    return RECORD_OVERHEAD + len(record.key or b"") + len(record.value or b"") + headers


class Refusals:
    """The inputs whose reply was refused as too large, and how often."""

    def __init__(self) -> None:
        self._refused: OrderedDict[Id, int] = OrderedDict()

    def __bool__(self) -> bool:
        return bool(self._refused)

    def refused(self, input_id: Id) -> None:
        self._refused[input_id] = self._refused.pop(input_id, 0) + 1
        while len(self._refused) > REMEMBERED:
            self._refused.popitem(last=False)

    def verdict(self, input_id: Id, records: list[tuple[OutRecord, str, int | None]]) -> str | None:
        """Why the ``records`` of ``input_id``'s reply (each with its topic and that topic's ``max.message.bytes``,
        None where not known) are not to be sent again: the dead letter's error; None when they are to be sent.
        An input dead-lettered, or found refused because of its batch, is forgotten."""
        times = self._refused.get(input_id)
        if times is None:
            return None
        unknown = False
        for record, topic, limit in records:
            size = size_of(record)
            if limit is not None and size > limit:
                del self._refused[input_id]
                return (
                    f"publishing the reply failed: it is {size:,} bytes, over topic {topic!r}'s max.message.bytes "
                    f"({limit:,}); the broker refused it (the transaction holding it was aborted)"
                )
            unknown = unknown or limit is None
        if not unknown:
            del self._refused[input_id]  # each fits its topic: refused with the batch it was in, it goes again
            return None
        if times >= FOR_GOOD:
            del self._refused[input_id]
            return f"publishing the reply failed: the broker refused it as too large {times} times"
        return None
