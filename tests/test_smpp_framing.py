"""Framing helpers the relay leans on (gateway/smpp/framing.py): sequence
numbers, header peeks, and a reader that stays correct across long streams.
"""

from __future__ import annotations

import tracemalloc

import pytest

from gateway.smpp.errors import FramingError
from gateway.smpp.framing import (
    HEADER_LENGTH,
    FrameReader,
    SequenceCounter,
    command_id_of,
    encode_simple,
    make_header,
    parse_header,
    renumbered,
    sequence_of,
    with_sequence,
)

MAX_SEQ = 0x7FFFFFFF


def test_sequence_numbers_start_at_one_count_by_one_and_wrap_to_one() -> None:
    counter = SequenceCounter()
    assert [counter.next() for _ in range(3)] == [1, 2, 3]
    near_end = SequenceCounter(MAX_SEQ - 1)
    assert [near_end.next() for _ in range(4)] == [MAX_SEQ - 1, MAX_SEQ, 1, 2]


def test_a_counter_started_at_the_last_sequence_hands_it_out_then_wraps() -> None:
    counter = SequenceCounter(MAX_SEQ)
    assert [counter.next() for _ in range(2)] == [MAX_SEQ, 1]


@pytest.mark.parametrize("start", [0, -1, MAX_SEQ + 1])
def test_a_sequence_outside_the_smpp_range_is_refused(start: int) -> None:
    with pytest.raises(ValueError, match=r"^sequence numbers run from 1 to 0x7FFFFFFF$"):
        SequenceCounter(start)


def test_header_peeks_read_what_make_header_wrote() -> None:
    raw = make_header(20, 0x00000004, 0, 0x01020304) + b"body"
    assert parse_header(raw) == (20, 4, 0, 0x01020304)
    assert (command_id_of(raw), sequence_of(raw)) == (4, 0x01020304)
    again = renumbered(raw, 77)
    assert sequence_of(again) == 77 and again[:12] == raw[:12] and again[16:] == b"body"
    assert with_sequence(raw, 78)[12:16] == (78).to_bytes(4, "big")


def test_a_bodiless_pdu_of_exactly_16_bytes_can_be_peeked_and_renumbered() -> None:
    # Given an enquire_link, which is the header alone
    raw = make_header(16, 0x00000015, 0, 41)
    # Then every peek reads it, and renumbering keeps it 16 bytes
    assert parse_header(raw) == (16, 0x15, 0, 41)
    assert (command_id_of(raw), sequence_of(raw)) == (0x15, 41)
    assert with_sequence(raw, 42) == make_header(16, 0x00000015, 0, 42)


@pytest.mark.parametrize("peek", [command_id_of, sequence_of, parse_header,
                                  lambda raw: with_sequence(raw, 1)])
def test_a_short_pdu_is_a_framing_error_naming_the_header(peek: object) -> None:
    with pytest.raises(FramingError, match=r"shorter than the 16-byte header \(15 bytes\)"):
        peek(b"\x00" * 15)  # type: ignore[operator]


def test_a_length_below_the_header_is_a_framing_error() -> None:
    with pytest.raises(FramingError, match="command_length 15 is below the header size"):
        parse_header(make_header(15, 4, 0, 1))


def test_encode_simple_counts_its_body_in_the_length() -> None:
    raw = encode_simple(0x80000004, 0, 9, b"abc\x00")
    assert parse_header(raw) == (HEADER_LENGTH + 4, 0x80000004, 0, 9)
    assert raw[16:] == b"abc\x00"


def test_the_reader_needs_room_for_a_header() -> None:
    assert FrameReader(max_length=HEADER_LENGTH).max_length == HEADER_LENGTH
    with pytest.raises(ValueError, match=r"^max_length must allow at least the 16-byte header$"):
        FrameReader(max_length=HEADER_LENGTH - 1)


def test_a_long_stream_in_one_chunk_comes_out_frame_by_frame_in_order() -> None:
    # Over 64 KiB framed from one chunk, then a frame cut by the chunk's end.
    frames = [encode_simple(0x15, 0, n, bytes(100)) for n in range(1, 2001)]
    reader = FrameReader()
    reader.feed(b"".join(frames) + frames[0][:10])
    out = []
    while (frame := reader.next_frame()) is not None:
        out.append(frame)
    assert out == frames
    assert reader.buffered == 10
    reader.feed(frames[0][10:])
    assert reader.next_frame() == frames[0]


def test_a_bad_length_right_after_a_good_frame_fails_the_reader() -> None:
    reader = FrameReader(max_length=1024)
    good = encode_simple(0x15, 0, 1)
    reader.feed(good + make_header(2048, 4, 0, 2))
    assert reader.next_frame() == good
    assert reader.failed
    with pytest.raises(FramingError, match=r"command_length 2048 outside 16\.\.1024"):
        reader.next_frame()


def test_a_frame_followed_by_the_first_bytes_of_the_next_one_arriving_byte_by_byte() -> None:
    # Given a frame and then the start of the next one, split as TCP may split it
    first, second = encode_simple(0x15, 0, 1), encode_simple(0x15, 0, 2)
    reader = FrameReader()
    reader.feed(first + second[:2])
    # When the frame is taken, then the partial header waits for its bytes
    assert reader.next_frame() == first
    assert reader.next_frame() is None and reader.buffered == 2
    for i in range(2, len(second) - 1):
        reader.feed(second[i:i + 1])
        assert reader.next_frame() is None
    reader.feed(second[-1:])
    assert reader.next_frame() == second
    assert reader.buffered == 0 and not reader.failed


def test_a_bad_length_after_64_kib_of_good_frames_fails_the_reader() -> None:
    # Given two large PDUs (over 64 KiB framed from one chunk) followed by a
    # header claiming 5 bytes
    big = [encode_simple(0x04, 0, n, bytes(40_000 - HEADER_LENGTH)) for n in (1, 2)]
    reader = FrameReader()
    reader.feed(b"".join(big) + make_header(5, 0x04, 0, 3))
    # When the good frames are taken, then the bad length fails the reader at once
    assert reader.next_frame() == big[0]
    assert reader.next_frame() == big[1]
    assert reader.failed
    with pytest.raises(FramingError, match=r"command_length 5 outside 16\.\.65536") as caught:
        reader.next_frame()
    assert caught.value.command_status == 0x00000002  # ESME_RINVCMDLEN


def test_chunks_fed_one_after_another_before_any_is_read_all_come_out() -> None:
    # Given a whole frame and half of the next fed, then the rest and a third
    # frame fed before anything was taken
    frames = [encode_simple(0x15, 0, n, bytes(20 * n)) for n in (1, 2, 3)]
    reader = FrameReader()
    reader.feed(frames[0] + frames[1][:30])
    reader.feed(frames[1][30:] + frames[2])
    # Then all three come out, in order, and nothing is left
    assert [reader.next_frame() for _ in range(4)] == [*frames, None]
    assert reader.buffered == 0


def test_a_long_stream_that_never_ends_on_a_frame_boundary_keeps_memory_bounded() -> None:
    # Given a sender that streams 4 MB of PDUs in chunks that always end mid-frame,
    # so the buffer is never empty when a frame is taken
    frame = encode_simple(0x15, 0, 1, bytes(100))
    stream = frame * 36_000
    reader = FrameReader()
    tracemalloc.start()
    try:
        taken = 0
        # Each chunk completes one frame and carries the first 50 bytes of the next.
        reader.feed(stream[:50])
        for start in range(50, len(stream), len(frame)):
            reader.feed(stream[start:start + len(frame)])
            while reader.next_frame() is not None:
                taken += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Then every frame comes out, and the reader never held much more than
    # the chunk being read plus the one frame still to be completed
    assert taken == 36_000
    assert peak < 1_000_000
