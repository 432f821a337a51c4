"""The engine: consume, schedule, call, publish or dead-letter, complete, commit.

A message's walk, room by room (each imports only the rooms after it):

``pipeline`` (wiring, the consumer's listener) → ``intake`` (records in, as messages in the ``buffer``) →
``dispatch`` (taken into calls, within ``max_in_flight``, the circuit and pacing) → ``attempt`` (the call) →
``settle`` (acting on the replies, in rounds) → ``outcomes`` (what a reply means) → ``completion`` (done) →
``checkpoint`` (offsets committed, or a transaction).

Words, one meaning each:

* **record**: what Kafka holds; the bridges hand the engine ``Incoming`` records (``kafka.records``) and what the
  consumer ``Said`` in their place (``kafka.errors``). **message** (a ``Work``): a record on its way through.
* **buffer**: consumed messages not started, behind their lane or waiting for a call slot.
* **lane**: the messages that must go one after another (a key's, a partition's, or each alone).
* **in flight** (``InFlight``, the one owner of where a message is, every move one of its methods): **forming**
  (in a batch being formed), **calling** (a count: in a call), **running** (its task calls or settles it),
  **waiting** (for a retry timer), **parked** (a retry due while the circuit or pacing holds calls back),
  **held** (answered, waiting for an earlier message of its lane), **publishing** (a note beside running: the
  lane's latest message whose record is with the producer).
* **decision** (``outcomes.Decision``): ``Handed`` (done once the broker acknowledges, if anything was sent) or
  ``Later`` (called again after a backoff).
* **done**: a message's outcome is final (``Completion.release``): its offset may be committed, or in queue mode
  it is acknowledged. In queue mode **give back** is the RELEASE acknowledgement (the broker delivers it again).
* **publishing mode** (``transaction.Publishing``): in transactions, or at least once, chosen when wired.
* **source** (``source.Source``): where records come from and when they end (a consumer group, a range, a share
  group); **feed** (``flow.Feed``): what backpressure holds back and lets go on.
"""
