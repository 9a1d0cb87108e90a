"""The relay's per-submit shortcuts give the same observable results as the
plain code they replace: metric totals, and the FrameReader's parsed headers."""

from __future__ import annotations

import asyncio

import pytest

from gateway.enforcement import SubmitMetrics
from gateway.smpp.framing import FrameReader, encode_simple, parse_header, renumbered
from metrics import Metrics
from rules.model import SmsType

# Durations on, between and beyond the bucket bounds (5 us .. 100 ms, +Inf).
DURATIONS = [0.0, 1e-6, 5e-6, 5.000001e-6, 2e-5, 0.001, 0.0999, 0.1, 3.0]


def samples(metrics: Metrics) -> dict[object, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name.startswith(("optout_decision_seconds", "optout_submit_total"))
        and not s.name.endswith("_created")
    }


def same(got: dict[object, float], want: dict[object, float]) -> bool:
    """Equal counts; the sum of durations may differ in the last bits only,
    because batching adds the same floats in a different order."""
    return got.keys() == want.keys() and all(
        got[k] == pytest.approx(v, rel=1e-12, abs=0) for k, v in want.items())


def reference(decisions: list[tuple[float | None, str, SmsType, bool]]) -> Metrics:
    """What observe() and inc() per submit would have recorded."""
    metrics = Metrics()
    for seconds, app_id, sms_type, blocked in decisions:
        if seconds is not None:
            metrics.decision_seconds.observe(seconds)
        metrics.submit.labels(app_id, sms_type.value, "blocked" if blocked else "allowed").inc()
    return metrics


DECISIONS: list[tuple[float | None, str, SmsType, bool]] = [
    (d, "app", SmsType.MARKETING, i % 3 == 0) for i, d in enumerate(DURATIONS)
] + [(None, "app", SmsType.MARKETING, True), (2e-6, "other", SmsType.MARKETING, False),
     # a run broken by the app alone, then by the type alone
     (3e-6, "app", SmsType.MARKETING, False), (3e-6, "other", SmsType.MARKETING, False),
     (3e-6, "other", SmsType.NOTIFICATION, False)]


async def test_batched_metrics_equal_per_submit_updates_after_one_loop_turn() -> None:
    metrics = Metrics()
    batched = SubmitMetrics(metrics)
    for decision in DECISIONS:
        batched.decided(*decision)
    flushed = asyncio.Event()
    asyncio.get_running_loop().call_soon(flushed.set)  # queued after the flush
    await asyncio.wait_for(flushed.wait(), 1)
    assert same(samples(metrics), samples(reference(DECISIONS)))

    # A second turn adds to the totals instead of replacing them.
    for decision in DECISIONS:
        batched.decided(*decision)
    batched.flush()
    assert same(samples(metrics), samples(reference(DECISIONS + DECISIONS)))


def test_without_a_running_loop_metrics_apply_at_once() -> None:
    metrics = Metrics()
    batched = SubmitMetrics(metrics)
    for decision in DECISIONS:
        batched.decided(*decision)
    assert samples(metrics) == samples(reference(DECISIONS))


def test_next_pdu_matches_next_frame_and_parse_header() -> None:
    pdus = [encode_simple(0x00000004, 0, n, b"x" * n) for n in (0, 1, 50, 300)]
    stream = b"".join(pdus)
    reader = FrameReader()
    got = []
    for i in range(0, len(stream), 7):  # fed in odd-sized chunks
        reader.feed(stream[i:i + 7])
        while (item := reader.next_pdu()) is not None:
            got.append(item)
    assert [raw for _, raw in got] == pdus
    assert [header for header, _ in got] == [parse_header(p) for p in pdus]
    assert all(type(header).__name__ == "Header" for header, _ in got)


def test_renumbered_changes_only_the_sequence_number() -> None:
    raw = encode_simple(0x80000004, 0, 7, b"abc\x00")
    out = renumbered(raw, 0x01020304)
    assert bytes(out) == raw[:12] + b"\x01\x02\x03\x04" + raw[16:]
    assert raw == encode_simple(0x80000004, 0, 7, b"abc\x00")  # input untouched
