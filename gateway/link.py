"""One SMPP connection (a "leg"), as an asyncio protocol.

Theory of operation
-------------------
A `Link` moves bytes and arms timers; everything else is delegated:

* framing and decoding are `gateway.smpp` (no I/O there);
* what a PDU *means* is the owner's business (`LinkOwner.link_request`),
  e.g. the proxy session that pairs a sender leg with a carrier leg.

The link owns the things that are per leg in SMPP 3.4:

* **Sequence numbers** of the requests it sends (section 2.2: they are
  per session), and the map from each outstanding sequence number to the
  callback that wants the response. PDUs the sidecar originates (auto-replies,
  enquire_link) draw from the same counter, so they never collide with
  relayed ones.
* **The window**: at most `window` requests sent and unanswered. The owner
  asks `has_room()` and pauses reading on the *other* leg when there is no
  room, instead of queueing (back-pressure, not buffering).
* **Unanswered incoming requests**: at most `window` of those too; beyond
  that this leg stops reading until responses go out. Together with the
  bounded frame reader this bounds every buffer a peer can make us fill.
* **Writes**: the PDUs a leg sends are collected in one buffer and written
  with one `write` per half window of them, the rest at the end of the loop
  turn. Holding a whole read until all of it was parsed would make each hop
  wait for the one before (sender, sidecar and carrier taking turns on one
  core); with two batches in flight the next hop works on the first while
  this one parses the second (`bench/bench_relay.py` prints how many CPUs
  the three processes keep busy). Nothing is written once `close()` ran.
* **Upkeep**: answers enquire_link locally, sends one when the leg has been
  idle for `enquire_link_interval`, and closes a leg whose requests time out
  (`response_timeout`); a request that times out is reported to its
  callback with `None` so the owner can answer the other side.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol, cast

from prometheus_client import Counter

from gateway import logs
from gateway.smpp.constants import RESPONSE_BIT, Command, CommandStatus
from gateway.smpp.errors import FramingError
from gateway.smpp.framing import FrameReader, Header, encode_simple, renumbered
from metrics import Metrics

log = logging.getLogger("optout.link")

#: Protocol warnings logged per connection before they are only counted.
WARNINGS_LOGGED = 5
#: Protocol violations after which a connection is closed.
MAX_VIOLATIONS = 100

ResponseCallback = Callable[[Header | None, bytes | None], None]

# Command names for the `command` label, computed once (hot path).
_COMMAND_NAMES: dict[int, str] = {c.value: c.name.lower() for c in Command}


# Requests that have no response PDU (SMPP 3.4 sections 4.1.7, 4.12).
_NO_RESPONSE: Final = frozenset({Command.OUTBIND, Command.ALERT_NOTIFICATION})


def command_name(command_id: int) -> str:
    return _COMMAND_NAMES.get(command_id, "unknown")


class LinkOwner(Protocol):
    """What a link tells the code that owns it."""

    def link_request(self, link: Link, header: Header, raw: bytes) -> None:
        """A request arrived (not enquire_link, which the link answers itself)."""

    def link_room(self, link: Link) -> None:
        """The link's window has room again (after `has_room()` was False)."""

    def link_closed(self, link: Link, reason: str) -> None:
        """The connection is gone; called once."""


@dataclass(frozen=True, slots=True)
class LinkSettings:
    side: str  # "sender" or "upstream": the metric label and log field
    window: int = 64
    response_timeout: float = 30.0
    enquire_link_interval: float = 30.0
    max_pdu_size: int = 65536


# An outstanding request: (deadline, command_id, callback). A plain tuple,
# because one is made per relayed PDU and a class's __init__ costs more.
_Pending = tuple[float, int, ResponseCallback]
# Writes a sequence number into the output buffer: `_put_u32(out, at, seq)`.
# (Final: compiled, a C static rather than a module-dict look-up per use.)
_put_u32: Final = struct.Struct(">I").pack_into
_monotonic: Final = time.monotonic
# Literals, not Command members: compiled, a Final literal is a constant in
# the code, where an enum member is a look-up per use.
_ENQUIRE_LINK: Final = 0x00000015  # Command.ENQUIRE_LINK
_ENQUIRE_LINK_RESP: Final = 0x80000015  # Command.ENQUIRE_LINK_RESP


class Tally:
    """PDUs counted by command_id over a batch, for the `optout_pdus_total`
    counters. A batch is mostly one command repeated (a window of submits, or
    of their responses), so a run of one command is counted in a plain int and
    the dict sees each run once: compiled, no int is boxed per PDU."""

    __slots__ = ("_command_id", "_counts", "_run")

    def __init__(self) -> None:
        self._command_id = -1
        self._run = 0
        self._counts: dict[int, int] = {}

    def add(self, command_id: int) -> None:
        if command_id == self._command_id:
            self._run += 1
            return
        self._end_run()
        self._command_id = command_id
        self._run = 1

    def drain(self) -> list[tuple[int, int]]:
        """(command_id, count) of everything added since the last drain."""
        self._end_run()
        items = list(self._counts.items())
        self._counts.clear()
        return items

    def _end_run(self) -> None:
        if self._run:
            counts = self._counts
            counts[self._command_id] = counts.get(self._command_id, 0) + self._run
            self._run = 0
            self._command_id = -1


class Link(asyncio.Protocol):
    """One SMPP TCP (or TLS) connection, either side."""

    def __init__(self, settings: LinkSettings, owner: LinkOwner, metrics: Metrics) -> None:
        self.settings = settings
        self.owner = owner
        self.metrics = metrics
        self.peer = "?"
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._reader = FrameReader(max_length=settings.max_pdu_size)
        self._window = settings.window
        self._timeout = settings.response_timeout
        # Made on first use, like the _count children (labels() is slow, and
        # a leg that never fills its window should not show a zero series).
        self._window_full: Counter | None = None
        # The next sequence number to use (a plain int: compiled, native arithmetic).
        self._seq = 1
        self._pending: dict[int, _Pending] = {}
        self._unanswered_in = 0
        self._reading_paused = False  # by us, for back-pressure
        self._hold = False  # owner asked us to stop delivering requests
        self._write_paused = False
        self._last_activity = _monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._is_closed = False
        # Set by close(): buffered PDUs are no longer delivered (the closed
        # transport reports connection_lost only on a later loop turn).
        self._closing = False
        self._close_reason = ""
        # Counter children by command id, made on first use (labels() is slow
        # for the hot path, and unused commands should not show as zero series).
        self._count: dict[tuple[str, int], Counter] = {}
        # PDUs not written yet, back to back (a fresh buffer after each
        # write: the transport may keep the one it was given).
        self._out = bytearray()
        self._waiting = 0  # PDUs in `_out`
        # Written at once when this many are waiting (see "Writes" above).
        self._flush_at = max(1, settings.window // 2)
        self._counts_out = Tally()
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()
        # Called once the connection is made (the listener's admission check).
        self.on_connect: Callable[[Link], None] | None = None
        # Protocol violations by the peer: the first WARNINGS_LOGGED are
        # logged, all are counted, MAX_VIOLATIONS close the connection.
        self.violations = 0
        # Sequence numbers of our requests that timed out, so that their late
        # responses are not mistaken for unsolicited ones (bounded: oldest go).
        self._timed_out: dict[int, None] = {}

    # --- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance(asyncio.Transport): uvloop's transports are not subclasses.
        self.transport = stream = cast(asyncio.Transport, transport)
        peer = stream.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        # Pause our reading when the peer is slow to take our writes.
        stream.set_write_buffer_limits(high=256 * 1024)
        self._arm_timer()
        if self.on_connect is not None:
            self.on_connect(self)

    def data_received(self, data: bytes) -> None:
        self._last_activity = _monotonic()
        try:
            self._reader.feed(data)
        except FramingError as exc:
            self._framing_failed(exc)
            return
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(self._close_reason or ("connection lost" if exc is None else str(exc)))

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()
        self.owner.link_room(self)

    # --- what owners call -----------------------------------------------------

    def has_room(self) -> bool:
        """True if one more request may be sent now without exceeding the window."""
        return (
            len(self._pending) < self._window
            and not self._write_paused
            and not self._is_closed
        )

    def hold(self, on: bool) -> None:
        """Stop (or resume) delivering requests from this leg; used by the owner
        when the leg they would be relayed to has no room."""
        if on == self._hold:
            return
        self._hold = on
        if on:
            if self._window_full is None:
                self._window_full = self.metrics.window_full.labels(self.settings.side)
            self._window_full.inc()
        self._update_reading()
        if not on:
            self._process()

    def send_request(self, raw: bytes, callback: ResponseCallback) -> None:
        """Send a request PDU (its sequence number is replaced by ours) and call
        `callback(header, raw)` with the response, or `(None, None)` on timeout
        or when the link closes first."""
        self.relay_request(raw, int.from_bytes(raw[4:8], "big"), callback)

    def relay_request(self, raw: bytes, command_id: int, callback: ResponseCallback) -> bool:
        """`send_request` for the relay's hot path, where the caller already
        knows `command_id`: returns `has_room()` after sending, so a relay
        learns whether to hold its source in the same call."""
        seq = self._seq
        self._seq = seq + 1
        pending = self._pending
        if seq > 0x7FFFFFFF or seq in pending:
            seq = self._next_seq_slow(seq)
        pending[seq] = (_monotonic() + self._timeout, command_id, callback)
        if not self._closing and self.transport is not None:
            # _write, inlined: one call per relayed PDU is worth saving here.
            out = self._out
            at = len(out)
            out += raw
            _put_u32(out, at + 12, seq)
            self._counts_out.add(command_id)
            self._waiting += 1
            if self._waiting >= self._flush_at:
                self._send_out()
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
        return len(pending) < self._window and not self._write_paused and not self._is_closed

    def request(self, raw: bytes) -> asyncio.Future[tuple[Header | None, bytes | None]]:
        """`send_request` for coroutines: a future of `(header, raw)`, or
        `(None, None)` on timeout or close."""
        fut: asyncio.Future[tuple[Header | None, bytes | None]] = (
            asyncio.get_running_loop().create_future()
        )

        def done(header: Header | None, resp: bytes | None) -> None:
            if not fut.done():
                fut.set_result((header, resp))

        self.send_request(raw, done)
        return fut

    def send_oneway(self, raw: bytes) -> None:
        """Send a request that has no response (alert_notification)."""
        seq = self._next_seq()
        self._write(renumbered(raw, seq), int.from_bytes(raw[4:8], "big"))

    def send_response(self, raw: bytes, sequence_number: int) -> None:
        """Answer a request this leg received, with the peer's sequence number."""
        if self._unanswered_in > 0:
            self._unanswered_in -= 1
        if not self._closing and self.transport is not None:
            # _write, inlined: once per relayed response.
            out = self._out
            at = len(out)
            out += raw
            _put_u32(out, at + 12, sequence_number)
            # The command_id, from octets the compiled code reads natively.
            self._counts_out.add(raw[4] << 24 | raw[5] << 16 | raw[6] << 8 | raw[7])
            self._waiting += 1
            if self._waiting >= self._flush_at:
                self._send_out()
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
        # One answer fewer can only let a paused leg read again; when reading
        # is not paused, the end of the current batch re-evaluates anyway.
        if self._reading_paused:
            self._update_reading()

    def answer(self, header: Header, status: int, body: bytes = b"") -> None:
        """Answer `header`'s request with an empty-bodied (or given) response."""
        self.send_response(
            encode_simple(header.command_id | RESPONSE_BIT, status, header.sequence_number, body),
            header.sequence_number,
        )

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = seq + 1
        return self._next_seq_slow(seq)

    def _next_seq_slow(self, seq: int) -> int:
        if seq > 0x7FFFFFFF:  # SMPP 3.4 section 3.2: 0x01..0x7FFFFFFF, then wrap
            seq = 1
            self._seq = 2
        while seq in self._pending:  # after a wrap, skip numbers still in flight
            seq = self._seq
            self._seq = seq + 1
        return seq

    def fail_pending(self) -> None:
        """Give up on every outstanding request now, leaving the leg open: each
        callback gets `(None, None)` as on a timeout, so the owner can still
        answer the other side (a drain that ran out of time hands work back)."""
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p[2](None, None)

    def close(self, reason: str) -> None:
        """Close now; outstanding callbacks get `(None, None)`."""
        if self.transport is not None and not self._is_closed:
            self._close_reason = reason
            self._flush()
            self._closing = True
            self.transport.close()
        elif self.transport is None:
            self._finish(reason)

    def abort(self, reason: str) -> None:
        if self.transport is not None and not self._is_closed:
            self._close_reason = reason
            self._closing = True
            self.transport.abort()

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    # --- internals --------------------------------------------------------------

    def _write(self, raw: bytes | bytearray, command_id: int) -> None:
        if self._closing or self.transport is None:
            return
        self._out += raw
        self._counts_out.add(command_id)
        self._waiting += 1
        if self._waiting >= self._flush_at:
            self._send_out()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """End of the loop turn: what is left goes out, and the turn's counts."""
        self._flush_scheduled = False
        self._send_out()
        for command_id, n in self._counts_out.drain():
            self._counter("out", command_id).inc(n)

    def _send_out(self) -> None:
        if not self._waiting:
            return
        out = self._out
        self._out = bytearray()
        self._waiting = 0
        if not self._is_closed and self.transport is not None:
            self.transport.write(out)

    def _counter(self, direction: str, command_id: int) -> Counter:
        counter = self._count.get((direction, command_id))
        if counter is None:
            counter = self.metrics.pdus.labels(self.settings.side, direction,
                                               command_name(command_id))
            if len(self._count) < 64:  # unknown ids from a peer must not grow this
                self._count[(direction, command_id)] = counter
        return counter

    def _process(self) -> None:
        """Deliver buffered frames until none is left or we must hold."""
        counts_in = Tally()
        try:
            self._process_frames(counts_in)
        finally:
            for command_id, n in counts_in.drain():
                self._counter("in", command_id).inc(n)

    def _process_frames(self, counts_in: Tally) -> None:
        # The relay's inner loop, once per PDU: attributes are read into locals
        # and matched responses are handled inline. (`reader.next_pdu()`, not a
        # bound method in a local: compiled, that is a native call.)
        reader = self._reader
        pending_map = self._pending
        owner = self.owner
        room_at = self._window - 1
        while not self._hold and not self._closing:
            try:
                item = reader.next_pdu()
            except FramingError as exc:
                self._framing_failed(exc)
                return
            if item is None:
                break
            header, raw = item
            command_id = header.command_id
            counts_in.add(command_id)
            if command_id & RESPONSE_BIT:
                # Sequence 0 is never ours, so a generic_nack for an unreadable
                # PDU is unmatched too.
                pending = pending_map.pop(header.sequence_number, None)
                if pending is None:
                    self._unmatched_response(header)
                    continue
                pending[2](header, raw)
                if len(pending_map) == room_at:
                    owner.link_room(self)
            elif command_id == _ENQUIRE_LINK:
                resp = encode_simple(_ENQUIRE_LINK_RESP, 0, header.sequence_number)
                self._write(resp, _ENQUIRE_LINK_RESP)
            else:
                if command_id not in _NO_RESPONSE:
                    self._unanswered_in += 1
                owner.link_request(self, header, raw)
        self._update_reading()

    def _unmatched_response(self, header: Header) -> None:
        """A response with no request of ours outstanding: dropped, and a
        protocol violation unless it answers a request that timed out."""
        if header.sequence_number in self._timed_out:
            del self._timed_out[header.sequence_number]
            logs.event(log, "late_response", logging.DEBUG, side=self.settings.side,
                       peer=self.peer, command=command_name(header.command_id))
            return
        if header.command_id == Command.GENERIC_NACK and header.sequence_number == 0:
            # A nack for a PDU the peer could not even read a sequence number of.
            self.protocol_violation("generic_nack_received",
                                    status=f"{header.command_status:#x}")
            return
        self.protocol_violation("unexpected_response", command=command_name(header.command_id),
                                sequence=header.sequence_number)

    def protocol_violation(self, event: str, **fields: object) -> None:
        """The peer broke the protocol (the caller has answered it if needed).
        Logged for the first few times only, so a peer cannot turn each small
        PDU into a log line; past MAX_VIOLATIONS the connection is closed."""
        self.violations += 1
        n = self.violations
        self.metrics.protocol_violations.labels(self.settings.side).inc()
        if n <= WARNINGS_LOGGED:
            logs.event(log, event, logging.WARNING, side=self.settings.side, peer=self.peer,
                       **fields)
            if n == WARNINGS_LOGGED:
                logs.event(log, "protocol_warnings_silenced", logging.WARNING,
                           side=self.settings.side, peer=self.peer,
                           after=WARNINGS_LOGGED, close_after=MAX_VIOLATIONS)
        if n >= MAX_VIOLATIONS and not self._closing:
            logs.event(log, "too_many_protocol_violations", logging.WARNING,
                       side=self.settings.side, peer=self.peer, violations=n, last=event)
            self.close(f"{n} protocol violations")

    def _update_reading(self) -> None:
        if self.transport is None or self._is_closed:
            return
        should_pause = (
            self._hold
            or self._unanswered_in >= self.settings.window
            or self._write_paused
        )
        if should_pause and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        elif not should_pause and self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()

    def _framing_failed(self, exc: FramingError) -> None:
        # The stream cannot be resynchronised (SMPP has no frame delimiter):
        # say why with generic_nack, then close this leg only.
        self.metrics.framing_errors.labels(self.settings.side).inc()
        logs.event(log, "framing_error", logging.WARNING, side=self.settings.side,
                   peer=self.peer, error=str(exc), status=f"{exc.command_status:#x}")
        self._write(encode_simple(Command.GENERIC_NACK, exc.command_status, 0),
                    Command.GENERIC_NACK)
        self.close(f"framing error: {exc}")

    def _arm_timer(self) -> None:
        loop = asyncio.get_running_loop()
        # A tenth of the response timeout (at most 1 s): a request is answered
        # at most that much after its deadline (with a tick equal to the
        # timeout, a 1 s timeout fired after up to 2 s).
        interval = min(1.0, self.settings.enquire_link_interval,
                       self.settings.response_timeout / 10)
        self._timer = loop.call_later(interval, self._tick)

    def _tick(self) -> None:
        """Once a second: expire requests and keep an idle leg alive."""
        if self._is_closed:
            return
        now = _monotonic()
        expired = []
        # Requests are inserted in send order with one timeout, so the expired
        # ones are at the front of the dict.
        for seq, pending in self._pending.items():
            if pending[0] > now:
                break
            expired.append(seq)
        for seq in expired:
            _, command_id, callback = self._pending.pop(seq)
            self._timed_out[seq] = None
            if len(self._timed_out) > 4 * self._window:
                del self._timed_out[next(iter(self._timed_out))]
            self.metrics.response_timeouts.labels(self.settings.side).inc()
            logs.event(log, "response_timeout", logging.WARNING, side=self.settings.side,
                       peer=self.peer, command=command_name(command_id))
            if command_id == Command.ENQUIRE_LINK:
                self.close("enquire_link not answered")
                return
            callback(None, None)
        if expired:
            self.owner.link_room(self)
        if now - self._last_activity >= self.settings.enquire_link_interval:
            self._last_activity = now
            self.send_request(encode_simple(Command.ENQUIRE_LINK, 0, 0), lambda h, r: None)
        self._arm_timer()

    def _finish(self, reason: str) -> None:
        if self._is_closed:
            return
        self._is_closed = True
        self._closing = True
        if WARNINGS_LOGGED < self.violations < MAX_VIOLATIONS:
            # The summary of what was silenced (past MAX_VIOLATIONS the
            # closing line already said it).
            logs.event(log, "protocol_violations", logging.WARNING, side=self.settings.side,
                       peer=self.peer, violations=self.violations)
        if self._timer is not None:
            self._timer.cancel()
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p[2](None, None)
        if not self.closed.done():
            self.closed.set_result(reason)
        self.owner.link_closed(self, reason)


def status_name(status: int) -> str:
    try:
        return CommandStatus(status).name
    except ValueError:
        return f"{status:#010x}"
