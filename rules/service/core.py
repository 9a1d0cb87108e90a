"""The service's shared state and helpers: the in-memory copies of the
store (the unsubscribed index, the addresses with their rules, the rule
book), the validation of arguments, cursors, and the synchronous decision.
The parts in `addresses`, `subscribers` and `bulk` build on `ServiceCore`;
`rules.service.OptOutService` puts them together."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeVar

import numpy as np

from rules import decision, numbers
from rules.compliance import address_warnings
from rules.index import UnsubscribedIndex
from rules.model import (
    BlockingRule,
    Decision,
    InboundAddress,
    InvalidNumber,
    InvalidValue,
    Keywords,
    MatchMode,
    NotFound,
    ReasonRequired,
    Replies,
    SmsType,
    Source,
    StoreUnavailable,
    Unsubscription,
    require_scalar_text,
    scalar_text,
)
from rules.replies import ProgramInfo
from rules.service.feed import ServiceFeed
from rules.service.snapshots import SnapshotKeeper
from rules.store import AddressRow, Store, Tx, UnsubRow

__all__ = ["MAX_PAGE", "ImportReport", "ServiceCore", "Stats"]

log = logging.getLogger(__name__)

MAX_PAGE: Final = 1000
"""Largest `limit` a listing accepts."""
IMPORT_BATCH: Final = 50_000
"""Rows per import transaction: big enough for executemany to shine, small
enough that an MO waiting for the write lock waits well under a second."""
MAX_IMPORT_ERRORS: Final = 10_000
"""Bad rows listed in an `ImportReport` (all are counted)."""
MAX_APP_ID_CHARS: Final = 64
MAX_DESCRIPTION_CHARS: Final = 500
MAX_RAW_TEXT_CHARS: Final = 4096
"""MO text kept in a record: an SMS is at most ~1600 characters (ten
segments); anything longer is cut so a hostile sender cannot grow the store."""
MAX_CARRIER_IDS_CHARS: Final = 512
_IMPORT_YIELD_ROWS: Final = 2000
_IMPORT: Final = Source.IMPORT.value
_RECORD_PAGE: Final = 1000
_EXPORT_PAGE: Final = 5000

T = TypeVar("T")

_DEFAULT_PROGRAM: Final = ProgramInfo()


@dataclass(frozen=True, slots=True)
class ImportReport:
    imported: int
    skipped: int  # already unsubscribed (or repeated in the file)
    errors: tuple[tuple[int, str], ...]  # (line number, message); first MAX_IMPORT_ERRORS
    error_count: int = 0  # every bad row, also those beyond the list


@dataclass(frozen=True, slots=True)
class _Address:
    """The in-memory copy of one inbound address and its rules."""

    row: AddressRow
    rules: MappingProxyType[str, frozenset[SmsType]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @property
    def id(self) -> int:
        return self.row.id

    @property
    def address(self) -> str:
        return self.row.address


_ImportRow = tuple[int, int, int, "_Address", str, float | None]
"""(packed, number key, line, address, phone number, since) of one good row."""


_MAX_SQL_INT: Final = 1 << 63


def _encode_cursor(kind: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def _decode_cursor(kind: str, cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
        got_kind, _, value = text.partition(":")
        if got_kind != kind:
            raise ValueError(kind)
        # Only what _encode_cursor makes: plain digits that fit a signed
        # 64-bit integer (a bigger one would overflow in the query).
        if not (value.isascii() and value.isdigit()) or len(value) > 19:
            raise ValueError(value)
        number = int(value)
        if number >= _MAX_SQL_INT:
            raise ValueError(value)
        return number
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidValue("cursor is not one this listing returned") from None


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidValue(f"limit must be between 1 and {MAX_PAGE}")
    return limit


def _sms_types(values: Iterable[SmsType | str]) -> frozenset[SmsType]:
    if isinstance(values, str):
        raise InvalidValue("sms_types must be a list")
    result: set[SmsType] = set()
    for value in values:
        try:
            result.add(SmsType(value))
        except ValueError:
            allowed = ", ".join(t.value for t in SmsType)
            raise InvalidValue(
                f"unknown SMS type {str(value)[:32]!r} (expected {allowed})"
            ) from None
    return frozenset(result)


def _app_id(app_id: str) -> str:
    if not isinstance(app_id, str) or not app_id.strip():
        raise InvalidValue("app_id must be a non-empty string")
    app_id = require_scalar_text(app_id.strip(), "app_id")
    if len(app_id) > MAX_APP_ID_CHARS or not app_id.isprintable():
        raise InvalidValue(f"app_id must be at most {MAX_APP_ID_CHARS} printable characters")
    return app_id


def _description(text: str) -> str:
    if not isinstance(text, str):
        raise InvalidValue("description must be a string")
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise InvalidValue(f"description is longer than {MAX_DESCRIPTION_CHARS} characters")
    return require_scalar_text(text, "description")


def _source(value: Source | str) -> Source:
    try:
        return Source(value)
    except ValueError:
        allowed = ", ".join(s.value for s in Source)
        raise InvalidValue(f"source must be one of {allowed}") from None


def _reason(text: str, default: str) -> str:
    if not isinstance(text, str):
        raise InvalidValue("reason must be a string")
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise InvalidValue(f"reason is longer than {MAX_DESCRIPTION_CHARS} characters")
    return require_scalar_text(text, "reason") or default


@dataclass(frozen=True, slots=True)
class StoreState:
    """Everything memory holds, read in one transaction: the starting point
    of the feed at `head`."""

    index: UnsubscribedIndex
    addresses: list[_Address]
    head: int


def _required_reason(text: str) -> str:
    """A reason that must be given (the evidence for a re-subscription or a
    dismissed review): ReasonRequired when blank."""
    if not isinstance(text, str) or not text.strip():
        raise ReasonRequired("a reason is required (say why, e.g. the consent evidence)")
    return _reason(text.strip(), "")


REASON_ADDRESS_DELETED: Final = "inbound address deleted"
STATS_DAYS: Final = 30
CONFIRMATION_LIMIT_SECONDS: Final = 300.0
"""FCC 24-24: the one confirmation allowed must go out within 5 minutes."""
_LOGGED_NUMBER_CHARS: Final = 32


def _storable(text: str) -> str:
    """`text` with lone surrogates (which no store can keep as UTF-8)
    replaced, so a strange MO can never fail to be logged."""
    return scalar_text(text)


def _logged_address(raw: str) -> str:
    """A number or address as the inbound log keeps it: normalised when it
    can be, else as received (cut short)."""
    try:
        return numbers.normalize(raw)
    except InvalidNumber:
        return _storable(raw[:_LOGGED_NUMBER_CHARS])


def types_list(types: Iterable[SmsType]) -> list[str]:
    order = list(SmsType)
    return [t.value for t in sorted(set(types), key=order.index)]


def keywords_json(k: Keywords) -> dict[str, object]:
    return {
        "opt_out": list(k.opt_out),
        "opt_in": list(k.opt_in),
        "help": list(k.help),
        "match": k.match.value,
    }


def replies_json(r: Replies) -> dict[str, object]:
    return {"opt_out": r.opt_out, "opt_in": r.opt_in, "help": r.help}


def _address_json(a: InboundAddress) -> dict[str, object]:
    """An address as its audit entries show it."""
    return {
        "address": a.address,
        "description": a.description,
        "keywords": keywords_json(a.keywords),
        "replies": replies_json(a.replies),
        "default_rule": types_list(a.default_rule),
        "rules": {r.app_id: types_list(r.sms_types) for r in a.rules},
        "near_miss_phrases": list(a.near_miss_phrases),
    }


@dataclass(frozen=True, slots=True)
class Stats:
    """The Overview figures. `daily` is (UTC date, opt-outs, opt-ins) for
    each of the last `STATS_DAYS` days, oldest first, zero-filled; repeated
    STOPs are not opt-outs (nothing changed). `replies_*` count opt-out
    confirmations of MOs committed in that period: sent, and sent within
    `CONFIRMATION_LIMIT_SECONDS`."""

    unsubscribed_total: int
    unsubscribed_by_address: dict[str, int]
    daily: tuple[tuple[str, int, int], ...]
    near_miss_open: int
    replies_pending: int
    replies_sent: int
    replies_within_limit: int


class ServiceCore:
    """State and helpers shared by the service's parts (`rules.service`)."""

    def __init__(
        self,
        store: Store,
        state: StoreState,
        *,
        program: ProgramInfo,
        match_default: MatchMode,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._program = program
        self._match_default = match_default
        self._clock = clock
        # The index and rule book live in the decider the relay calls.
        self.decider = decision.Decider(state.index, decision.RuleBook())
        self._by_address: dict[str, _Address] = {}
        self._by_id: dict[int, _Address] = {}
        self._install(state)
        self._feed = ServiceFeed(self, store, state.head)
        store.set_feed(self._feed)
        self._snapshots: SnapshotKeeper | None = None
        self._listeners: list[Callable[[], object]] = []
        self._tasks: set[asyncio.Task[object]] = set()
        self._open_near_misses = 0
        self._oldest_open_near_miss: float | None = None
        self.reply_queued = asyncio.Event()
        """Set whenever a reply is committed to the outbox. A relay may
        `await reply_queued.wait()` and `clear()` it before draining."""

    @property
    def _index(self) -> UnsubscribedIndex:
        return self.decider.index

    @_index.setter
    def _index(self, index: UnsubscribedIndex) -> None:
        self.decider.index = index

    @property
    def _book(self) -> decision.RuleBook:
        return self.decider.book

    @_book.setter
    def _book(self, book: decision.RuleBook) -> None:
        self.decider.book = book

    # --- lifecycle ---

    async def close(self) -> None:
        """Stops following the feed, waits for in-flight writes, then closes
        the store."""
        await self._feed.stop()
        if self._snapshots is not None:
            await self._snapshots.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._store.close()

    async def ping(self) -> bool:
        """True when the store answers (for /readyz)."""
        return await self._store.ping()

    async def schema_version(self) -> int:
        return await self._store.schema_version()

    # --- helpers ---

    async def _write(self, operation: Awaitable[T]) -> T:
        """Runs a write to completion even if the caller is cancelled, so a
        transaction is never abandoned between COMMIT and the memory update."""
        task: asyncio.Task[T] = asyncio.ensure_future(operation)
        self._tasks.add(task)
        task.add_done_callback(self._write_done)
        return await asyncio.shield(task)

    def _write_done(self, task: asyncio.Task[T]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the caller may have gone away

    def _rebuild_book(self) -> None:
        self._book = decision.RuleBook(
            addresses=MappingProxyType({i: a.address for i, a in self._by_id.items()}),
            rules=MappingProxyType({i: a.rules for i, a in self._by_id.items()}),
            defaults=MappingProxyType({i: a.row.default_rule for i, a in self._by_id.items()}),
        )

    # --- memory, changed only by the feed (rules.service.feed) ---

    @staticmethod
    async def _load_state(tx: Tx, *, packed: bool = True) -> StoreState:
        """Reads everything memory holds in `tx` (one consistent snapshot);
        without `packed`, an empty index (it comes from a mapped snapshot)."""
        rows = await tx.addresses()
        rules = await tx.rules()
        values = await tx.packed_values() if packed else np.zeros(0, dtype=np.int64)
        head = await tx.feed_head()
        by_id: dict[int, dict[str, frozenset[SmsType]]] = {r.id: {} for r in rows}
        for rule in rules:
            by_id.setdefault(rule.address_id, {})[rule.app_id] = rule.sms_types
        addresses = [_Address(r, MappingProxyType(by_id[r.id])) for r in rows]
        return StoreState(UnsubscribedIndex.from_sorted_pairs(values), addresses, head)

    def _install(self, state: StoreState) -> None:
        """Replaces memory with `state` (start-up, or a reload)."""
        self._index = state.index
        self._by_address = {a.address: a for a in state.addresses}
        self._by_id = {a.id: a for a in state.addresses}
        self._rebuild_book()

    def _put(self, address: _Address) -> None:
        """Installs a committed address (feed changes only)."""
        old = self._by_id.get(address.id)
        if old is not None and old.address != address.address:
            self._by_address.pop(old.address, None)
        self._by_address[address.address] = address
        self._by_id[address.id] = address
        self._rebuild_book()

    def _put_row(self, row: AddressRow, rules: dict[str, frozenset[SmsType]]) -> None:
        self._put(_Address(row, MappingProxyType(rules)))

    def _forget(self, address_id: int) -> None:
        """Drops a deleted address, its rules and unsubscriptions from memory."""
        gone = self._by_id.pop(address_id, None)
        if gone is not None:
            self._by_address.pop(gone.address, None)
        self._index.remove_address(address_id)
        self._rebuild_book()

    def _lookup(self, raw: str) -> _Address | None:
        try:
            return self._by_address.get(numbers.normalize(raw))
        except InvalidNumber:
            return None

    def _require(self, raw: str) -> _Address:
        address = numbers.normalize(raw)
        found = self._by_address.get(address)
        if found is None:
            raise NotFound(f"inbound address {address} does not exist")
        return found

    def _current(self, address: _Address) -> _Address:
        """The address again, inside a transaction: it may have been deleted
        or edited while the caller waited for the write lock."""
        found = self._by_id.get(address.id)
        if found is None or found.address != address.address:
            raise NotFound(f"inbound address {address.address} does not exist")
        return found

    def _view(self, address: _Address) -> InboundAddress:
        row = address.row
        replies = row.replies.effective(self._program)
        return InboundAddress(
            address=row.address,
            description=row.description,
            keywords=row.keywords,
            replies=replies,
            default_rule=row.default_rule,
            rules=tuple(
                BlockingRule(row.address, app, types)
                for app, types in sorted(address.rules.items())
            ),
            created_at=row.created_at,
            near_miss_phrases=row.near_miss_phrases,
            warnings=address_warnings(row.keywords, replies, row.default_rule, address.rules),
        )

    async def _audit(
        self,
        tx: Tx,
        actor: str | None,
        action: str,
        target: str,
        before: object,
        after: object,
    ) -> None:
        """Appends one audit entry inside the change's own transaction, so a
        change and its audit entry commit (or roll back) together."""
        await tx.insert_audit(
            at=self._clock(), actor=actor, action=action, target=target, before=before, after=after
        )

    # --- the near-miss queue's figures (for metrics; kept in memory) ---

    def _near_miss_logged(self, at: float) -> None:
        self._open_near_misses += 1
        if self._oldest_open_near_miss is None or at < self._oldest_open_near_miss:
            self._oldest_open_near_miss = at

    async def refresh_near_misses(self) -> None:
        """Re-reads the open near-miss count and oldest time (best effort:
        the figures are for metrics; other processes of a fleet change them
        too, so the sidecar calls this every minute)."""
        try:
            async with self._store.reading() as tx:
                self._open_near_misses, self._oldest_open_near_miss = await tx.open_near_misses()
        except StoreUnavailable as exc:
            log.warning("near-miss figures not refreshed: %s", exc)

    @property
    def open_near_misses(self) -> int:
        """Near-misses waiting for review (from memory, O(1); re-read from
        the store after each review and at each housekeeping round)."""
        return self._open_near_misses

    @property
    def oldest_open_near_miss(self) -> float | None:
        """Unix time of the oldest near-miss waiting for review, or None."""
        return self._oldest_open_near_miss

    def _queued(self) -> None:
        self.reply_queued.set()
        for callback in list(self._listeners):
            try:
                callback()
            except Exception:
                log.exception("reply listener failed")

    def add_reply_listener(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Calls `callback()` (no arguments, on the event loop) each time a
        reply is committed to the outbox. Returns a function that removes it."""
        self._listeners.append(callback)

        def remove() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return remove

    # --- the decision (synchronous, in memory, never touches the disk) ---

    def decide(self, app_id: str, sms_type: SmsType, number: str) -> Decision:
        """`number` is already normalised (rules.numbers.normalize / from_smpp)."""
        return self.decider.decide(app_id, sms_type, number)

    def _lookup_strict(self, raw: str) -> _Address | None:
        return self._by_address.get(numbers.normalize(raw))

    def _unsubscription(self, row: UnsubRow) -> Unsubscription | None:
        address = self._by_id.get(row.address_id)
        if address is None:
            return None
        return Unsubscription(
            phone_number=numbers.from_key(row.number_key),
            inbound_address=address.address,
            since=row.since,
            source=row.source,
        )
