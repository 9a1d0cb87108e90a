"""A small carrier SMSC for demos and tests: acks submits, sends receipts, injects MOs.

``optout-sidecar carrier-sim`` runs it; tests start a :class:`CarrierSim` on
a free loopback port and drive it directly (``inject_mo``,
``wait_for_submits``, ``drop_connections``...). An optional HTTP control
endpoint (aiohttp) lets a person do the same from curl:

* ``POST /mo`` ``{"from", "to", "text", "data_coding"?, "system_id"?}``
  delivers an MO to a bound receiver session and answers with the
  deliver_sm_resp status;
* ``GET /submits`` lists what the simulator received;
* ``GET /sessions`` lists the bound sessions; ``POST /unbind`` and
  ``POST /drop`` unbind or cut every session.

The SMPP side is the same protocol core the sidecar uses
(:mod:`gateway.smpp`): frames are bounded by ``max_pdu_size``, garbage gets
a generic_nack (or the connection is closed when the stream cannot be
framed), and nothing a client sends can crash the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway import logs
from gateway.smpp.constants import (
    BIND_COMMANDS,
    NO_RESPONSE_COMMANDS,
    RESPONSE_BIT,
    Command,
    CommandStatus,
    MessageState,
    Tag,
    command_name,
    status_name,
)
from gateway.smpp.errors import FramingError, PduDecodeError, SmppError
from gateway.smpp.framing import FrameReader, SequenceCounter, encode_simple, parse_header
from gateway.smpp.pdu import Pdu, SmeAddress, Tlv, decode, encode, make_pdu, response_for
from gateway.smpp.session import Role, SessionStateMachine
from gateway.smpp.text import DC_IA5, DC_UCS2, encode_gsm0338, message_text

log = logging.getLogger("gateway.carrier_sim")

C = Command
S = CommandStatus

#: The system_id the simulator answers binds with.
SIM_SYSTEM_ID = b"carrier-sim"

_SUBMITS = frozenset({C.SUBMIT_SM, C.SUBMIT_MULTI, C.DATA_SM})
_RESPONSE_IDS = frozenset(int(c) for c in Command if c.is_response)


@dataclass
class SimConfig:
    """How the simulator listens and behaves."""

    host: str = "127.0.0.1"
    port: int = 2776  # 0 = pick a free port
    control_host: str = "127.0.0.1"
    control_port: int | None = None  # HTTP control endpoint; None = off, 0 = a free port
    credentials: dict[str, str] | None = None  # system_id -> password; None = accept any
    receipts: bool = True  # deliver_sm receipt (stat:DELIVRD) when registered_delivery & 1
    message_id_format: str = "hex"  # "hex" (lowercase) or "dec"
    tls: ssl.SSLContext | None = None
    max_pdu_size: int = 65536
    #: False: take submits (record them) but never answer, like a stuck carrier.
    answer_submits: bool = True
    #: Non-zero: answer every submit with this status (e.g. 0x58 throttled) and
    #: no message_id; the submit is still recorded.
    submit_status: int = 0
    #: Seconds before each submit is answered (the session keeps reading
    #: meanwhile), like a slow carrier with a full window in flight.
    submit_delay: float = 0.0
    #: Non-zero: refuse every bind with this status (e.g. 0x0D bind failed).
    bind_status: int = 0
    response_timeout: float = 5.0  # how long to wait for a deliver_sm_resp / unbind_resp
    #: Submits kept in ``received`` (later ones are still counted and answered),
    #: so a benchmark can use the simulator as a sink without growing memory.
    max_records: int = 100_000


@dataclass
class SubmitRecord:
    """One submit_sm / submit_multi / data_sm the simulator accepted."""

    pdu: Pdu
    raw: bytes
    system_id: str
    message_id: str
    received_at: float = field(default_factory=time.time)


class NoReceiverError(LookupError):
    """No bound receiver (RX or TRX) session to deliver to."""


class _Session:
    """One client connection: reads PDUs, answers them, sends our requests."""

    def __init__(
        self,
        sim: CarrierSim,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.sim = sim
        self.reader = reader
        self.writer = writer
        self.state = SessionStateMachine(Role.SMSC)
        self.frames = FrameReader(sim.config.max_pdu_size)
        self.sequence = SequenceCounter()
        self.system_id = ""
        self.pending: dict[int, asyncio.Future[Pdu]] = {}
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    @property
    def bind_type(self) -> str:
        bind = self.state.bind_command
        return command_name(bind).removeprefix("bind_") if bind is not None else "-"

    # --- reading --------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                try:
                    self.frames.feed(data)
                    while (frame := self.frames.next_frame()) is not None:
                        await self._on_frame(frame)
                except FramingError as exc:
                    logs.event(log, "sim.framing_error", logging.WARNING, peer=self.peer,
                               error=str(exc))
                    self._write_raw(encode_simple(C.GENERIC_NACK, exc.command_status, 0))
                    break
                if self.writer.is_closing():
                    break
                await self.writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            logs.event(log, "sim.connection_lost", logging.INFO, peer=self.peer, error=str(exc))
        except Exception:  # a bug here must cost one connection, never the simulator
            log.exception("sim.session_failed")
        finally:
            self.close()

    async def _on_frame(self, frame: bytes) -> None:
        header = parse_header(frame)
        try:
            pdu = decode(frame)
        except PduDecodeError as exc:
            if header.command_id & RESPONSE_BIT:
                # A malformed answer still answers: its header status is what counts.
                self._on_response(Pdu(header.command_id, header.command_status,
                                      header.sequence_number))
            else:
                self._refuse(header.command_id, header.sequence_number, exc.command_status)
            return
        if pdu.command is None:
            self._refuse(pdu.command_id, pdu.sequence_number, S.ESME_RINVCMDID)
            return
        if pdu.is_response:
            self._on_response(pdu)
            return
        try:
            self.state.receive(pdu.command_id)
        except SmppError as exc:
            self._refuse(pdu.command_id, pdu.sequence_number, exc.command_status)
            return
        await self._on_request(pdu, frame)

    def _on_response(self, pdu: Pdu) -> None:
        with contextlib.suppress(SmppError):  # a stray response is dropped, not fatal
            self.state.receive(pdu.command_id)
        future = self.pending.pop(pdu.sequence_number, None)
        if future is not None and not future.done():
            future.set_result(pdu)

    async def _on_request(self, pdu: Pdu, raw: bytes) -> None:
        command = pdu.command
        if command in BIND_COMMANDS:
            await self._on_bind(pdu)
        elif command is C.ENQUIRE_LINK:
            self._respond(response_for(pdu))
        elif command is C.UNBIND:
            self.sim.unbinds_received += 1
            self._respond(response_for(pdu))
            await self._drain_quietly()
            self.close()
        elif command in _SUBMITS:
            await self._on_submit(pdu, raw)
        elif command is C.QUERY_SM:
            known = self.sim.message_id_known(pdu.get_str("message_id"))
            self._respond(
                response_for(
                    pdu,
                    S.ESME_ROK if known else S.ESME_RQUERYFAIL,
                    message_id=pdu.get_bytes("message_id"),
                    message_state=MessageState.DELIVERED if known else MessageState.UNKNOWN,
                )
            )
        elif command in (C.CANCEL_SM, C.REPLACE_SM):
            self._respond(response_for(pdu))
        else:  # outbind / alert_notification / deliver_sm sent to us: not ours to take
            self._refuse(pdu.command_id, pdu.sequence_number, S.ESME_RINVBNDSTS)

    async def _on_bind(self, pdu: Pdu) -> None:
        self.sim.bind_attempts += 1
        system_id = pdu.get_str("system_id")
        status = self.sim.config.bind_status or self.sim.check_credentials(
            system_id, pdu.get_str("password"))
        if len(self.sim.bind_log) < 10_000:
            self.sim.bind_log.append((time.monotonic(), system_id, status))
        if status != S.ESME_ROK:
            logs.event(log, "sim.bind_refused", logging.INFO, peer=self.peer,
                       system_id=system_id, status=status_name(status))
            # Bodiless, as many SMSCs answer a failed bind (SMPP 3.4 allows it).
            self._write(Pdu(pdu.command_id | RESPONSE_BIT, status, pdu.sequence_number))
            return
        self._respond(
            response_for(
                pdu,
                system_id=SIM_SYSTEM_ID,
                tlvs=[Tlv(Tag.SC_INTERFACE_VERSION, b"\x34")],
            )
        )
        self.state.bound(pdu.command_id)
        self.system_id = system_id
        logs.event(log, "sim.bound", peer=self.peer, system_id=system_id,
                   bind_type=self.bind_type)
        self.sim._notify()
        await self.sim._flush_receipts(self)

    async def _on_submit(self, pdu: Pdu, raw: bytes) -> None:
        message_id = self.sim._record(pdu, raw, self.system_id)
        config = self.sim.config
        if not config.answer_submits:
            return
        if config.submit_status:
            resp = Pdu(pdu.command_id | RESPONSE_BIT, config.submit_status, pdu.sequence_number)
        else:
            resp = response_for(pdu, message_id=message_id.encode("ascii"))
        if config.submit_delay > 0:
            asyncio.get_running_loop().call_later(config.submit_delay, self._respond, resp)
        else:
            self._respond(resp)
        if config.submit_status:
            return
        wants_receipt = pdu.get_int("registered_delivery") & 0x01
        if self.sim.config.receipts and wants_receipt and pdu.command is not C.SUBMIT_MULTI:
            self.sim._spawn(self.sim._receipt_for(pdu, message_id, self.system_id))

    # --- writing --------------------------------------------------------------

    def _respond(self, pdu: Pdu) -> None:
        """Send a response to a request we accepted (state-checked)."""
        try:
            self.state.send(pdu.command_id)
        except SmppError:
            return  # e.g. the session unbound meanwhile; nothing to answer
        self._write(pdu)

    def _refuse(self, command_id: int, sequence_number: int, status: int) -> None:
        """Answer a request we will not take: its *_resp, or generic_nack if it has none.

        Responses (generic_nack included) are never answered, so two peers
        cannot nack each other forever.
        """
        if command_id & RESPONSE_BIT:
            return
        if command_id in NO_RESPONSE_COMMANDS or command_id | RESPONSE_BIT not in _RESPONSE_IDS:
            resp_id = int(C.GENERIC_NACK)
        else:
            resp_id = command_id | RESPONSE_BIT
        self._write_raw(encode_simple(resp_id, status, sequence_number))

    def _write(self, pdu: Pdu) -> None:
        self._write_raw(encode(pdu))

    def _write_raw(self, raw: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(raw)

    async def _drain_quietly(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def request(self, pdu: Pdu, timeout: float) -> Pdu:
        """Send a request of ours (deliver_sm, unbind) and await its response."""
        self.state.send(pdu.command_id)
        pdu.sequence_number = self.sequence.next()
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self.pending[pdu.sequence_number] = future
        try:
            self._write(pdu)
            await self._drain_quietly()
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self.pending.pop(pdu.sequence_number, None)

    def close(self, abort: bool = False) -> None:
        """Close the connection (``abort``: reset it, as a crashing carrier would)."""
        was_bound = self.state.is_bound
        self.state.close()
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("carrier-sim session closed"))
        self.pending.clear()
        if abort:
            self.writer.transport.abort()
        elif not self.writer.is_closing():
            self.writer.close()
        if self in self.sim._sessions:
            self.sim._sessions.discard(self)
            if was_bound:
                logs.event(log, "sim.closed", peer=self.peer, system_id=self.system_id)
            self.sim._notify()


class CarrierSim:
    """The simulator. ``await start()``, use it, ``await stop()``."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        if config.message_id_format not in ("hex", "dec"):
            raise ValueError('message_id_format must be "hex" or "dec"')
        self.port: int = config.port
        self.control_port: int | None = config.control_port
        #: Every submit_sm / submit_multi / data_sm received, decoded (up to max_records).
        self.received: list[Pdu] = []
        #: The same PDUs as their raw bytes, header included.
        self.received_raw: list[bytes] = []
        self.records: list[SubmitRecord] = []
        #: Submits received in total, including those past max_records.
        self.submit_count = 0
        #: Bind requests received (accepted or refused), and unbinds from clients.
        self.bind_attempts = 0
        #: (monotonic time, system_id, status) of the first 10,000 bind requests.
        self.bind_log: list[tuple[float, str, int]] = []
        self.unbinds_received = 0
        self._message_ids = itertools.count(secrets.randbelow(1 << 24) << 8)
        self._known_ids: set[str] = set()
        self._sessions: set[_Session] = set()
        self._tasks: set[asyncio.Task[Any]] = set()  # receipts and other background work
        self._connections: set[asyncio.Task[Any]] = set()  # one per client connection
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        #: Receipts waiting for a receiver session of their system_id.
        self._undelivered: dict[str, list[Pdu]] = {}

    # --- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Listen for SMPP (and HTTP control, if configured)."""
        self._server = await asyncio.start_server(
            self._accept, self.config.host, self.config.port, ssl=self.config.tls
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.config.control_port is not None:
            self._runner = web.AppRunner(self.control_app(), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.config.control_host, self.config.control_port)
            await site.start()
            self.control_port = int(self._runner.addresses[0][1])
        logs.event(log, "sim.listening", host=self.config.host, port=self.port,
                   control_port=self.control_port)

    async def stop(self) -> None:
        """Close every session and stop listening."""
        if self._server is not None:
            self._server.close()
        for session in list(self._sessions):
            session.close(abort=True)
        # Connection handlers end by themselves once their transport is gone;
        # cancelling them instead makes asyncio's stream callback log an error.
        if self._connections:
            _, stuck = await asyncio.wait(list(self._connections), timeout=5.0)
            for task in stuck:
                task.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> CarrierSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(self, reader, writer)
        self._sessions.add(session)
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await session.run()
        finally:
            if task is not None:
                self._connections.discard(task)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- state and waiting --------------------------------------------------------

    def _notify(self) -> None:
        """Wake everything waiting in ``_wait_until``."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()

    @property
    def sessions(self) -> int:
        """How many sessions are bound right now."""
        return sum(1 for s in self._sessions if s.state.is_bound)

    def bound_sessions(self) -> list[dict[str, str]]:
        """The bound sessions: system_id, bind type, peer address."""
        return [
            {"system_id": s.system_id, "bind_type": s.bind_type, "peer": s.peer}
            for s in self._sessions
            if s.state.is_bound
        ]

    def unanswered(self, system_id: str) -> int:
        """Our requests (deliver_sm, unbind) to sessions of ``system_id`` that
        have no response yet: a client that stopped reading leaves them here."""
        return sum(len(s.pending) for s in self._sessions if s.system_id == system_id)

    async def wait_for_sessions(self, n: int, timeout: float = 5.0) -> None:
        """Return once at least ``n`` sessions are bound (TimeoutError otherwise)."""
        await self._wait_until(lambda: self.sessions >= n, timeout)

    async def wait_for_no_sessions(self, timeout: float = 5.0) -> None:
        """Return once no session is bound (TimeoutError otherwise)."""
        await self._wait_until(lambda: self.sessions == 0, timeout)

    async def wait_for_submits(self, n: int, timeout: float = 5.0) -> list[Pdu]:
        """The first ``n`` submits, once that many arrived (TimeoutError otherwise)."""
        await self._wait_until(lambda: self.submit_count >= n, timeout)
        return self.received[:n]

    def check_credentials(self, system_id: str, password: str) -> int:
        """ESME_ROK, ESME_RINVSYSID (unknown id) or ESME_RINVPASWD (wrong password)."""
        creds = self.config.credentials
        if creds is None:
            return S.ESME_ROK
        if system_id not in creds:
            return S.ESME_RINVSYSID
        if not secrets.compare_digest(creds[system_id].encode(), password.encode()):
            return S.ESME_RINVPASWD
        return S.ESME_ROK

    def message_id_known(self, message_id: str) -> bool:
        """Whether the simulator handed out ``message_id``."""
        return message_id in self._known_ids

    def _next_message_id(self) -> str:
        n = next(self._message_ids)
        return f"{n:08x}" if self.config.message_id_format == "hex" else str(n)

    def _record(self, pdu: Pdu, raw: bytes, system_id: str) -> str:
        message_id = self._next_message_id()
        self.submit_count += 1
        if len(self.records) < self.config.max_records:
            self._known_ids.add(message_id)
            self.received.append(pdu)
            self.received_raw.append(raw)
            self.records.append(SubmitRecord(pdu, raw, system_id, message_id))
        if log.isEnabledFor(logging.DEBUG):
            logs.event(log, "sim.submit", logging.DEBUG, system_id=system_id,
                       command=pdu.name, message_id=message_id,
                       source=logs.phone(pdu.get_bytes("source_addr")),
                       destination=logs.phone(pdu.get_bytes("destination_addr")))
        self._notify()
        return message_id

    # --- MO and receipts ------------------------------------------------------------

    def _receiver(self, system_id: str | None) -> _Session | None:
        for session in self._sessions:
            if session.state.can_receive and system_id in (None, session.system_id):
                return session
        return None

    async def inject_mo(
        self,
        source_addr: str,
        destination_addr: str,
        text: str | bytes,
        *,
        data_coding: int = 0,
        esm_class: int = 0,
        source_addr_ton: int = 1,
        source_addr_npi: int = 1,
        dest_addr_ton: int = 1,
        dest_addr_npi: int = 1,
        tlvs: list[Tlv] | None = None,
        system_id: str | None = None,
        timeout: float | None = None,
    ) -> int:
        """Deliver an MO (deliver_sm) to a bound RX/TRX session; return the resp's status.

        Waits up to ``timeout`` (default ``response_timeout``) for a receiver
        session of ``system_id`` (any if ``None``) to be bound, then for its
        deliver_sm_resp. ``text`` as ``str`` is encoded for ``data_coding``
        (0 GSM 03.38, 1 ASCII, 3 Latin-1, 8 UCS-2); ``bytes`` go as they are.
        Over 254 octets it travels in a message_payload TLV. Raises
        :class:`NoReceiverError` or ``TimeoutError``.
        """
        payload = _encode_text(text, data_coding)
        extra = list(tlvs or [])
        short = payload
        if len(payload) > 254:
            short = b""
            extra.append(Tlv(Tag.MESSAGE_PAYLOAD, payload))
        pdu = make_pdu(
            C.DELIVER_SM,
            source_addr_ton=source_addr_ton,
            source_addr_npi=source_addr_npi,
            source_addr=source_addr.encode("latin-1"),
            dest_addr_ton=dest_addr_ton,
            dest_addr_npi=dest_addr_npi,
            destination_addr=destination_addr.encode("latin-1"),
            esm_class=esm_class,
            data_coding=data_coding,
            short_message=short,
            tlvs=extra,
        )
        wait = self.config.response_timeout if timeout is None else timeout
        try:
            await self._wait_until(lambda: self._receiver(system_id) is not None, wait)
        except TimeoutError:
            raise NoReceiverError(
                f"no bound receiver session{f' for {system_id}' if system_id else ''}"
            ) from None
        session = self._receiver(system_id)
        assert session is not None
        resp = await session.request(pdu, wait)
        logs.event(log, "sim.mo_delivered", system_id=session.system_id,
                   source=logs.phone(source_addr), destination=logs.phone(destination_addr),
                   text=logs.text(text), status=status_name(resp.command_status))
        return resp.command_status

    async def inject_pdu(self, pdu: Pdu, *, system_id: str | None = None,
                         timeout: float | None = None) -> int:
        """Send a ready-made deliver_sm / data_sm to a bound receiver session of
        ``system_id`` (any if ``None``); return its response's status.

        For what ``inject_mo`` cannot build: data_sm, receipts with chosen
        text and TLVs. Raises :class:`NoReceiverError` or ``TimeoutError``.
        """
        wait = self.config.response_timeout if timeout is None else timeout
        try:
            await self._wait_until(lambda: self._receiver(system_id) is not None, wait)
        except TimeoutError:
            raise NoReceiverError(
                f"no bound receiver session{f' for {system_id}' if system_id else ''}"
            ) from None
        session = self._receiver(system_id)
        assert session is not None
        resp = await session.request(pdu, wait)
        return resp.command_status

    async def send_receipt(
        self,
        message_id: str,
        source_addr: str,
        destination_addr: str,
        *,
        stat: str = "DELIVRD",
        err: str = "000",
        text: str = "",
        system_id: str | None = None,
        submitted_at: float | None = None,
    ) -> int | None:
        """Send a delivery receipt for ``message_id`` now; its deliver_sm_resp status.

        ``source_addr`` is the handset the message went to (the receipt comes
        *from* it), ``destination_addr`` the original sender. Returns ``None``
        when no receiver session is bound: the receipt then waits for one.
        """
        pdu = build_receipt(message_id, source_addr, destination_addr, stat=stat, err=err,
                            text=text, submitted_at=submitted_at)
        return await self._deliver_receipt(pdu, system_id)

    async def _receipt_for(self, submit: Pdu, message_id: str, system_id: str) -> None:
        text = message_text(submit)[:20]
        with contextlib.suppress(TimeoutError, ConnectionError, SmppError):
            await self.send_receipt(
                message_id,
                submit.get_str("destination_addr"),
                submit.get_str("source_addr"),
                text=text,
                system_id=system_id,
            )

    async def _deliver_receipt(self, pdu: Pdu, system_id: str | None) -> int | None:
        session = self._receiver(system_id)
        if session is None:
            queue = self._undelivered.setdefault(system_id or "", [])
            if len(queue) < 1000:  # bounded: a receiver-less client cannot grow us forever
                queue.append(pdu)
            return None
        resp = await session.request(pdu, self.config.response_timeout)
        return resp.command_status

    async def _flush_receipts(self, session: _Session) -> None:
        if not session.state.can_receive:
            return
        queue = self._undelivered.pop(session.system_id, [])
        for pdu in queue:
            self._spawn(self._deliver_quietly(pdu, session.system_id))

    async def _deliver_quietly(self, pdu: Pdu, system_id: str) -> None:
        with contextlib.suppress(TimeoutError, ConnectionError, SmppError):
            await self._deliver_receipt(pdu, system_id)

    # --- carrier-side failures --------------------------------------------------------

    async def drop_connections(self) -> None:
        """Reset every connection at once, as a carrier that dies would."""
        for session in list(self._sessions):
            session.close(abort=True)
        self._notify()

    async def unbind_all(self) -> None:
        """Send unbind on every bound session, await the unbind_resp briefly, then close.

        Some clients (smpplib) never answer an SMSC's unbind; the connection
        is closed after ``response_timeout`` regardless.
        """

        async def unbind(session: _Session) -> None:
            with contextlib.suppress(TimeoutError, ConnectionError, SmppError):
                await session.request(Pdu(C.UNBIND), self.config.response_timeout)
            session.close()

        await asyncio.gather(*(unbind(s) for s in list(self._sessions) if s.state.is_bound))

    # --- HTTP control -------------------------------------------------------------------

    def control_app(self) -> web.Application:
        """The aiohttp app of the control endpoint (also usable with aiohttp's test client)."""
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get("/", self._http_index)
        app.router.add_post("/mo", self._http_mo)
        app.router.add_get("/submits", self._http_submits)
        app.router.add_get("/sessions", self._http_sessions)
        app.router.add_post("/unbind", self._http_unbind)
        app.router.add_post("/drop", self._http_drop)
        return app

    async def _http_index(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "smpp_port": self.port,
                "sessions": self.sessions,
                "submits": self.submit_count,
                "endpoints": ["POST /mo", "GET /submits", "GET /sessions",
                              "POST /unbind", "POST /drop"],
            }
        )

    async def _http_mo(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _http_error(400, "bad_json", "the body must be a JSON object")
        if not isinstance(body, dict):
            return _http_error(400, "bad_json", "the body must be a JSON object")
        source, dest, text = body.get("from"), body.get("to"), body.get("text")
        data_coding = body.get("data_coding")
        system_id = body.get("system_id")
        if not (isinstance(source, str) and isinstance(dest, str) and isinstance(text, str)):
            return _http_error(422, "invalid", '"from", "to" and "text" must be strings')
        if data_coding is None:
            data_coding = 0 if encode_gsm0338(text) is not None else DC_UCS2
        if not isinstance(data_coding, int) or isinstance(data_coding, bool) or not (
            0 <= data_coding <= 255
        ):
            return _http_error(422, "invalid", '"data_coding" must be an integer 0..255')
        if system_id is not None and not isinstance(system_id, str):
            return _http_error(422, "invalid", '"system_id" must be a string')
        src, src_ton = _smpp_address(source)
        dst, dst_ton = _smpp_address(dest)
        try:
            status = await self.inject_mo(
                src, dst, text, data_coding=data_coding, source_addr_ton=src_ton,
                dest_addr_ton=dst_ton, system_id=system_id,
            )
        except ValueError as exc:
            return _http_error(422, "invalid", str(exc))
        except (NoReceiverError, SmppError) as exc:
            return _http_error(409, "no_receiver", str(exc))
        except (TimeoutError, ConnectionError):
            return _http_error(504, "timeout", "no deliver_sm_resp in time")
        return web.json_response({"command_status": status, "status": status_name(status)})

    async def _http_submits(self, request: web.Request) -> web.Response:
        items = []
        for record in self.records:
            pdu = record.pdu
            item: dict[str, Any] = {
                "command": pdu.name,
                "system_id": record.system_id,
                "message_id": record.message_id,
                "source_addr": pdu.get_str("source_addr"),
                "data_coding": pdu.get_int("data_coding"),
                "esm_class": pdu.get_int("esm_class"),
                "registered_delivery": pdu.get_int("registered_delivery"),
                "text": message_text(pdu),
            }
            if pdu.command is C.SUBMIT_MULTI:
                item["destinations"] = [
                    (d.addr if isinstance(d, SmeAddress) else d.name).decode("latin-1")
                    for d in pdu.destinations()
                ]
            else:
                item["destination_addr"] = pdu.get_str("destination_addr")
            items.append(item)
        return web.json_response({"count": self.submit_count, "submits": items})

    async def _http_sessions(self, request: web.Request) -> web.Response:
        return web.json_response({"sessions": self.bound_sessions()})

    async def _http_unbind(self, request: web.Request) -> web.Response:
        await self.unbind_all()
        return web.json_response({"sessions": self.sessions})

    async def _http_drop(self, request: web.Request) -> web.Response:
        await self.drop_connections()
        return web.json_response({"sessions": self.sessions})


def build_receipt(
    message_id: str,
    source_addr: str,
    destination_addr: str,
    *,
    stat: str = "DELIVRD",
    err: str = "000",
    text: str = "",
    submitted_at: float | None = None,
    done_at: float | None = None,
) -> Pdu:
    """A deliver_sm delivery receipt in the de-facto format (SMPP 3.4 appendix B).

    Carries receipted_message_id and message_state TLVs as well, since some
    ESMEs read those instead of the text.
    """
    now = time.time()
    submitted = now if submitted_at is None else submitted_at
    submit_date = time.strftime("%y%m%d%H%M", time.gmtime(submitted))
    done_date = time.strftime("%y%m%d%H%M", time.gmtime(now if done_at is None else done_at))
    delivered = "001" if stat == "DELIVRD" else "000"
    body = (
        f"id:{message_id} sub:001 dlvrd:{delivered} submit date:{submit_date} "
        f"done date:{done_date} stat:{stat} err:{err} text:{text[:20]}"
    ).encode("ascii", "replace")[:254]
    state = _STAT_STATES.get(stat, MessageState.UNKNOWN)
    return make_pdu(
        C.DELIVER_SM,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr=source_addr.encode("latin-1"),
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=destination_addr.encode("latin-1"),
        esm_class=0x04,
        short_message=body,
        tlvs=[
            Tlv(Tag.RECEIPTED_MESSAGE_ID, message_id.encode("ascii") + b"\x00"),
            Tlv(Tag.MESSAGE_STATE, bytes((state,))),
        ],
    )


_STAT_STATES = {
    "ENROUTE": MessageState.ENROUTE,
    "DELIVRD": MessageState.DELIVERED,
    "EXPIRED": MessageState.EXPIRED,
    "DELETED": MessageState.DELETED,
    "UNDELIV": MessageState.UNDELIVERABLE,
    "ACCEPTD": MessageState.ACCEPTED,
    "UNKNOWN": MessageState.UNKNOWN,
    "REJECTD": MessageState.REJECTED,
}


def _encode_text(text: str | bytes, data_coding: int) -> bytes:
    """MO user data for ``data_coding``; ValueError if the text does not fit it."""
    if isinstance(text, bytes):
        return text
    if data_coding == 0:
        gsm = encode_gsm0338(text)
        if gsm is None:
            raise ValueError("text has characters outside GSM 03.38; use data_coding 8")
        return gsm
    if data_coding == DC_UCS2:
        return text.encode("utf-16-be", "surrogatepass")
    codec = "ascii" if data_coding == DC_IA5 else "latin-1"  # 3 and unknown: Latin-1
    try:
        return text.encode(codec)
    except UnicodeEncodeError:
        raise ValueError(f"text does not fit data_coding {data_coding}") from None


def _smpp_address(address: str) -> tuple[str, int]:
    """``+14155550100`` -> (``14155550100``, TON 1); short codes -> TON 3; else TON 0."""
    if address.startswith("+"):
        return address[1:], 1
    if address.isdigit() and len(address) <= 6:
        return address, 3
    if address.isdigit() and len(address) == 11 and address.startswith("1"):
        return address, 1
    return address, 0


def _http_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def run_carrier_sim(config: SimConfig) -> None:
    """Run the simulator until cancelled (the ``carrier-sim`` CLI command)."""
    sim = CarrierSim(config)
    await sim.start()
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
