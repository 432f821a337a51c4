"""The adaptive limit (``max_in_flight: auto``) on synthetic latency traces: a service with a capacity knee
(``capacity`` calls served at once in ``service`` seconds each, the rest queued inside it), run against the
limit in simulated time. It converges near the knee, backs off on overload, recovers, follows a service that
slows down, and never leaves ``[min, max]``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from streamcar.engine.limit import PROBE_EVERY, AdaptiveLimit


@dataclass
class Knee:
    """``capacity`` calls served at once, ``service`` seconds each, the rest queued: a call's latency at ``n``
    calls in flight is ``service x max(1, n / capacity)``; ``rejects`` of the calls get a quick 429."""

    capacity: int = 16
    service: float = 0.010
    rejects: float = 0.0


@dataclass
class Run:
    limiter: AdaptiveLimit
    now: float = 0.0
    in_flight: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    trace: list[tuple[float, int, float, bool]] = field(default_factory=list)  # (time, limit, latency, 429)

    def clock(self) -> float:
        return self.now

    def run(self, knee: Knee, seconds: float) -> None:
        """Saturating load: the pipeline always has calls to start, as many as the limit allows."""
        end = self.now + seconds
        while self.now < end:
            while self.in_flight < self.limiter.limit:
                self.in_flight += 1
            n = self.in_flight
            latency = knee.service * max(1.0, n / knee.capacity) * self.rng.uniform(0.9, 1.1)
            self.now += latency / n  # n calls answered per latency
            rejected = self.rng.random() < knee.rejects
            self.limiter.observe(latency / 10 if rejected else latency, in_flight=n, overload=rejected)
            self.in_flight -= 1
            self.trace.append((self.now, self.limiter.limit, latency, rejected))

    def since(self, start: float) -> list[tuple[float, int, float, bool]]:
        return [row for row in self.trace if row[0] >= start]

    def throughput(self, start: float) -> float:
        rows = [row for row in self.since(start) if not row[3]]
        return len(rows) / (self.trace[-1][0] - start)


def _run(initial: int = 32, minimum: int = 4, maximum: int = 512) -> Run:
    run = Run(AdaptiveLimit(initial=initial, minimum=minimum, maximum=maximum))
    run.limiter = AdaptiveLimit(
        initial=initial, minimum=minimum, maximum=maximum, clock=run.clock, rng=random.Random(3)
    )
    return run


def _p99(rows: list[tuple[float, int, float, bool]]) -> float:
    latencies = sorted(row[2] for row in rows)
    return latencies[int(len(latencies) * 0.99)]


def test_it_settles_near_the_knee_with_the_best_throughput_and_little_queueing() -> None:
    run = _run()
    knee = Knee()
    run.run(knee, 30)
    settled = run.since(10)
    limits = [row[1] for row in settled if not run.limiter.probing]
    assert 16 <= sorted(limits)[len(limits) // 2] <= 40
    assert run.throughput(10) >= 0.9 * knee.capacity / knee.service
    assert _p99(settled) <= 2 * knee.service
    assert run.limiter.baseline is not None
    assert abs(run.limiter.baseline - knee.service) < 0.1 * knee.service
    assert run.limiter.probes >= 30 / PROBE_EVERY / 1.2 - 1  # the baseline is measured again and again


def test_from_its_minimum_it_finds_a_large_capacity_within_seconds() -> None:
    run = _run(initial=4)
    knee = Knee(capacity=300, service=0.020)
    run.run(knee, 5)
    assert run.limiter.limit >= 0.8 * 300
    run.run(knee, 20)
    assert run.throughput(10) >= 0.9 * knee.capacity / knee.service


def test_a_fixed_limit_far_above_the_knee_queues_and_the_auto_limit_does_not() -> None:
    """The figure the bench gives on the real service, here in simulated time: 256 fixed against auto."""
    knee = Knee()
    fixed = _run(initial=256, minimum=256, maximum=256)
    fixed.run(knee, 10)
    auto = _run()
    auto.run(knee, 10)
    assert _p99(fixed.since(2)) >= 10 * knee.service
    assert _p99(auto.since(2)) <= 2 * knee.service


def test_a_service_that_slows_down_for_good_is_followed_within_ten_seconds() -> None:
    run = _run()
    run.run(Knee(service=0.010), 20)
    slow = Knee(service=0.040)
    run.run(slow, 10)
    assert run.limiter.baseline is not None
    assert abs(run.limiter.baseline - slow.service) < 0.1 * slow.service
    after = run.since(30 - 3)
    run.run(slow, 10)
    assert min(row[1] for row in run.since(30) if not run.limiter.probing) >= 4
    assert run.throughput(30) >= 0.9 * slow.capacity / slow.service
    assert _p99(run.since(30)) <= 2 * slow.service
    assert after


def test_overload_answers_back_it_off_and_it_recovers_once_they_stop() -> None:
    run = _run()
    run.run(Knee(), 10)
    before = run.limiter.limit
    run.run(Knee(rejects=0.3), 5)
    assert run.limiter.limit <= max(4, before // 2)
    calls_rejecting = len(run.since(10)) / 5
    run.run(Knee(), 10)
    assert run.limiter.limit >= 16
    assert run.throughput(20) >= 0.9 * 16 / 0.010
    # backing off, the sidecar calls a rejecting service less often than a healthy one, not more
    assert calls_rejecting < 16 / 0.010


def test_an_idle_pipeline_does_not_grow_its_limit() -> None:
    run = _run(initial=32)
    limiter = run.limiter
    for _ in range(10_000):
        run.now += 0.01
        limiter.observe(0.005, in_flight=2, overload=False)
    assert limiter.limit == 32


def test_a_probe_holds_the_limit_at_min_until_the_calls_drained_and_then_restores_it() -> None:
    run = _run(initial=64, minimum=4)
    limiter = run.limiter
    assert limiter.probing  # the first probe: the baseline is measured before the limit is used
    assert limiter.limit == 4
    for in_flight in range(64, 4, -1):
        limiter.observe(0.05, in_flight=in_flight, overload=False)
        assert limiter.limit == 4
    for _ in range(1 + 3 + 5):  # the one that drained it and the 3 begun before, then the probe's own
        limiter.observe(0.01, in_flight=4, overload=False)
    assert not limiter.probing
    assert limiter.baseline == 0.01
    assert limiter.limit == 64


def test_a_probe_that_meets_only_overload_ends_and_backs_off() -> None:
    run = _run(initial=64, minimum=4)
    limiter = run.limiter
    for _ in range(200):
        limiter.observe(0.001, in_flight=4, overload=True)
    assert not limiter.probing
    assert limiter.baseline is None
    assert limiter.limit < 64


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 50),
    st.integers(0, 100),
    st.integers(0, 500),
    st.lists(
        st.tuples(st.floats(0.0001, 10.0), st.integers(0, 1000), st.booleans(), st.floats(0, 2.0)),
        max_size=400,
    ),
)
def test_the_limit_never_leaves_min_and_max(
    minimum: int, above_min: int, above_initial: int, trace: list[tuple[float, int, bool, float]]
) -> None:
    now = [0.0]
    initial = minimum + above_min
    limiter = AdaptiveLimit(initial=initial, minimum=minimum, maximum=initial + above_initial, clock=lambda: now[0])
    for rtt, in_flight, overload, pause in trace:
        now[0] += pause
        limiter.observe(rtt, in_flight=in_flight, overload=overload)
        assert minimum <= limiter.limit <= initial + above_initial
