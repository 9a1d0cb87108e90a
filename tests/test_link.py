"""How a leg writes: relayed PDUs leave in batches of at most half a window,
so the next hop starts on them while the relay is still parsing the rest of
a read (the relay benchmark's ratio depends on it)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.link import Link, LinkSettings
from gateway.smpp import pdu as codec
from gateway.smpp.constants import Command
from gateway.smpp.framing import FrameReader
from metrics import Metrics

SUBMIT = codec.encode(codec.make_pdu(Command.SUBMIT_SM, destination_addr=b"14155550100",
                                     short_message=b"hello"))
RESP = codec.encode(codec.make_pdu(Command.SUBMIT_SM_RESP, sequence_number=7,
                                   message_id=b"abc"))


class Owner:
    def link_request(self, link: Link, header: Any, raw: bytes) -> None: ...
    def link_room(self, link: Link) -> None: ...
    def link_closed(self, link: Link, reason: str) -> None: ...


@pytest.fixture
async def leg() -> AsyncIterator[tuple[Link, socket.socket]]:
    """A Link (window 10) connected over loopback to a plain socket we read
    without the event loop, so we see what was written before the loop turned."""
    server = socket.create_server(("127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    _, link = await loop.create_connection(
        lambda: Link(LinkSettings("upstream", window=10), Owner(), Metrics()),
        "127.0.0.1", server.getsockname()[1])
    peer, _ = server.accept()
    peer.setblocking(False)
    try:
        yield link, peer
    finally:
        link.close("test over")
        peer.close()
        server.close()


def frames_readable(peer: socket.socket) -> list[bytes]:
    """Every whole PDU the peer can read right now, without waiting."""
    reader = FrameReader()
    while True:
        try:
            chunk = peer.recv(65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        reader.feed(chunk)
    frames = []
    while (frame := reader.next_frame()) is not None:
        frames.append(frame)
    return frames


def relay(link: Link, count: int = 1) -> None:
    """Relay `count` submit_sm through the leg (their responses ignored)."""
    for _ in range(count):
        link.relay_request(SUBMIT, Command.SUBMIT_SM, lambda h, r: None)


async def next_turn() -> None:
    turned = asyncio.Event()
    asyncio.get_running_loop().call_soon(turned.set)
    await asyncio.wait_for(turned.wait(), 1)


async def test_relayed_requests_leave_every_half_window_and_the_rest_at_the_turn(
    leg: tuple[Link, socket.socket],
) -> None:
    link, peer = leg
    relay(link, 4)
    # Fewer than half a window (5) wait for the end of the loop turn ...
    assert frames_readable(peer) == []
    relay(link)
    # ... the fifth sends all five at once, before the caller goes on.
    first = frames_readable(peer)
    assert [int.from_bytes(f[12:16], "big") for f in first] == [1, 2, 3, 4, 5]
    assert all(f[16:] == SUBMIT[16:] for f in first)
    relay(link, 2)
    assert frames_readable(peer) == []
    await next_turn()
    rest = frames_readable(peer)
    assert [int.from_bytes(f[12:16], "big") for f in rest] == [6, 7]


async def test_responses_leave_every_half_window_too(
    leg: tuple[Link, socket.socket],
) -> None:
    link, peer = leg
    for seq in range(1, 5):
        link.send_response(RESP, seq)
    assert frames_readable(peer) == []
    link.send_response(RESP, 5)
    sent = frames_readable(peer)
    assert [int.from_bytes(f[12:16], "big") for f in sent] == [1, 2, 3, 4, 5]
    assert all(f[16:] == RESP[16:] for f in sent)


def sent_count(link: Link, command: str) -> float | None:
    return link.metrics.registry.get_sample_value(
        "optout_pdus_total", {"side": "upstream", "direction": "out", "command": command})


async def test_pdus_sent_mid_turn_and_at_its_end_are_each_counted_once_in_order(
    leg: tuple[Link, socket.socket],
) -> None:
    link, peer = leg
    relay(link, 4)
    link.send_response(RESP, 99)  # the fifth: the first half window goes out
    relay(link)
    link.send_response(RESP, 98)
    relay(link)
    await next_turn()
    frames = frames_readable(peer)
    assert [(int.from_bytes(f[4:8], "big"), int.from_bytes(f[12:16], "big"))
            for f in frames] == [
        (Command.SUBMIT_SM, 1), (Command.SUBMIT_SM, 2), (Command.SUBMIT_SM, 3),
        (Command.SUBMIT_SM, 4), (Command.SUBMIT_SM_RESP, 99), (Command.SUBMIT_SM, 5),
        (Command.SUBMIT_SM_RESP, 98), (Command.SUBMIT_SM, 6)]
    assert (sent_count(link, "submit_sm"), sent_count(link, "submit_sm_resp")) == (6, 2)


async def test_close_writes_what_is_waiting_and_nothing_after(
    leg: tuple[Link, socket.socket],
) -> None:
    link, peer = leg
    relay(link)
    link.close("done")
    for _ in range(10):  # past a half window: nothing may go out any more
        relay(link)
        link.send_response(RESP, 5)
    await asyncio.wait_for(link.closed, 5)
    peer.setblocking(True)
    peer.settimeout(5)
    received = b""
    while chunk := peer.recv(65536):
        received += chunk
    assert received == SUBMIT[:12] + (1).to_bytes(4, "big") + SUBMIT[16:]
    assert sent_count(link, "submit_sm") == 1
    assert sent_count(link, "submit_sm_resp") is None
