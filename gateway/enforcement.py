"""Opt-out enforcement on the SMPP wire: the proxy's `Enforcer`.

* Submits (submit_sm, data_sm, submit_multi) from senders are decided with
  `OptOutService.decide`, the same call `POST /check` makes. A blocked
  submit is answered locally with a permanent status (or accepted with a
  REJECTD receipt in receipt mode) and never reaches the carrier.
* deliver_sm / data_sm from the carrier that are MOs (not receipts) go to
  `OptOutService.handle_mo`, the same call `POST /mo` makes; the status change
  is committed before the carrier gets its response, and a store failure
  answers ESME_RX_T_APPN so the carrier redelivers.

Everything SMPP-specific about a decision lives here (which fields hold the
destination, the SMS type and the concatenation reference); the domain in
`rules/` knows nothing of it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from prometheus_client import Counter

from gateway import logs
from gateway.config import AccountConfig, Config
from gateway.proxy import Answer, Deliver, Enforcer, Forward, ProxySession, Sessions
from gateway.smpp import pdu as pdu_codec
from gateway.smpp.constants import ESM_UDHI, Command, CommandStatus, is_receipt
from gateway.smpp.errors import SmppError
from gateway.smpp.framing import Header
from gateway.smpp.pdu import DistributionList, Pdu, SmeAddress, Tlv, UnsuccessSme
from gateway.smpp.text import concat_info, decode_short_message
from metrics import HistogramBatch, Metrics
from rules import numbers
from rules.decision import Decider
from rules.model import Action, Decision, InvalidNumber, MoOutcome, SmsType, StoreUnavailable
from rules.service import OptOutService

log = logging.getLogger("optout.enforcement")

_RECEIPTED_MESSAGE_ID = 0x001E
_MESSAGE_STATE = 0x0427
_MESSAGE_STATE_REJECTED = 8
_CONCAT_TTL = 600.0
_CONCAT_MAX = 100_000
# Final: compiled (gateway.speed), C statics and inlined literals rather
# than look-ups in the module's dict (and the enum's) per submit.
_SMS_TYPES: Final = {t.value: t for t in SmsType}
_perf_counter: Final = time.perf_counter
_SUBMIT_SM: Final = 0x00000004  # Command.SUBMIT_SM

#: The `app_id` label of submits from senders without a configured account
#: (`allow_unknown_accounts`): their system_id is the client's choice, so it
#: must not become a label value (one series per guess, or one that cannot
#: be encoded). The decision still uses the system_id as the app ID.
OTHER_APP = "other"


@dataclass(frozen=True, slots=True)
class _Verdict:
    blocked: bool
    expires: float


class ConcatDecisions:
    """Remembers the decision for each concatenated message, so that all its
    segments get the first segment's decision even if the subscriber's status
    changes between them (SPEC section 3). Bounded in size and age."""

    def __init__(self, max_entries: int = _CONCAT_MAX, ttl: float = _CONCAT_TTL) -> None:
        self._entries: OrderedDict[tuple[object, ...], _Verdict] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl

    def get(self, key: tuple[object, ...], now: float) -> bool | None:
        verdict = self._entries.get(key)
        if verdict is None or verdict.expires < now:
            return None
        return verdict.blocked

    def put(self, key: tuple[object, ...], blocked: bool, now: float) -> None:
        self._entries[key] = _Verdict(blocked, now + self._ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


class MessageIds:
    """Message ids for submits the sidecar accepts itself (receipt mode), shaped
    like the carrier's (NOTES 3) so senders can match receipts to submits."""

    def __init__(self) -> None:
        self.style = ("hex", 16)

    def learn(self, message_id: str) -> None:
        if not message_id or len(message_id) > 64:
            return
        if message_id.isdigit():
            self.style = ("dec", len(message_id))
        elif all(c in "0123456789abcdef" for c in message_id):
            self.style = ("hex", len(message_id))
        elif all(c in "0123456789ABCDEF" for c in message_id):
            self.style = ("HEX", len(message_id))

    def new(self) -> str:
        kind, length = self.style
        if kind == "dec":
            return "".join(secrets.choice("0123456789") for _ in range(length))
        value = secrets.token_hex((length + 1) // 2)[:length]
        return value.upper() if kind == "HEX" else value


class Target:
    """A submit's destination as the decision reads it: the subscriber's
    normalised number, its index key and whether it is in scope."""

    __slots__ = ("in_scope", "key", "number", "ton")

    def __init__(self, number: str, key: int, in_scope: bool, ton: int) -> None:
        self.number = number
        self.key = key
        self.in_scope = in_scope
        self.ton = ton  # of the address it was read from (part of the cache key)


class Destinations:
    """`destination_addr` -> `Target`, cached: a campaign sends to the same
    numbers over and over, and normalising, keying and scoping a number is
    several look-ups where this is one. Bounded: when full it starts over
    (a miss costs microseconds; a client cannot grow it). The NPI is not
    part of the key because `numbers.destination` ignores it; invalid
    addresses raise `InvalidNumber` every time and are not kept.
    """

    def __init__(self, limit: int = 65536) -> None:
        self._limit = limit
        self._by_addr: dict[bytes, Target] = {}

    def get(self, addr: bytes, ton: int, npi: int) -> Target:
        target = self._by_addr.get(addr)
        if target is not None and target.ton == ton:
            return target
        number = numbers.destination(addr, ton, npi)
        # `destination` only returns numbers `to_key` accepts (tests/test_numbers.py).
        target = Target(number, numbers.to_key(number), numbers.in_scope(number), ton)
        if len(self._by_addr) >= self._limit:
            self._by_addr.clear()
        self._by_addr[addr] = target
        return target


class SubmitMetrics:
    """The per-submit metrics: `optout_decision_seconds` and
    `optout_submit_total`, added up in plain Python and applied once per
    event-loop turn.

    Why: `labels()` plus `inc()`, or one `Histogram.observe()` (a lock per
    bucket walked), cost as much as the decision itself. A submit counted a
    loop turn later is never visible: the flush runs (via `call_soon`)
    before any later I/O callback, so neither a scrape nor a peer sees a
    submit answered but not counted. Without a running loop the counts apply
    at once. The histogram's buckets are added to with `HistogramBatch`,
    which records exactly what `observe()` per submit would.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._histogram = HistogramBatch(metrics.decision_seconds)
        # Keyed by the SMS type's string value: hashing an enum member runs
        # Python code (Enum.__hash__), hashing a str does not.
        self._children: dict[tuple[str, str, bool], Counter] = {}
        self._counts: dict[tuple[str, str, bool], int] = {}
        # The current run of submits with one app ID, type and verdict (a
        # campaign's submits mostly are): counted in an int, and keyed into
        # `_counts` once per run rather than once per submit.
        self._run = 0
        self._run_app = ""
        self._run_type = SmsType.MARKETING
        self._run_blocked = False
        self._scheduled = False

    def decided(self, seconds: float | None, app_id: str, sms_type: SmsType,
                blocked: bool) -> None:
        """Count one submit; `seconds` is how long its decision took (None when
        an earlier segment's decision was reused)."""
        if seconds is not None:
            self._histogram.add(seconds)
        if (self._run and app_id is self._run_app and sms_type is self._run_type
                and blocked == self._run_blocked):
            self._run += 1
        else:
            self._end_run()
            self._run = 1
            self._run_app = app_id
            self._run_type = sms_type
            self._run_blocked = blocked
        if not self._scheduled:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
                self._scheduled = True
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        """Apply what was added up since the last flush."""
        self._scheduled = False
        self._histogram.flush()
        self._end_run()
        counts, self._counts = self._counts, {}
        for key, n in counts.items():
            self._child(key).inc(n)

    def _end_run(self) -> None:
        if self._run:
            key = (self._run_app, self._run_type._value_, self._run_blocked)
            self._counts[key] = self._counts.get(key, 0) + self._run
            self._run = 0

    def _child(self, key: tuple[str, str, bool]) -> Counter:
        # labels() costs more than the decision itself; keep the children.
        child = self._children.get(key)
        if child is None:
            app_id, sms_type, blocked = key
            child = self._metrics.submit.labels(
                app_id, sms_type, "blocked" if blocked else "allowed")
            self._children[key] = child
        return child


class SmppEnforcer(Enforcer):
    """The `gateway.proxy.Enforcer` that applies opt-outs."""

    def __init__(
        self, config: Config, service: OptOutService, metrics: Metrics, sessions: Sessions
    ) -> None:
        self.config = config
        self.service = service
        self.metrics = metrics
        self.sessions = sessions
        self.concat = ConcatDecisions()
        self.submit_metrics = SubmitMetrics(metrics)
        # `service.decide` itself, minus an interpreted frame per submit.
        self._decider: Decider = service.decider
        self._targets = Destinations()
        self.message_ids = MessageIds()
        smpp = config.smpp
        self._blocked_status = smpp.blocked_status
        self._receipt_mode = smpp.blocked_mode == "receipt"
        self._service_types = {k.encode(): _SMS_TYPES[v] for k, v in
                               smpp.service_type_map.items()}
        # Receipt mode learns the carrier's message-id shape from responses.
        self._on_response = self._learn_message_id if self._receipt_mode else None
        # Every allowed submit gets this one verdict (the received PDU, as is),
        # and every blocked plain submit_sm (the peek's) outside receipt mode
        # this one answer (the relay writes the sequence number into its copy).
        self._forward = Forward(None, self._on_response)
        self._blocked_submit_sm = Answer(pdu_codec.encode(pdu_codec.Pdu(
            Command.SUBMIT_SM_RESP, self._blocked_status, 0)))
        self._out_of_scope_children: dict[str, Counter] = {}
        self._invalid_destination_children: dict[str, Counter] = {}

    # --- submits ------------------------------------------------------------------

    def check_submit(self, session: ProxySession, header: Header, raw: bytes) -> Forward | Answer:
        peek = pdu_codec.peek_submit_sm(raw) if header.command_id == _SUBMIT_SM else None
        if peek is not None:
            # A plain submit_sm (no UDH, no TLVs): nothing about concatenation
            # or a type TLV to consider, so four fields decide it.
            app_id = session.app_id
            label = self._label(session, app_id)
            found = self._service_types.get(peek.service_type) if self._service_types else None
            sms_type = found if found is not None else _SMS_TYPES[session.default_sms_type]
            try:
                target = self._targets.get(peek.destination_addr, peek.dest_addr_ton,
                                           peek.dest_addr_npi)
            except InvalidNumber as exc:
                return self._invalid_destination(session, header, label, exc)
            start = _perf_counter()
            decision = self._decider.verdict_key(app_id, sms_type, target.key, target.in_scope)
            self._count(label, sms_type, decision, _perf_counter() - start)
            if decision.allowed:
                return self._forward
            self._log_blocked(session, app_id, sms_type, target.number)
            if self._receipt_mode:
                return self._accept_with_receipt(session, pdu_codec.decode(raw))
            return self._blocked_submit_sm  # nothing but the header goes into it
        try:
            pdu = pdu_codec.decode(raw)
        except SmppError as exc:
            # We cannot read the destination, so we cannot decide: refuse
            # (fail closed) with the decoding error's own status.
            return Answer(pdu_codec.encode(pdu_codec.Pdu(
                header.command_id | 0x80000000, exc.command_status, header.sequence_number)))
        app_id, sms_type = self._classify(session.account, session.system_id, pdu)
        if header.command_id == Command.SUBMIT_MULTI:
            return self._check_multi(session, pdu, app_id, sms_type)
        try:
            destination = numbers.destination(pdu.get_bytes("destination_addr"),
                                              pdu.get_int("dest_addr_ton"),
                                              pdu.get_int("dest_addr_npi"))
        except InvalidNumber as exc:
            return self._invalid_destination(session, header, self._label(session, app_id), exc)
        blocked = self._blocked(session, pdu, destination, app_id, sms_type)
        if not blocked:
            return self._forward
        return self._refuse(session, header, pdu, app_id, sms_type, destination)

    @staticmethod
    def _label(session: ProxySession, app_id: str) -> str:
        """The `app_id` metric label: configured accounts' only (see OTHER_APP)."""
        return app_id if session.account is not None else OTHER_APP

    def _invalid_destination(self, session: ProxySession, header: Header, label: str,
                             exc: InvalidNumber) -> Answer:
        """Answer a submit whose destination is not a number a carrier could
        route to a subscriber we can check: ESME_RINVDSTADR, never forwarded
        (fail closed; SPEC section 7)."""
        self._invalid_children(label).inc()
        if log.isEnabledFor(logging.DEBUG):
            # The reason only: the address itself may be a phone number.
            logs.event(log, "submit_invalid_destination", logging.DEBUG,
                       system_id=session.system_id, app_id=label,
                       why=str(exc).rpartition(": ")[2])
        return Answer(pdu_codec.encode(pdu_codec.Pdu(
            header.command_id | 0x80000000, CommandStatus.ESME_RINVDSTADR,
            header.sequence_number)))

    def _invalid_children(self, label: str) -> Counter:
        child = self._invalid_destination_children.get(label)
        if child is None:
            child = self.metrics.submit_invalid_destination.labels(label)
            self._invalid_destination_children[label] = child
        return child

    def _refuse(self, session: ProxySession, header: Header, pdu: Pdu, app_id: str,
                sms_type: SmsType, destination: str | None) -> Answer:
        """Answer a blocked submit_sm / data_sm (the metric already counted it)."""
        self._log_blocked(session, app_id, sms_type, destination)
        if self._receipt_mode:
            return self._accept_with_receipt(session, pdu)
        return Answer(pdu_codec.encode(pdu_codec.Pdu(
            header.command_id | 0x80000000, self._blocked_status, header.sequence_number)))

    @staticmethod
    def _log_blocked(session: ProxySession, app_id: str, sms_type: SmsType,
                     destination: str | None) -> None:
        if log.isEnabledFor(logging.DEBUG):  # per blocked submit: a campaign makes many
            logs.event(log, "submit_blocked", logging.DEBUG, system_id=session.system_id,
                       app_id=app_id, sms_type=sms_type.value, to=logs.phone(destination))

    def _classify(
        self, account: AccountConfig | None, system_id: str, pdu: Pdu
    ) -> tuple[str, SmsType]:
        """The application ID and SMS type of a submit (SPEC section 3)."""
        app_id = account.app_id if account is not None else system_id
        tag = self.config.smpp.sms_type_tlv
        if tag is not None:
            value = pdu.get_tlv(tag)
            if value is not None:
                found = _SMS_TYPES.get(value.rstrip(b"\x00").decode("latin-1").strip().lower())
                if found is not None:
                    return app_id, found
        found = self._service_types.get(pdu.get_bytes("service_type"))
        if found is not None:
            return app_id, found
        default = account.default_sms_type if account is not None else "marketing"
        return app_id, _SMS_TYPES[default]

    def _decide(self, app_id: str, label: str, sms_type: SmsType, destination: str) -> Decision:
        """Decide one destination and count it under the metric label `label`
        (the app ID of a configured account, else OTHER_APP)."""
        start = _perf_counter()
        decision = self._decider.decide(app_id, sms_type, destination)
        self._count(label, sms_type, decision, _perf_counter() - start)
        return decision

    def _count(self, label: str, sms_type: SmsType, decision: Decision, seconds: float) -> None:
        """The metrics of one decided submit."""
        if not decision.in_scope:
            child = self._out_of_scope_children.get(label)
            if child is None:
                child = self.metrics.submit_out_of_scope.labels(label)
                self._out_of_scope_children[label] = child
            child.inc()
        self.submit_metrics.decided(seconds, label, sms_type, not decision.allowed)

    def _blocked(
        self, session: ProxySession, pdu: Pdu, destination: str, app_id: str,
        sms_type: SmsType,
    ) -> bool:
        label = self._label(session, app_id)
        esm_class = pdu.get_int("esm_class")
        concat = concat_info(pdu.get_bytes("short_message"), bool(esm_class & ESM_UDHI), pdu.tlvs)
        if concat is None:
            return not self._decide(app_id, label, sms_type, destination).allowed
        key = (session.system_id, pdu.get_bytes("source_addr"), destination, concat.ref,
               concat.total)
        now = time.monotonic()
        earlier = self.concat.get(key, now)
        if earlier is not None:
            self.submit_metrics.decided(None, label, sms_type, earlier)
            return earlier
        blocked = not self._decide(app_id, label, sms_type, destination).allowed
        self.concat.put(key, blocked, now)
        return blocked

    def _check_multi(
        self, session: ProxySession, pdu: Pdu, app_id: str, sms_type: SmsType
    ) -> Forward | Answer:
        allowed: list[SmeAddress | DistributionList] = []
        unsuccess: list[UnsuccessSme] = []
        invalid = 0
        for dest in pdu.destinations():
            if isinstance(dest, SmeAddress):
                try:
                    number = numbers.destination(dest.addr, dest.ton, dest.npi)
                except InvalidNumber:
                    # Fail closed, per destination: the others go on.
                    self._invalid_children(self._label(session, app_id)).inc()
                    unsuccess.append(UnsuccessSme(dest.ton, dest.npi, dest.addr,
                                                  CommandStatus.ESME_RINVDSTADR))
                    invalid += 1
                    continue
                if self._blocked(session, pdu, number, app_id, sms_type):
                    unsuccess.append(UnsuccessSme(dest.ton, dest.npi, dest.addr,
                                                  self._blocked_status))
                    continue
            allowed.append(dest)  # distribution lists are the carrier's to expand
        if not unsuccess:
            return self._forward
        # All refused: the blocked status, unless every one was unreadable.
        status = (CommandStatus.ESME_RINVDSTADR if invalid == len(unsuccess)
                  else self._blocked_status)
        logs.event(log, "submit_multi_blocked", system_id=session.system_id, app_id=app_id,
                   blocked=len(unsuccess) - invalid, invalid=invalid, allowed=len(allowed))
        if not allowed:
            return Answer(pdu_codec.encode(pdu_codec.response_for(
                pdu, status, message_id=b"", no_unsuccess=len(unsuccess),
                unsuccess_sme=unsuccess)))
        pdu.params["dest_address"] = allowed
        pdu.params["number_of_dests"] = len(allowed)

        def add_blocked(resp_raw: bytes) -> bytes:
            try:
                resp = pdu_codec.decode(resp_raw)
            except SmppError:
                return resp_raw
            if resp.command_status != 0 and not resp.params:
                return resp_raw
            merged = resp.unsuccess_smes() + unsuccess
            resp.params["unsuccess_sme"] = merged
            resp.params["no_unsuccess"] = len(merged)
            return pdu_codec.encode(resp)

        return Forward(pdu_codec.encode(pdu), add_blocked)

    def _learn_message_id(self, resp_raw: bytes) -> bytes:
        # Only the first few bytes matter; the body is passed on unchanged.
        if len(resp_raw) > 17:
            end = resp_raw.find(b"\x00", 16)
            if end > 16:
                self.message_ids.learn(resp_raw[16:end].decode("latin-1"))
        return resp_raw

    def _accept_with_receipt(self, session: ProxySession, pdu: Pdu) -> Answer:
        message_id = self.message_ids.new()
        resp = pdu_codec.encode(pdu_codec.response_for(pdu, 0, message_id=message_id.encode()))
        if not pdu.get_int("registered_delivery") & 0x03:
            return Answer(resp)

        def send_receipt() -> None:
            receiver = self.sessions.receiver_for(session.system_id)
            if receiver is None:
                return
            receiver.sender.send_request(_rejected_receipt(pdu, message_id, self._blocked_status),
                                         lambda h, r: None)

        return Answer(resp, after=send_receipt)

    # --- carrier deliveries ---------------------------------------------------------

    async def check_deliver(self, system_id: str, header: Header, raw: bytes) -> Deliver:
        """Handle a deliver_sm / data_sm from the carrier. Whatever goes wrong
        while handling an MO (the store, or a bug) answers the carrier 0x64
        ESME_RX_T_APPN so it redelivers later, and never takes a session
        down: one bad MO must not stop every other opt-out on the bind."""
        try:
            return await self._check_deliver(system_id, header, raw)
        except Exception as exc:
            logs.event(log, "mo_failed", logging.ERROR, system_id=system_id,
                       error=type(exc).__name__)
            log.debug("mo_failed traceback", exc_info=True)
            self.metrics.store_errors.labels("handle_mo").inc()
            return Deliver(forward=False, status=CommandStatus.ESME_RX_T_APPN)

    async def _check_deliver(self, system_id: str, header: Header, raw: bytes) -> Deliver:
        forward = self.config.smpp.forward_mo
        try:
            pdu = pdu_codec.decode(raw)
        except SmppError as exc:
            logs.event(log, "deliver_undecodable", logging.WARNING, error=str(exc))
            return Deliver(forward=True)  # not ours to judge; the sender decides
        esm_class = pdu.get_int("esm_class")
        if is_receipt(esm_class):
            return Deliver(forward=True)
        inbound = _subscriber(pdu.get_bytes("destination_addr"),
                              pdu.get_int("dest_addr_ton"), pdu.get_int("dest_addr_npi"))
        sender = _subscriber(pdu.get_bytes("source_addr"),
                             pdu.get_int("source_addr_ton"), pdu.get_int("source_addr_npi"))
        if inbound is None or sender is None:
            return Deliver(forward=True)
        text = decode_short_message(
            pdu.get_int("data_coding"), pdu.message_bytes(), udhi=bool(esm_class & ESM_UDHI),
            default_alphabet=self.config.smpp.default_alphabet,  # type: ignore[arg-type]
        )
        try:
            outcome = await self.service.handle_mo(
                inbound, sender, text, carrier_ids=_carrier_ids(pdu, system_id)
            )
        except StoreUnavailable as exc:
            self.metrics.store_errors.labels("handle_mo").inc()
            logs.event(log, "mo_not_committed", logging.ERROR, error=str(exc),
                       inbound=logs.phone(inbound), sender=logs.phone(sender))
            return Deliver(forward=False, status=CommandStatus.ESME_RX_T_APPN)
        label = inbound if outcome.handled else "unknown"
        self.metrics.mo.labels(label, outcome.action.value).inc()
        count_mo_extras(self.metrics, label, outcome)
        if outcome.action is not Action.NONE:
            logs.event(log, "mo_handled", inbound=logs.phone(inbound),
                       sender=logs.phone(sender), action=outcome.action.value,
                       handled=outcome.handled, keyword=outcome.keyword,
                       text=logs.text(text))
        return Deliver(forward=forward)


def count_mo_extras(metrics: Metrics, label: str, outcome: MoOutcome) -> None:
    """The near-miss counter and inbound-log failures of one handled MO
    (shared by the SMPP path and `POST /mo`). `label` is the configured
    inbound address or "unknown": never a number from outside the config."""
    if outcome.near_miss:
        metrics.near_miss.labels(label).inc()
    if outcome.log_failed:
        metrics.store_errors.labels("inbound_log").inc()


def _subscriber(addr: bytes, ton: int, npi: int) -> str | None:
    """The normalised number of an SMPP address, or None (alphanumeric, junk)."""
    if not addr:
        return None
    try:
        return numbers.from_smpp(addr, ton, npi)
    except InvalidNumber:
        return None


def _carrier_ids(pdu: Pdu, system_id: str) -> str:
    receipted = pdu.get_tlv(_RECEIPTED_MESSAGE_ID)
    parts = [f"system_id={system_id}", f"seq={pdu.sequence_number}"]
    if receipted:
        message_id = receipted.rstrip(b"\x00").decode("latin-1")
        parts.append(f"message_id={message_id}")
    return " ".join(parts)


def _rejected_receipt(submit: Pdu, message_id: str, status: int) -> bytes:
    """A deliver_sm receipt saying the submit was rejected (SMPP 3.4 appendix B)."""
    stamp = time.strftime("%y%m%d%H%M", time.gmtime())
    text = (f"id:{message_id} sub:001 dlvrd:000 submit date:{stamp} done date:{stamp} "
            f"stat:REJECTD err:{status & 0xFFF:03x} text:").encode()
    receipt = pdu_codec.make_pdu(
        Command.DELIVER_SM,
        source_addr_ton=submit.get_int("dest_addr_ton"),
        source_addr_npi=submit.get_int("dest_addr_npi"),
        source_addr=submit.get_bytes("destination_addr"),
        dest_addr_ton=submit.get_int("source_addr_ton"),
        dest_addr_npi=submit.get_int("source_addr_npi"),
        destination_addr=submit.get_bytes("source_addr"),
        esm_class=0x04,
        short_message=text,
        tlvs=[Tlv(_RECEIPTED_MESSAGE_ID, message_id.encode() + b"\x00"),
              Tlv(_MESSAGE_STATE, bytes([_MESSAGE_STATE_REJECTED]))],
    )
    return pdu_codec.encode(receipt)
