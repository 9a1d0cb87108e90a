"""Sends auto-replies (opt-out / opt-in confirmations, help) to end users.

Replies are queued in the store's outbox in the same transaction as the
status change they answer, so an MO never fails because no carrier session
is up: the reply waits and goes out as soon as one is (SPEC section 3).

In a fleet every sidecar drains the same outbox: a sidecar claims the
replies it is about to send, for a lease (`OptOutService.claim_replies`),
so each confirmation goes out through exactly one of them. A sidecar that
dies holding claims loses them when the lease expires, and another sends
them; if it died after the carrier accepted a reply and before the store
recorded that, the reply goes out twice (the one window for a duplicate).

Which session carries them: the sidecar's own transmitter bind when
`[upstream] reply_system_id` is configured, otherwise any bound
transmitter-capable upstream session of a sender. The sidecar originates
these submit_sm itself, with sequence numbers from the carrier leg's own
counter, and consumes their responses: a sender never sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time

from gateway import logs
from gateway.link import Link
from gateway.proxy import DrainDeadline, RelayContext, connect_upstream, response_body
from gateway.smpp import pdu as pdu_codec
from gateway.smpp.constants import Command, CommandStatus
from gateway.smpp.framing import Header, encode_simple
from gateway.smpp.text import encode_reply_text
from rules.model import Reply
from rules.service import OptOutService

log = logging.getLogger("optout.replies")

_RETRY_SECONDS = 2.0
# The reply bind's reconnection backoff: 1 s after the first failure, doubling
# to 30 s, with up to 20 % jitter so a fleet does not retry in step; reset
# once a bind succeeds. (Carriers lock out system_ids that retry too fast.)
_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 30.0
_PROBE_SECONDS = 2.0
_DRAIN_POLL = 0.05


def reply_submit(reply: Reply) -> bytes:
    """The submit_sm that carries `reply` from the inbound address to the user."""
    data_coding, payload = encode_reply_text(reply.text)
    source = reply.source_addr.lstrip("+")
    # E.164 numbers go out international; short codes as network-specific.
    source_ton = 1 if reply.source_addr.startswith("+") else 3
    source_npi = 1 if reply.source_addr.startswith("+") else 0
    pdu = pdu_codec.make_pdu(
        Command.SUBMIT_SM,
        source_addr_ton=source_ton,
        source_addr_npi=source_npi,
        source_addr=source.encode(),
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=reply.destination_addr.lstrip("+").encode(),
        data_coding=data_coding,
        short_message=payload,
    )
    if len(payload) > 254:
        pdu.params["short_message"] = b""
        pdu.set_tlv(0x0424, payload)
    return pdu_codec.encode(pdu)


class _ReplyBind:
    """The sidecar's own transceiver session (reply_system_id): it sends the
    replies, and MOs the carrier routes to it are handled like any other MO
    (keywords, durable state change), then acknowledged. They are not
    forwarded: no sender owns this session."""

    def __init__(self, ctx: RelayContext, on_change: asyncio.Event) -> None:
        self.ctx = ctx
        self.link: Link | None = None
        self.bound = False
        self._on_change = on_change
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_attempt = 0.0
        self._backoff = 0.0
        # Stopping (SIGTERM): MOs are handed back (0x64) for the carrier to
        # redeliver, so the store's queue of commits empties before the end.
        self.draining = False

    # LinkOwner
    def link_request(self, link: Link, header: Header, raw: bytes) -> None:
        cmd = header.command_id
        if cmd == Command.UNBIND:
            link.answer(header, CommandStatus.ESME_ROK)
            link.close("carrier unbound the reply session")
        elif cmd in (Command.DELIVER_SM, Command.DATA_SM):
            if self.draining:
                link.answer(header, CommandStatus.ESME_RX_T_APPN)
                return
            task = asyncio.create_task(self._deliver(link, header, raw))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif cmd not in (Command.OUTBIND, Command.ALERT_NOTIFICATION):  # these have no response
            link.answer(header, CommandStatus.ESME_RINVBNDSTS)

    async def _deliver(self, link: Link, header: Header, raw: bytes) -> None:
        system_id = self.ctx.config.upstream.reply_system_id or ""
        decision = await self.ctx.enforcer.check_deliver(system_id, header, raw)
        status = decision.status
        link.answer(header, status, response_body(header.command_id, status))

    def link_room(self, link: Link) -> None:
        self._on_change.set()

    def link_closed(self, link: Link, reason: str) -> None:
        if self.bound:
            self.ctx.metrics.sessions.labels("reply", "trx").dec()
        self.bound = False
        self.link = None
        logs.event(log, "reply_bind_closed", reason=reason)
        self._on_change.set()

    def retry_in(self) -> float:
        """Seconds until the next bind attempt may be made."""
        return max(0.0, self._next_attempt - time.monotonic())

    async def connect(self) -> bool:
        now = time.monotonic()
        if now < self._next_attempt:
            return False  # a carrier that refuses us is not asked again at once
        # Until this attempt succeeds, the next one waits out the backoff.
        self._backoff = min(_BACKOFF_MAX, max(_BACKOFF_FIRST, self._backoff * 2))
        self._next_attempt = now + self._backoff * random.uniform(0.8, 1.0)
        ctx = self.ctx
        up = ctx.config.upstream
        smpp = ctx.config.smpp
        bind = pdu_codec.encode(pdu_codec.make_pdu(
            Command.BIND_TRANSCEIVER,
            system_id=(up.reply_system_id or "").encode(),
            password=(up.reply_password or "").encode(),
            system_type=up.reply_system_type.encode(),
            interface_version=0x34,
        ))
        link = await connect_upstream(ctx, self)
        if link is None:
            logs.event(log, "reply_bind_retry", retry_in=round(self.retry_in(), 2))
            return False
        self.link = link
        try:
            resp, _ = await asyncio.wait_for(link.request(bind),
                                             smpp.bind_timeout)
        except TimeoutError:
            resp = None
        if resp is None or resp.command_status != 0:
            status = "timeout" if resp is None else f"{resp.command_status:#x}"
            logs.event(log, "reply_bind_refused", logging.WARNING, status=status,
                       retry_in=round(self.retry_in(), 2))
            link.close("reply bind refused")
            return False
        self.bound = True
        self._backoff = 0.0
        ctx.metrics.sessions.labels("reply", "trx").inc()
        logs.event(log, "reply_bind_up")
        return True


class ReplySender:
    """Drains the reply outbox through whatever upstream session can carry it."""

    def __init__(self, ctx: RelayContext, service: OptOutService) -> None:
        self.ctx = ctx
        self.service = service
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Replies sent and not yet marked sent in the store: never sent again
        # meanwhile (a reply leaves this set once its mark is committed).
        self._in_flight: set[int] = set()
        self._to_mark: list[tuple[int, str | None]] = []
        self._marking: asyncio.Task[None] | None = None
        self._own = _ReplyBind(ctx, self._wake) if ctx.config.upstream.reply_system_id else None
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        """This sender's name on the replies it claims in the outbox: a fleet
        of sidecars sends each confirmation once (`OptOutService.claim_replies`)."""
        self._probe_ok = False
        self._last_probe = 0.0
        # Set by stop(): the loop ends on it even when the cancellation it also
        # sends is swallowed (Python 3.11's wait_for, and TLS connection set-up
        # and tear-down, can lose a cancel that lands as they complete).
        self._stopping = False

    @property
    def upstream_bound(self) -> bool:
        """A session to the carrier is bound (ours, or one of a sender)."""
        return (self._own is not None and self._own.bound) or any(
            s.upstream is not None for s in self.ctx.sessions.all()
        )

    @property
    def upstream_reachable(self) -> bool:
        return self.upstream_bound or self._probe_ok

    async def start(self) -> None:
        self.service.add_reply_listener(self._wake.set)
        self.ctx.sessions.on_upstream_change.append(self._wake.set)
        self._task = asyncio.create_task(self._run())

    async def drain(self, drain: DrainDeadline) -> None:
        """Stop gracefully: let the confirmations in flight and in the outbox go
        out while a carrier session can carry them and time allows, then unbind
        our own session. What is left stays in the outbox for the next start."""
        if self._own is not None:
            self._own.draining = True
        while not drain.expired() and self.upstream_bound:
            if not self._in_flight:
                try:
                    # Bounded by the deadline: under an MO storm the store's
                    # queue of commits can hold a read for seconds.
                    pending = await asyncio.wait_for(self.service.pending_replies(limit=1),
                                                     drain.remaining())
                except Exception:  # out of time, or the store is failing
                    break
                if not pending:
                    break
            self._wake.set()
            await asyncio.sleep(_DRAIN_POLL)
        await self.stop(drain)

    async def stop(self, drain: DrainDeadline | None = None) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._marking is not None and drain is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._marking), drain.remaining())
        own = self._own.link if self._own is not None else None
        if own is not None and drain is not None and self._own is not None and self._own.bound:
            unbound = own.request(encode_simple(Command.UNBIND, 0, 0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(unbound, drain.remaining())
        if own is not None:
            own.close("sidecar stopping")

    def _carrier_link(self) -> Link | None:
        if self._own is not None:
            return self._own.link if self._own.bound else None
        for session in self.ctx.sessions.transmitters():
            if session.upstream is not None and session.upstream.has_room():
                return session.upstream
        return None

    async def _run(self) -> None:
        while not self._stopping:
            # Cleared before the pass, not after: a wake during the pass (a
            # reply queued meanwhile, or stop()) then starts the next one at once.
            self._wake.clear()
            try:
                await self._drain()
            except Exception as exc:  # a store outage must not end the loop
                self.ctx.metrics.store_errors.labels("reply_outbox").inc()
                logs.event(log, "reply_drain_failed", logging.WARNING, error=repr(exc))
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the
            # cancellation that stop() sends when the event fires at that moment.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_wake()):
                    await self._wake.wait()

    def _next_wake(self) -> float:
        """How long to sleep when nothing wakes us: the retry interval, or
        less when the reply bind's next attempt is due sooner."""
        if self._own is not None and not self._own.bound:
            return min(_RETRY_SECONDS, max(0.01, self._own.retry_in()))
        return _RETRY_SECONDS

    async def _drain(self) -> None:
        if self._own is not None and not self._own.bound:
            await self._own.connect()
        await self._probe()
        waiting = await self.service.pending_reply_count()  # a read; claiming is a write
        self.ctx.metrics.replies_pending.set(waiting)
        if not waiting or self._carrier_link() is None:
            # Claim nothing we cannot send: another sidecar of the fleet may
            # have a carrier session for them.
            return
        pending = await self.service.claim_replies(
            self.owner, limit=self.ctx.config.smpp.window, lease=self.ctx.config.store.reply_lease
        )
        for reply in pending:
            if reply.id in self._in_flight:
                continue
            link = self._carrier_link()
            if link is None:
                return  # woken again when a session binds or room frees up
            self._send(link, reply)

    def _send(self, link: Link, reply: Reply) -> None:
        self._in_flight.add(reply.id)
        metrics = self.ctx.metrics

        def on_response(header: Header | None, raw: bytes | None) -> None:
            if header is None or raw is None or header.command_status != 0:
                self._in_flight.discard(reply.id)
                status = "timeout" if header is None else f"{header.command_status:#x}"
                metrics.replies.labels(reply.action.value, "failed").inc()
                logs.event(log, "reply_failed", logging.WARNING, action=reply.action.value,
                           to=logs.phone(reply.destination_addr), status=status)
                return  # stays in the outbox; retried on the next drain
            message_id: str | None = None
            try:
                message_id = pdu_codec.decode(raw).get_str("message_id") or None
            except Exception:
                message_id = None
            metrics.replies.labels(reply.action.value, "sent").inc()
            metrics.replies_pending.dec()
            logs.event(log, "reply_sent", action=reply.action.value,
                       to=logs.phone(reply.destination_addr), message_id=message_id)
            self._to_mark.append((reply.id, message_id))
            if self._marking is None or self._marking.done():
                self._marking = asyncio.ensure_future(self._mark())

        link.send_request(reply_submit(reply), on_response)

    async def _mark(self) -> None:
        """Mark sent replies in the store, whatever accumulated meanwhile in one
        transaction. A reply whose mark fails stays in the outbox and goes out
        again later (at least once, never lost)."""
        while self._to_mark:
            batch, self._to_mark = self._to_mark, []
            try:
                latencies = await self.service.mark_replies_sent(batch)
            except Exception as exc:
                logs.event(log, "reply_mark_failed", logging.WARNING, error=repr(exc),
                           replies=len(batch))
            else:
                # MO committed -> the carrier accepted its reply.
                for seconds in latencies:
                    self.ctx.metrics.reply_seconds.observe(seconds)
            finally:
                for reply_id, _ in batch:
                    self._in_flight.discard(reply_id)
                self._wake.set()

    async def _probe(self) -> None:
        """Without a bound session, check that the carrier's port answers (for /readyz)."""
        if self.upstream_bound:
            return
        now = time.monotonic()
        if now - self._last_probe < _PROBE_SECONDS:
            return
        self._last_probe = now
        host, port = self.ctx.upstream_address
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=self.ctx.upstream_ssl), 2.0
            )
        except (OSError, TimeoutError):
            self._probe_ok = False
            return
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        self._probe_ok = True
