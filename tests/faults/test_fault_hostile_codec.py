"""Hostile SMPP input, pure protocol core (no sockets): framing, decoding,
re-encoding, the relay's submit peek, text and concatenation readers, and the
session state machine raise nothing but their typed errors (`SmppError`,
each with its wire status), whatever bytes arrive and however they are cut.

Cases per run: OPTOUT_FUZZ_CASES inputs (default 100,000; hypothesis draws
them in lists so its per-example cost is shared).
"""

from __future__ import annotations

import random
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.smpp import pdu as codec
from gateway.smpp.constants import Command
from gateway.smpp.errors import FramingError, SmppError
from gateway.smpp.framing import FrameReader
from gateway.smpp.session import Role, SessionStateMachine
from gateway.smpp.text import concat_info, decode_short_message
from tests.faults.harness import env_int, record, rerun
from tests.faults.hostile import CORPUS, KINDS, mutate, random_input

CASES = env_int("OPTOUT_FUZZ_CASES", 100_000)
PER_EXAMPLE = 100  # inputs per example of the bulk property
EXAMPLES = max(10, -(-CASES // PER_EXAMPLE))
SHRINKABLE = max(100, CASES // 200)

step = st.tuples(st.integers(0, KINDS - 1), st.integers(0, 1 << 16), st.integers(0, 255))
mutated = st.builds(mutate, st.sampled_from(CORPUS), st.lists(step, min_size=1, max_size=6))
hostile = st.one_of(mutated, mutated, mutated, st.binary(max_size=200))
COMMAND_IDS = [int(c) for c in Command] + [0, 0x7FFFFFFF, 0x80000000, 0x00010200, 0xFFFFFFFF]

fed = {"inputs": 0, "frames": 0, "decoded": 0, "typed_errors": 0}


def exercise(data: bytes, chunk: int) -> None:
    """Everything the relay does with bytes from a peer, on `data` cut into
    `chunk`-byte reads. Only SmppError may escape any step."""
    reader = FrameReader(max_length=4096)
    try:
        for i in range(0, len(data), chunk):
            reader.feed(data[i:i + chunk])
            while (item := reader.next_pdu()) is not None:
                header, raw = item
                fed["frames"] += 1
                assert header.length == len(raw)
                pdu_layer(raw)
    except FramingError as exc:
        fed["typed_errors"] += 1
        assert exc.command_status == 0x02  # ESME_RINVCMDLEN: answered, then closed
        assert reader.failed


def pdu_layer(raw: bytes) -> None:
    codec.peek_submit_sm(raw)  # None or fields; never raises
    try:
        pdu = codec.decode(raw)
    except SmppError as exc:
        fed["typed_errors"] += 1
        assert 0 < exc.command_status <= 0xFFFFFFFF
        return
    fed["decoded"] += 1
    message = pdu.message_bytes()
    udhi = bool(pdu.get_int("esm_class") & 0x40)
    decode_short_message(pdu.get_int("data_coding"), message, udhi=udhi)
    concat_info(pdu.get_bytes("short_message"), udhi, pdu.tlvs)
    if pdu.command_id == Command.SUBMIT_MULTI:
        pdu.destinations()
    try:
        again = codec.encode(pdu)
    except SmppError:
        fed["typed_errors"] += 1
        return
    # What the relay re-encodes must decode to the same PDU: TLVs it does
    # not know survive byte for byte.
    assert codec.decode(again).tlvs == pdu.tlvs


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(st.integers(0, 2**64 - 1), st.integers(1, 40))
def test_codec_raises_only_typed_errors_on_hostile_bytes(seed: int, chunk: int) -> None:
    # The bulk: hypothesis draws a seed, which draws PER_EXAMPLE inputs (a
    # hypothesis example per input would cost ten times more per case); a
    # failure reports its seed, which replays it exactly.
    rng = random.Random(seed)
    for _ in range(PER_EXAMPLE):
        data = random_input(rng)
        fed["inputs"] += 1
        exercise(data, len(data) or 1)  # as one read
        exercise(data, chunk)  # cut at arbitrary points


@settings(max_examples=SHRINKABLE, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(st.lists(hostile, min_size=1, max_size=5), st.integers(1, 40))
def test_codec_on_shrinkable_hostile_bytes(inputs: list[bytes], chunk: int) -> None:
    # The same attack drawn structurally, so a failure shrinks to a small case.
    for data in inputs:
        fed["inputs"] += 1
        exercise(data, len(data) or 1)
        exercise(data, chunk)


@settings(max_examples=max(100, EXAMPLES // 10), deadline=None, database=None,
          derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(["receive", "send", "bound", "close"]),
                          st.sampled_from(COMMAND_IDS)), max_size=60),
       st.sampled_from(list(Role)))
def test_session_state_machine_raises_only_typed_errors(
    events: list[tuple[str, int]], role: Role
) -> None:
    session = SessionStateMachine(role)
    for action, command_id in events:
        try:
            if action == "receive":
                session.receive(command_id)
            elif action == "send":
                session.send(command_id)
            elif action == "bound":
                session.bound(command_id)
            else:
                session.close()
        except SmppError as exc:
            assert exc.command_status > 0
        except ValueError:
            # bound() with a command that is not a bind is a caller bug, and
            # says so with ValueError: the relay only calls it for binds.
            assert action == "bound"


def test_zz_record_codec_fuzz_figures() -> None:
    """Runs after the two properties above (file order) and records their totals."""
    started = time.monotonic()
    if fed["inputs"] == 0:  # run alone (-k): measure here
        test_codec_raises_only_typed_errors_on_hostile_bytes()
    assert fed["inputs"] >= CASES, fed
    record(
        "hostile SMPP input: codec and session",
        "codec and session never raise anything but their typed errors",
        f"{fed['inputs']:,} hostile inputs, each fed whole and cut into reads "
        f"({fed['frames']:,} frames, {fed['decoded']:,} decoded, {fed['typed_errors']:,} "
        f"typed errors); 0 other exceptions; the state machine under {EXAMPLES // 10:,} "
        "random event sequences",
        rerun("test_fault_hostile_codec.py", "OPTOUT_FUZZ_CASES=1000000"),
        **fed, examples=EXAMPLES, seconds=time.monotonic() - started,
    )
