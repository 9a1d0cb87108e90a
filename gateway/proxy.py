"""The relay: one sender session paired with one carrier session.

For every sender that binds to the listener, a `ProxySession` opens an
upstream session of the same bind type to the carrier, passes the sender's
credentials through (or the account's mapped ones), and hands the sender the
carrier's bind status. From then on it relays PDUs both ways with sequence
numbers owned per leg (`gateway.link`), except:

* enquire_link is answered locally on each leg (by the link);
* submits (submit_sm, submit_multi, data_sm) go through `Enforcer.check_submit`
  first, which may answer them locally instead of forwarding;
* deliver_sm / data_sm from the carrier go through `Enforcer.check_deliver`,
  which reads MOs for keywords and commits the status change before the
  carrier gets its response;
* unbind on either leg unbinds the other, and a leg that drops closes the
  other, so a sender sees a carrier failure exactly as it would without the
  sidecar and reconnects.

Back-pressure: a PDU is relayed only if the destination leg's window has
room; otherwise the source leg holds (stops reading) until it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

from gateway import logs
from gateway.admission import Admission, Refused
from gateway.bind_guard import BindGuard, source_key
from gateway.config import AccountConfig, Config, parse_hostport
from gateway.link import Link, LinkOwner, LinkSettings, command_name, status_name
from gateway.passwords import PasswordHashError, check_plain, parse_hash, verify_password
from gateway.smpp import pdu as pdu_codec
from gateway.smpp.constants import RESPONSE_BIT, Command, CommandStatus
from gateway.smpp.errors import SmppError
from gateway.smpp.framing import Header, encode_simple
from gateway.smpp.session import Role, SessionStateMachine
from metrics import Metrics

log = logging.getLogger("optout.proxy")

# Final: compiled (gateway.speed), read from C statics rather than looked up
# in the module's dict per PDU.
BIND_COMMANDS: Final = {
    Command.BIND_TRANSMITTER: "tx",
    Command.BIND_RECEIVER: "rx",
    Command.BIND_TRANSCEIVER: "trx",
}
SUBMIT_COMMANDS: Final = frozenset({Command.SUBMIT_SM, Command.SUBMIT_MULTI, Command.DATA_SM})
# SMPP 3.4 section 5.1.2.1 reserves this range for SMSC vendors: relayed as is.
VENDOR_COMMANDS: Final = range(0x00010200, 0x00010300)
KNOWN_COMMANDS: Final = frozenset(int(c) for c in Command)
# Requests that have no response PDU.
NO_RESPONSE: Final = frozenset({Command.OUTBIND, Command.ALERT_NOTIFICATION, Command.GENERIC_NACK})
_UNBIND: Final = 0x00000006  # Command.UNBIND, as a literal the compiler inlines
# Concurrent sessions of a system_id that has no [[accounts]] entry (when
# allow_unknown_accounts lets it bind): the account default.
DEFAULT_MAX_BINDS = 10
# Responses whose body is one C-octet string message_id (empty when we answer).
_MESSAGE_ID_RESPONSES = frozenset(
    {Command.SUBMIT_SM, Command.DELIVER_SM, Command.DATA_SM, Command.SUBMIT_MULTI}
)


def response_body(request_command: int, status: int) -> bytes:
    """The body of a response we make up ourselves. SMPP 3.4 omits the body of
    an error response (e.g. section 4.4.2); deliver_sm_resp and data_sm_resp
    carry an unused, empty message_id."""
    if status != 0:
        return b""
    if request_command == Command.SUBMIT_MULTI:
        return b"\x00\x00"  # empty message_id, no_unsuccess = 0
    if request_command in _MESSAGE_ID_RESPONSES:
        return b"\x00"
    return b""


# --- what enforcement plugs in ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Forward:
    """Relay a PDU and pass `on_response` the carrier's answer to rewrite it.

    `raw` is the PDU to relay instead of the one received (e.g. submit_multi
    minus blocked destinations), or None to relay the received one as it is;
    the latter lets an enforcer return one shared `Forward` for every allowed
    submit instead of allocating one per PDU."""

    raw: bytes | None = None
    on_response: Callable[[bytes], bytes] | None = None


#: Relay the received PDU unchanged, nothing to rewrite in the response.
FORWARD = Forward()


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer locally with this response PDU (sequence number is set later);
    `after` runs once the answer is written (e.g. to emit a REJECTD receipt)."""

    raw: bytes
    after: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class Deliver:
    """What to do with a deliver_sm / data_sm from the carrier: forward it to
    the sender (if bound to receive), or answer the carrier with `status`."""

    forward: bool
    status: int = 0


class Enforcer:
    """What enforcement plugs into the relay. This base enforces nothing:
    every submit is relayed, every deliver forwarded (`PassThrough`); the
    sidecar's enforcer overrides both. A class to subclass rather than a
    Protocol: compiled (gateway.speed), the relay's once-per-submit
    `check_submit` is then a native call instead of a method look-up."""

    def check_submit(self, session: ProxySession, header: Header, raw: bytes) -> Forward | Answer:
        """Decide a sender's submit_sm / submit_multi / data_sm."""
        return FORWARD

    async def check_deliver(self, system_id: str, header: Header, raw: bytes) -> Deliver:
        """Handle a carrier deliver_sm / data_sm (MO or receipt) that arrived on a
        session of `system_id`, before it is relayed."""
        return Deliver(forward=True)


class PassThrough(Enforcer):
    """No enforcement: the plain relay."""


# --- the registry of live sessions ---------------------------------------------


@dataclass
class Sessions:
    """Bound sessions, so that receipts made by the sidecar reach a receiver of
    the right account and confirmations find a transmitter upstream."""

    by_system_id: dict[str, set[ProxySession]] = field(default_factory=dict)
    on_upstream_change: list[Callable[[], None]] = field(default_factory=list)

    def add(self, session: ProxySession) -> None:
        self.by_system_id.setdefault(session.system_id, set()).add(session)
        for cb in self.on_upstream_change:
            cb()

    def remove(self, session: ProxySession) -> None:
        group = self.by_system_id.get(session.system_id)
        if group is not None:
            group.discard(session)
            if not group:
                del self.by_system_id[session.system_id]
        for cb in self.on_upstream_change:
            cb()

    def receiver_for(self, system_id: str) -> ProxySession | None:
        for s in self.by_system_id.get(system_id, ()):
            if s.bind_type in ("rx", "trx") and s.is_bound:
                return s
        return None

    def transmitters(self) -> list[ProxySession]:
        return [
            s for group in self.by_system_id.values() for s in group
            if s.bind_type in ("tx", "trx") and s.is_bound
        ]

    def all(self) -> list[ProxySession]:
        return [s for group in self.by_system_id.values() for s in group]


@dataclass
class RelayContext:
    """What every session shares: configuration, metrics and collaborators."""

    config: Config
    metrics: Metrics
    enforcer: Enforcer
    sessions: Sessions
    upstream_address: tuple[str, int]
    upstream_ssl: ssl.SSLContext | None = None
    # Sender connections per source and pool ([smpp] max_connections*).
    admission: Admission[ProxySession] = field(init=False)
    # Failed binds per (source, system_id), and the lockout they lead to
    # (a test passes one with a fake clock).
    bind_guard: BindGuard = field(default_factory=BindGuard)
    # Sessions per system_id, bound or binding ([[accounts]] max_binds).
    binds: dict[str, int] = field(default_factory=dict)
    # Password hashes are checked in worker threads, this many at once, so a
    # burst of binds cannot take every thread (or every core).
    hash_checks: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    # Log lines for refusals a client can repeat at will.
    log_throttle: logs.Throttle = field(default_factory=logs.Throttle)
    # Every sender session whose connection is open, bound or not: a drain
    # reaches all of them.
    live: set[ProxySession] = field(default_factory=set)

    def __post_init__(self) -> None:
        smpp = self.config.smpp
        self.admission = Admission(
            max_connections=smpp.max_connections,
            max_connections_per_ip=smpp.max_connections_per_ip,
            max_unbound_connections=smpp.max_unbound_connections,
            max_unbound_connections_per_ip=smpp.max_unbound_connections_per_ip,
        )

    @property
    def connections(self) -> int:
        """Sender connections open now, bound or not."""
        return self.admission.total


class DrainDeadline:
    """When a graceful stop (SIGTERM) must be over. Shared by every session so a
    second signal can cut them all short at once (`hurry`)."""

    def __init__(self, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.deadline = self._loop.time() + max(0.0, seconds)

    def remaining(self) -> float:
        return max(0.0, self.deadline - self._loop.time())

    def expired(self) -> bool:
        return self._loop.time() >= self.deadline

    def hurry(self) -> None:
        self.deadline = self._loop.time()


#: How often a drain looks at what is still outstanding.
_DRAIN_POLL = 0.02


# --- one sender <-> carrier pair ---------------------------------------------------


class _AwaitedResponse:
    """What a relayed request's response is for: it goes back to `source`
    under the sequence number the source gave the request, rewritten first
    if the enforcer asked. The `Link` calls it with the response, or with
    `(None, None)` on a timeout or a closed leg.

    A class rather than a closure over `_relay_request`'s locals: one object
    per relayed PDU instead of a closure and its cell environment.
    """

    __slots__ = ("header", "rewrite", "session", "source")

    def __init__(self, session: ProxySession, source: Link, header: Header,
                 rewrite: Callable[[bytes], bytes] | None) -> None:
        self.session = session
        self.source = source
        self.header = header
        self.rewrite = rewrite

    def __call__(self, resp_header: Header | None, resp: bytes | None) -> None:
        if resp is None:
            # No answer in time (or the leg went away): tell the source the
            # outcome is unknown with a temporary error, so it may retry.
            if not self.session._closing:
                self.session._reject(self.source, self.header, CommandStatus.ESME_RSYSERR)
            return
        rewrite = self.rewrite
        self.source.send_response(rewrite(resp) if rewrite is not None else resp,
                                  self.header.sequence_number)


class ProxySession:
    """A sender's SMPP session and the carrier session opened for it."""

    def __init__(self, ctx: RelayContext) -> None:
        self.ctx = ctx
        smpp = ctx.config.smpp
        self.sender = Link(
            LinkSettings("sender", smpp.window, smpp.response_timeout,
                         smpp.enquire_link_interval, smpp.max_pdu_size),
            self, ctx.metrics,
        )
        self.upstream: Link | None = None
        self.state = SessionStateMachine(Role.SMSC)
        self.account: AccountConfig | None = None
        # Copied from the account at bind, because enforcement reads them per
        # submit: the application ID (the system_id when no account is
        # configured) and the SMS type of submits that name none.
        self.app_id = ""
        self.default_sms_type = "marketing"
        self.system_id = ""
        self.bind_type: str | None = None
        # Where the sender connects from, as per-IP limits count it.
        self.source = "?"
        # The system_id whose max_binds slot this session holds, if any.
        self._bind_slot: str | None = None
        self._refused = False  # closed on arrival by a connection limit
        self._binding = False
        self._closing = False
        self._draining = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._bind_deadline = asyncio.get_running_loop().call_later(
            smpp.bind_timeout, self._bind_timed_out
        )
        self.sender.on_connect = self._connected
        ctx.live.add(self)

    def identify(self, system_id: str, account: AccountConfig | None) -> None:
        """Who the sender is, once its bind is accepted (`account` None when
        `allow_unknown_accounts` let an unconfigured system_id in)."""
        self.system_id = system_id
        self.account = account
        if account is not None:
            self.app_id = account.app_id
            self.default_sms_type = account.default_sms_type
        else:
            self.app_id = system_id
            self.default_sms_type = "marketing"

    @property
    def is_bound(self) -> bool:
        return self.bind_type is not None and not self._closing

    # --- LinkOwner -----------------------------------------------------------

    def link_request(self, link: Link, header: Header, raw: bytes) -> None:
        if link is self.sender:
            self._from_sender(header, raw)
        else:
            self._from_upstream(header, raw)

    def link_room(self, link: Link) -> None:
        # The leg that had no room now has some: let the other leg read again.
        other = self.upstream if link is self.sender else self.sender
        if other is not None:
            other.hold(False)

    def link_closed(self, link: Link, reason: str) -> None:
        if link is self.sender:
            self.ctx.admission.release(self)
            self.ctx.live.discard(self)
            if self._refused:
                self._bind_deadline.cancel()
                return  # logged (throttled) when it was refused
        if link is not self.sender and link is not self.upstream:
            return  # the leg of a bind the carrier refused (the sender's is closing too)
        side = "sender" if link is self.sender else "upstream"
        logs.event(log, "leg_closed", side=side, system_id=self.system_id, reason=reason)
        if self._draining and link is self.sender:
            return  # drain() still unbinds the carrier leg politely, then closes
        self._close(f"{side} leg closed: {reason}")

    # --- sender -> carrier -----------------------------------------------------

    def _from_sender(self, header: Header, raw: bytes) -> None:
        cmd = header.command_id
        if self._draining and cmd != _UNBIND:
            # We asked the sender to unbind: a request sent anyway is handed
            # back with a temporary status (senders retry 0x08), never 0x04,
            # which some treat as final.
            self._reject(self.sender, header, CommandStatus.ESME_RSYSERR)
            return
        try:
            self.state.receive(cmd)
        except SmppError as exc:
            if cmd in VENDOR_COMMANDS and self.is_bound:
                self._relay_request(self.sender, header, raw)
                return
            self._reject(self.sender, header, exc.command_status)
            self.sender.protocol_violation("request_refused", command=command_name(cmd),
                                           status=status_name(exc.command_status))
            return
        # The branches are disjoint; submits, the bulk of the traffic, first.
        if cmd in SUBMIT_COMMANDS:
            verdict = self.ctx.enforcer.check_submit(self, header, raw)
            if isinstance(verdict, Answer):
                self.sender.send_response(verdict.raw, header.sequence_number)
                if verdict.after is not None:
                    verdict.after()
            else:
                self._relay_request(self.sender, header,
                                    raw if verdict.raw is None else verdict.raw,
                                    verdict.on_response)
        elif cmd in BIND_COMMANDS:
            if self._binding:
                self._reject(self.sender, header, CommandStatus.ESME_RALYBND)
                self.sender.protocol_violation("request_refused", command=command_name(cmd),
                                               status="ESME_RALYBND")
                return
            self.ctx.admission.bind_started(self)
            self._start_task(self._bind(header, raw))
        elif cmd == _UNBIND:
            self._start_task(self._unbind_from(self.sender, header))
        else:
            self._relay_request(self.sender, header, raw)

    # --- carrier -> sender -------------------------------------------------------

    def _from_upstream(self, header: Header, raw: bytes) -> None:
        assert self.upstream is not None
        cmd = header.command_id
        if cmd == _UNBIND:
            self._start_task(self._unbind_from(self.upstream, header))
        elif cmd in (Command.DELIVER_SM, Command.DATA_SM):
            if self._draining:
                # Handed back untouched (0x64: the carrier redelivers later, to
                # whichever sidecar is up then): nothing is half done.
                self.upstream.answer(header, CommandStatus.ESME_RX_T_APPN)
                return
            self._start_task(self._deliver(header, raw))
        elif cmd == Command.OUTBIND:
            # Outbind asks an ESME to bind; our upstream sessions are already bound.
            logs.event(log, "outbind_ignored", logging.WARNING, system_id=self.system_id)
        elif cmd == Command.ALERT_NOTIFICATION:
            if self.bind_type in ("rx", "trx"):
                self.sender.send_oneway(raw)
        elif cmd in VENDOR_COMMANDS:
            self._relay_request(self.upstream, header, raw)
        else:
            status = (CommandStatus.ESME_RINVBNDSTS if cmd in KNOWN_COMMANDS
                      else CommandStatus.ESME_RINVCMDID)
            self._reject(self.upstream, header, status)
            self.upstream.protocol_violation("request_refused", command=command_name(cmd),
                                             status=status_name(status))

    async def _deliver(self, header: Header, raw: bytes) -> None:
        upstream = self.upstream
        assert upstream is not None
        decision = await self.ctx.enforcer.check_deliver(self.system_id, header, raw)
        if decision.forward and self.bind_type in ("rx", "trx") and not self._closing:
            self._relay_request(upstream, header, raw)
        else:
            upstream.answer(header, decision.status, response_body(header.command_id,
                                                                   decision.status))

    # --- relaying -------------------------------------------------------------------

    def _relay_request(
        self,
        source: Link,
        header: Header,
        raw: bytes,
        rewrite: Callable[[bytes], bytes] | None = None,
    ) -> None:
        dest = self.upstream if source is self.sender else self.sender
        if dest is None or self._closing:
            self._reject(source, header, CommandStatus.ESME_RSYSERR)
            return
        if not dest.relay_request(raw, header.command_id,
                                  _AwaitedResponse(self, source, header, rewrite)):
            source.hold(True)

    def _reject(self, link: Link, header: Header, status: int) -> None:
        cmd = header.command_id
        if cmd in KNOWN_COMMANDS and not cmd & RESPONSE_BIT and cmd not in NO_RESPONSE:
            link.answer(header, status, response_body(cmd, status))
        else:
            link.send_response(
                encode_simple(Command.GENERIC_NACK, status, header.sequence_number),
                header.sequence_number,
            )

    # --- bind / unbind -------------------------------------------------------------

    async def _bind(self, header: Header, raw: bytes) -> None:
        self._binding = True
        try:
            await self._do_bind(header, raw)
        finally:
            self._binding = False

    async def _do_bind(self, header: Header, raw: bytes) -> None:
        """Decide a sender's bind. In order: the lockout, the account, the
        sender's password (when the account has one), max_binds, then the
        carrier. Every refusal is answered, counted, logged and followed by
        closing the connection (a retry needs a new connection)."""
        ctx = self.ctx
        cmd = Command(header.command_id)
        try:
            bind = pdu_codec.decode(raw)
        except SmppError as exc:
            self._bind_failed(header, exc.command_status, "malformed", "", counts=False)
            return
        system_id = _text(bind.params.get("system_id", b""))
        if ctx.bind_guard.locked(self.source, system_id):
            self._bind_failed(header, CommandStatus.ESME_RBINDFAIL, "locked_out", system_id,
                              counts=False)
            return
        account = ctx.config.account(system_id)
        if account is None and not ctx.config.smpp.allow_unknown_accounts:
            self._bind_failed(header, CommandStatus.ESME_RINVSYSID, "unknown_system_id",
                              system_id)
            return
        password = bind.params.get("password", b"")
        password_ok = account is None or await self._password_ok(
            account, password if isinstance(password, bytes) else str(password).encode())
        if self._closing:
            return
        # Again, whatever the password: binds sent at once on many connections
        # all passed the first check while the others' failures were still
        # being decided. Answering the later ones "locked" keeps a burst to
        # the same number of informative guesses as a sequence.
        if ctx.bind_guard.locked(self.source, system_id):
            self._bind_failed(header, CommandStatus.ESME_RBINDFAIL, "locked_out", system_id,
                              counts=False)
            return
        if not password_ok:
            self._bind_failed(header, CommandStatus.ESME_RINVPASWD, "bad_password", system_id)
            return
        limit = account.max_binds if account is not None else DEFAULT_MAX_BINDS
        if ctx.binds.get(system_id, 0) >= limit:
            self._bind_failed(header, CommandStatus.ESME_RBINDFAIL, "max_binds", system_id,
                              counts=False)
            return
        ctx.binds[system_id] = ctx.binds.get(system_id, 0) + 1
        self._bind_slot = system_id
        if account is not None and account.upstream_system_id is not None:
            bind.params["system_id"] = account.upstream_system_id.encode()
            if account.upstream_password is not None:
                bind.params["password"] = account.upstream_password.encode()
            raw = pdu_codec.encode(bind)

        upstream = await self._connect_upstream()
        if upstream is None:
            self._bind_failed(header, CommandStatus.ESME_RBINDFAIL, "carrier_unavailable",
                              system_id, counts=False)
            return
        if ctx.bind_guard.locked(self.source, system_id):  # locked while we connected
            self.upstream = None
            upstream.close("pair locked out")
            self._bind_failed(header, CommandStatus.ESME_RBINDFAIL, "locked_out", system_id,
                              counts=False)
            return
        try:
            resp_header, resp = await asyncio.wait_for(upstream.request(raw),
                                                       ctx.config.smpp.bind_timeout)
        except TimeoutError:
            resp_header, resp = None, None
        if resp is None or resp_header is None:
            self.upstream = None
            upstream.close("no bind response")
            self._bind_failed(header, CommandStatus.ESME_RBINDFAIL, "carrier_unavailable",
                              system_id, counts=False)
            return
        if resp_header.command_status != CommandStatus.ESME_ROK:
            # The carrier's refusal passes back as it is (e.g. ESME_RINVPASWD).
            self.upstream = None
            upstream.close("bind refused by carrier")
            self._bind_failed(header, resp_header.command_status, "carrier_refused", system_id,
                              resp=resp)
            return
        if self._closing:
            upstream.close("sender left during bind")
            return
        self.state.bound(cmd)
        self.identify(system_id, account)
        self.bind_type = BIND_COMMANDS[cmd]
        self._bind_deadline.cancel()
        ctx.bind_guard.succeeded(self.source, system_id)
        ctx.admission.bound(self)
        ctx.sessions.add(self)
        ctx.metrics.sessions.labels("sender", self.bind_type).inc()
        ctx.metrics.sessions.labels("upstream", self.bind_type).inc()
        logs.event(log, "bound", system_id=system_id, bind_type=self.bind_type,
                   peer=self.sender.peer)
        self.sender.send_response(resp, header.sequence_number)

    async def _password_ok(self, account: AccountConfig, password: bytes) -> bool:
        """The sender's password against the account's own (True when the
        account has none: then the carrier decides)."""
        if account.password is not None:
            return check_plain(password, account.password)
        if account.password_hash is None:
            return True
        try:
            stored = parse_hash(account.password_hash)
        except PasswordHashError:  # the config check refuses these; fail closed anyway
            return False
        async with self.ctx.hash_checks:
            return await asyncio.to_thread(verify_password, password, stored)

    def _bind_failed(self, header: Header, status: int, reason: str, system_id: str, *,
                     counts: bool = True, resp: bytes | None = None) -> None:
        """Answer a refused bind (with the carrier's `resp` when it refused),
        count it toward the (source, system_id) lockout when `counts`, log it
        and close the connection.

        Not counted toward the lockout: binds refused while locked (the
        lockout is not extended), max_binds and carrier_unavailable (the
        sender's credentials were not what failed) and malformed PDUs (no
        system_id to count them under)."""
        ctx = self.ctx
        if resp is not None:
            self.sender.send_response(resp, header.sequence_number)
        else:
            self._reject(self.sender, header, status)
        ctx.metrics.bind_failures.labels(reason).inc()
        # system_id is the client's text: shortened, never a password.
        fields: dict[str, object] = {"system_id": system_id[:16], "peer": self.sender.peer,
                                     "reason": reason, "status": status_name(status)}
        if reason == "locked_out":
            # A locked-out client may retry as fast as it likes: one line per
            # interval, with the count of those not logged.
            silenced = ctx.log_throttle.allow("bind_locked_out")
            if silenced is not None:
                logs.event(log, "bind_refused", logging.WARNING, **fields,
                           not_logged_since_last=silenced)
        else:
            logs.event(log, "bind_refused", logging.WARNING, **fields)
        if counts and ctx.bind_guard.failed(self.source, system_id):
            logs.event(log, "bind_lockout", logging.WARNING, system_id=system_id[:16],
                       source=self.source, failures=ctx.bind_guard.threshold,
                       seconds=ctx.bind_guard.lockout)
        self._close(f"bind refused: {reason}")

    async def _connect_upstream(self) -> Link | None:
        link = await connect_upstream(self.ctx, self)
        if link is None:
            return None
        if self._closing:
            link.close("sender left")
            return None
        self.upstream = link
        return link

    async def _unbind_from(self, link: Link, header: Header) -> None:
        """`link`'s peer asked to unbind: unbind the other leg, then answer and close."""
        other = self.upstream if link is self.sender else self.sender
        self._closing = True
        if other is not None and self.bind_type is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(other.request(encode_simple(Command.UNBIND, 0, 0)),
                                       self.ctx.config.smpp.response_timeout)
        link.answer(header, CommandStatus.ESME_ROK)
        self._close("unbind")

    async def drain(self, drain: DrainDeadline) -> None:
        """Stop gracefully (SIGTERM): ask the sender to unbind, let the work in
        flight finish until the deadline (the carrier's answers to submits, the
        sender's to MOs, MOs being committed), hand back whatever is still
        outstanding with a temporary status, unbind the carrier leg, close.

        Requests arriving meanwhile are handed back at once: the sender's with
        0x08, the carrier's deliver_sm with 0x64, so each retries later."""
        if self.bind_type is None or self._closing:
            self._close("sidecar stopping")
            return
        self._draining = True
        sender, upstream = self.sender, self.upstream
        logs.event(log, "draining", system_id=self.system_id,
                   submits_outstanding=upstream.outstanding if upstream else 0,
                   delivers_outstanding=sender.outstanding)
        unbind_sent = sender.request(encode_simple(Command.UNBIND, 0, 0))
        # Polled: "nothing outstanding" spans both legs and the MO tasks, and
        # a 20 ms step is nothing next to a drain of seconds.
        while not drain.expired() and not sender.closed.done():
            if upstream is None or upstream.closed.done():
                break
            to_sender = sender.outstanding - (0 if unbind_sent.done() else 1)
            if not upstream.outstanding and to_sender <= 0 and not self._tasks:
                break
            await asyncio.sleep(_DRAIN_POLL)
        handed_back = ((upstream.outstanding if upstream else 0) + sender.outstanding
                       - (0 if unbind_sent.done() else 1))
        if upstream is not None:
            upstream.fail_pending()  # the sender gets 0x08 for each submit
        sender.fail_pending()  # the carrier gets 0x08 for each MO not yet answered
        if upstream is not None and not upstream.closed.done():
            unbound = upstream.request(encode_simple(Command.UNBIND, 0, 0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(unbound, drain.remaining())
        logs.event(log, "drained", system_id=self.system_id, handed_back=handed_back,
                   sender_unbound=unbind_sent.done() and unbind_sent.result()[0] is not None)
        self._close("sidecar stopping")

    def _connected(self, link: Link) -> None:
        """The sender's connection is made: check it against the per-source
        pools, and close it (or make room for it) as `Admission` says."""
        transport = link.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        self.source = source_key(str(peer[0]) if isinstance(peer, tuple) else str(peer))
        verdict = self.ctx.admission.admit(self.source, self)
        if isinstance(verdict, Refused):
            self._refused = True
            _connection_refused(self.ctx, verdict.reason, self.source)
            link.close(f"refused: {verdict.reason}")
            return
        if verdict.evict is not None:
            _connection_refused(self.ctx, "max_unbound_connections", verdict.evict.source)
            verdict.evict._refused = True
            verdict.evict.sender.close("closed for a newer connection: max_unbound_connections")

    def _bind_timed_out(self) -> None:
        if self.bind_type is None and not self._binding:
            self.sender.close("no bind in time")

    # --- teardown -------------------------------------------------------------------

    def _close(self, reason: str) -> None:
        if self._closing and self.sender.closed.done() and (
            self.upstream is None or self.upstream.closed.done()
        ):
            return
        was_bound = self.bind_type is not None
        self._closing = True
        self._bind_deadline.cancel()
        if self._bind_slot is not None:
            left = self.ctx.binds.get(self._bind_slot, 1) - 1
            if left > 0:
                self.ctx.binds[self._bind_slot] = left
            else:
                self.ctx.binds.pop(self._bind_slot, None)
            self._bind_slot = None
        if was_bound:
            assert self.bind_type is not None
            self.ctx.metrics.sessions.labels("sender", self.bind_type).dec()
            self.ctx.metrics.sessions.labels("upstream", self.bind_type).dec()
            self.ctx.sessions.remove(self)
            self.bind_type = None
            logs.event(log, "session_closed", system_id=self.system_id, reason=reason)
        self.sender.close(reason)
        if self.upstream is not None:
            self.upstream.close(reason)
        # Tasks in flight are not cancelled: an MO task may be between the
        # store's commit and the in-memory index update, and every task is
        # bounded by a timeout anyway.

    def _start_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logs.event(log, "session_task_failed", logging.ERROR, system_id=self.system_id,
                       error=repr(task.exception()))
            self._close("internal error")


async def connect_upstream(ctx: RelayContext, owner: LinkOwner) -> Link | None:
    """A new TCP (or TLS) leg to the carrier, owned by `owner`; None (logged)
    if the carrier cannot be reached within bind_timeout."""
    smpp = ctx.config.smpp
    host, port = ctx.upstream_address
    settings = LinkSettings("upstream", smpp.window, smpp.response_timeout,
                            smpp.enquire_link_interval, smpp.max_pdu_size)
    loop = asyncio.get_running_loop()
    try:
        _, link = await asyncio.wait_for(
            loop.create_connection(lambda: Link(settings, owner, ctx.metrics), host, port,
                                   ssl=ctx.upstream_ssl),
            smpp.bind_timeout,
        )
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        logs.event(log, "upstream_connect_failed", logging.WARNING,
                   upstream=f"{host}:{port}", error=str(exc) or type(exc).__name__)
        return None
    return link


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value)


async def start_listener(
    ctx: RelayContext, host: str, port: int, tls: ssl.SSLContext | None = None,
    *, reuse_port: bool = False,
) -> asyncio.Server:
    """Accept sender connections; each gets a ProxySession. Past
    `[smpp] max_connections` a connection is closed at once, so a client
    opening sockets in a loop cannot make the sidecar allocate without bound;
    the per-source pools (`gateway.admission`) are checked once the peer's
    address is known."""
    loop = asyncio.get_running_loop()
    limit = ctx.config.smpp.max_connections

    def accept() -> asyncio.Protocol:
        if ctx.admission.total >= limit:
            return _Refused(ctx)
        return ProxySession(ctx).sender

    # reuse_port: worker processes each bind the same port and the kernel
    # spreads new connections over them (gateway.workers).
    return await loop.create_server(accept, host, port, ssl=tls,
                                    reuse_port=reuse_port or None)


def _connection_refused(ctx: RelayContext, reason: str, source: str) -> None:
    ctx.metrics.connections_refused.labels(reason).inc()
    silenced = ctx.log_throttle.allow(f"connection_refused:{reason}")
    if silenced is not None:
        logs.event(log, "connection_refused", logging.WARNING, reason=reason, source=source,
                   not_logged_since_last=silenced)


class _Refused(asyncio.Protocol):
    """A connection over max_connections: closed as soon as it is made."""

    def __init__(self, ctx: RelayContext) -> None:
        self.ctx = ctx

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        _connection_refused(self.ctx, "max_connections",
                            source_key(str(peer[0]) if isinstance(peer, tuple) else str(peer)))
        transport.close()


def upstream_address(config: Config) -> tuple[str, int]:
    assert config.upstream.address is not None
    return parse_hostport(config.upstream.address, "upstream.address")


__all__ = [
    "FORWARD",
    "Answer",
    "Deliver",
    "DrainDeadline",
    "Enforcer",
    "Forward",
    "PassThrough",
    "ProxySession",
    "RelayContext",
    "Sessions",
    "command_name",
    "start_listener",
]
