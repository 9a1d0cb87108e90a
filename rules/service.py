"""The one facade of the opt-out domain.

The SMPP relay and the HTTP API both call this class and nothing below it,
so a decision or an MO is handled by exactly one implementation.

Theory of operation
-------------------
* **State.** The durable truth is the SQLite store (`rules.store`). Two
  in-memory copies serve the hot path without I/O: the `UnsubscribedIndex`
  (which addresses each number is unsubscribed at; loaded in bulk at
  start-up) and the address table (keywords, replies, blocking rules;
  small). Both are changed only by `Tx.after_commit` callbacks, i.e. after
  the store has durably committed, and before any other transaction can
  start, so memory never shows a change the disk does not have -- and never
  misses one for longer than the commit takes.
* **Writes.** Every write method is one store transaction. It runs as a
  shielded task: if the caller is cancelled half-way (an SMPP session
  dropped), the transaction still either commits *and* updates memory, or
  rolls back; it is never left with the disk and the index disagreeing.
* **Decisions.** `decide` is synchronous: a dict/array look-up in the index
  and, only for numbers that are unsubscribed somewhere, a pure evaluation
  of the rules (`rules.decision`). Rule edits swap in a new `RuleBook`, so
  they apply from the next send on.
* **MOs.** `handle_mo` classifies the text with the address's keywords,
  reads the current state inside the write transaction, and applies
  `rules.mo.plan_mo`: state change + record + reply outbox row, one commit.
* **Replies.** The outbox row is the reply. After a reply is committed the
  service calls every listener registered with `add_reply_listener` (no
  arguments) and sets `reply_queued`; the relay then drains
  `pending_replies()` and calls `mark_reply_sent()`.

Decisions an operator will notice
---------------------------------
* `unsubscribe` of a number already unsubscribed at that address raises
  Conflict (HTTP 409): the operator learns it was already there, and no
  misleading second record is written. `resubscribe` of a number that is not
  unsubscribed raises NotFound.
* Manual (API/console/import) changes never send a confirmation SMS;
  confirmations answer the end user's own keyword.
* Deleting an address deletes its rules and unsubscriptions without writing
  per-number records (it is not a subscriber's status change); every
  earlier record stays, naming the address by its string.
* Records are filtered with `since` inclusive and `until` exclusive.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final, TypeVar

from rules import csvio, decision, numbers
from rules.index import UnsubscribedIndex
from rules.keywords import DEFAULT_KEYWORDS, classify, validate_keywords
from rules.mo import plan_mo
from rules.model import (
    ALL_SMS_TYPES,
    Action,
    BlockingRule,
    Conflict,
    Decision,
    InboundAddress,
    InvalidNumber,
    InvalidValue,
    Keywords,
    MatchMode,
    MoOutcome,
    NotFound,
    Record,
    Replies,
    Reply,
    SmsType,
    Source,
    Status,
    Unsubscription,
    require_scalar_text,
    scalar_text,
)
from rules.replies import ProgramInfo, ReplySettings, validate_replies
from rules.store import (
    ADDRESS_ID_LIMIT,
    PACK_SHIFT,
    AddressRow,
    RecordFilter,
    RecordValues,
    RuleRow,
    Store,
    UnsubRow,
    pack,
)

__all__ = ["MAX_PAGE", "ImportReport", "OptOutService", "ProgramInfo"]

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
        # Only what _encode_cursor makes: plain digits that fit SQLite's
        # signed 64-bit integer (a bigger one would overflow in the query).
        if not (value.isascii() and value.isdigit()) or len(value) > 19:
            raise ValueError(value)
        number = int(value)
        if number >= _MAX_SQL_INT:
            raise ValueError(value)
        return number
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidValue("cursor is not one this listing returned") from None


_UNSUB_ORDERS: Final = ("number", "newest", "oldest")
# Every in-scope subscriber is a NANP number: "+1" and ten digits.
_NANP_DIGITS: Final = 11


def _prefix_keys(prefix: str) -> tuple[int, int] | None:
    """[lo, hi) of the number keys starting with `prefix` ("+1 415",
    "415", "1415-55"); None when no in-scope number can start so. A
    prefix without the leading country code 1 is read as an area code."""
    digits = "".join(ch for ch in prefix if ch.isascii() and ch.isdigit())
    if not digits.startswith("1"):
        digits = "1" + digits
    if len(digits) > _NANP_DIGITS:
        return None
    scale = 10 ** (_NANP_DIGITS - len(digits))
    return int(digits) * scale, (int(digits) + 1) * scale


def _encode_unsub_cursor(order: str, row: UnsubRow) -> str:
    if order == "number":
        return _encode_cursor("u", row.packed)
    # repr() of a float round-trips exactly, so ties on `since` page correctly.
    text = f"{order[0]}:{row.since!r}:{row.packed}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_unsub_cursor(order: str, cursor: str | None) -> tuple[int | None, float | None]:
    if order == "number":
        return _decode_cursor("u", cursor), None
    if cursor is None or cursor == "":
        return None, None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
        kind, since, packed = text.split(":")
        if kind != order[0]:
            raise ValueError(kind)
        when = float(since)
        if not math.isfinite(when):
            raise ValueError(since)
        return int(packed), when
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


class OptOutService:
    """Open with `await OptOutService.open(url)`; close with `await close()`."""

    def __init__(
        self,
        store: Store,
        index: UnsubscribedIndex,
        addresses: list[_Address],
        *,
        program: ProgramInfo,
        match_default: MatchMode,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._index = index
        self._program = program
        self._match_default = match_default
        self._clock = clock
        self._by_address: dict[str, _Address] = {a.address: a for a in addresses}
        self._by_id: dict[int, _Address] = {a.id: a for a in addresses}
        self._book = decision.RuleBook()
        self._rebuild_book()
        self._listeners: list[Callable[[], object]] = []
        self._tasks: set[asyncio.Task[object]] = set()
        self.reply_queued = asyncio.Event()
        """Set whenever a reply is committed to the outbox. A relay may
        `await reply_queued.wait()` and `clear()` it before draining."""

    # --- lifecycle ---

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        program: ProgramInfo = _DEFAULT_PROGRAM,
        mo_match_default: str = "leading",
        busy_timeout_ms: int = 5000,
        clock: Callable[[], float] = time.time,
    ) -> OptOutService:
        """Open the store at `url` ("sqlite:///rel/path.db", "sqlite:////abs/path.db",
        "sqlite://:memory:"), apply migrations, load the in-memory index.

        `mo_match_default` is the keyword match mode new addresses get.
        `busy_timeout_ms` bounds how long a write waits for another process
        holding the file; `clock` (unix seconds) is injectable for tests.
        """
        try:
            match_default = MatchMode(mo_match_default)
        except ValueError:
            raise InvalidValue(
                f"mo_match_default must be 'leading' or 'exact', not {mo_match_default!r}"
            ) from None
        store = await Store.open(url, busy_timeout_ms=busy_timeout_ms)
        try:
            async with store.reading() as tx:
                rows = await tx.addresses()
                rules = await tx.rules()
            packed = await store.load_packed()
            index = UnsubscribedIndex.from_sorted_pairs(packed)
        except BaseException:
            await store.close()
            raise
        by_id: dict[int, dict[str, frozenset[SmsType]]] = {r.id: {} for r in rows}
        for rule in rules:
            by_id.setdefault(rule.address_id, {})[rule.app_id] = rule.sms_types
        addresses = [_Address(r, MappingProxyType(by_id[r.id])) for r in rows]
        log.info("store opened: %d inbound addresses, %d unsubscriptions", len(rows), len(index))
        return cls(
            store,
            index,
            addresses,
            program=program,
            match_default=match_default,
            clock=clock,
        )

    async def close(self) -> None:
        """Waits for in-flight writes, then closes the store."""
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

    def _put(self, address: _Address) -> None:
        """Installs a committed address (after_commit only)."""
        self._by_address[address.address] = address
        self._by_id[address.id] = address
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
        return InboundAddress(
            address=row.address,
            description=row.description,
            keywords=row.keywords,
            replies=row.replies.effective(self._program),
            default_rule=row.default_rule,
            rules=tuple(
                BlockingRule(row.address, app, types)
                for app, types in sorted(address.rules.items())
            ),
            created_at=row.created_at,
        )

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

    # --- inbound addresses ---

    async def list_addresses(self) -> list[InboundAddress]:
        return [self._view(a) for a in sorted(self._by_address.values(), key=lambda a: a.address)]

    async def get_address(self, address: str) -> InboundAddress:
        """`address` free-form; NotFound if absent."""
        return self._view(self._require(address))

    async def create_address(
        self, address: str, description: str = "", *, actor: str | None = None
    ) -> InboundAddress:
        """InvalidNumber/OutOfScope for non US/CA numbers, Conflict if it exists.
        The new address gets the default keywords and replies and a default
        rule blocking all SMS types."""
        number = numbers.require_in_scope(address)
        description = _description(description)
        return await self._write(self._create_address(number, description))

    async def _create_address(self, number: str, description: str) -> InboundAddress:
        async with self._store.transaction() as tx:
            if number in self._by_address:
                raise Conflict(f"inbound address {number} already exists")
            new_id = next((i for i in range(1, ADDRESS_ID_LIMIT) if i not in self._by_id), None)
            if new_id is None:
                raise InvalidValue(f"at most {ADDRESS_ID_LIMIT - 1} inbound addresses")
            row = AddressRow(
                id=new_id,
                address=number,
                description=description,
                keywords=replace(DEFAULT_KEYWORDS, match=self._match_default),
                replies=ReplySettings(),
                default_rule=ALL_SMS_TYPES,
                created_at=self._clock(),
            )
            await tx.insert_address(row)
            created = _Address(row)
            tx.after_commit(lambda: self._put(created))
        log.info("inbound address created: %s", number)
        return self._view(created)

    async def _edit(self, raw: str, change: Callable[[_Address], _Address]) -> _Address:
        """Applies `change` to an address's row in one transaction."""
        target = self._require(raw)

        async def run() -> _Address:
            async with self._store.transaction() as tx:
                new = change(self._current(target))
                await tx.update_address(new.row)
                tx.after_commit(lambda: self._put(new))
            return new

        return await self._write(run())

    async def update_address(
        self, address: str, description: str, *, actor: str | None = None
    ) -> InboundAddress:
        description = _description(description)
        new = await self._edit(
            address, lambda a: replace(a, row=replace(a.row, description=description))
        )
        return self._view(new)

    async def delete_address(self, address: str, *, actor: str | None = None) -> None:
        """Deletes the address, its keywords, rules and unsubscriptions, but never its
        history records."""
        target = self._require(address)

        async def run() -> None:
            async with self._store.transaction() as tx:
                current = self._current(target)
                removed = await tx.delete_address(current.id)

                def forget() -> None:
                    del self._by_address[current.address]
                    del self._by_id[current.id]
                    self._index.remove_address(current.id)
                    self._rebuild_book()

                tx.after_commit(forget)
            log.info(
                "inbound address deleted: %s (%d unsubscriptions dropped, records kept)",
                current.address,
                removed,
            )

        await self._write(run())

    async def get_keywords(self, address: str) -> Keywords:
        return self._require(address).row.keywords

    async def set_keywords(
        self, address: str, keywords: Keywords, *, actor: str | None = None
    ) -> Keywords:
        clean = validate_keywords(keywords)
        new = await self._edit(address, lambda a: replace(a, row=replace(a.row, keywords=clean)))
        return new.row.keywords

    async def get_replies(self, address: str) -> Replies:
        """The texts that go out now (None: switched off)."""
        return self._require(address).row.replies.effective(self._program)

    async def set_replies(
        self, address: str, replies: Replies, *, actor: str | None = None
    ) -> Replies:
        """Sets the three texts (None switches one off). A text equal to the
        default keeps following the configured program name."""
        settings = ReplySettings.from_replies(validate_replies(replies), self._program)
        new = await self._edit(address, lambda a: replace(a, row=replace(a.row, replies=settings)))
        return new.row.replies.effective(self._program)

    # --- blocking rules ---

    async def list_rules(self, address: str) -> list[BlockingRule]:
        return list(self._view(self._require(address)).rules)

    async def _rule_write(
        self, raw: str, app_id: str, sms_types: frozenset[SmsType] | None, kind: str
    ) -> BlockingRule | None:
        target = self._require(raw)

        async def run() -> BlockingRule | None:
            async with self._store.transaction() as tx:
                current = self._current(target)
                rules = dict(current.rules)
                exists = app_id in rules
                if kind == "create":
                    if exists:
                        raise Conflict(
                            f"app {app_id} already has a blocking rule at {current.address}"
                        )
                    assert sms_types is not None
                    await tx.insert_rule(RuleRow(current.id, app_id, sms_types))
                    rules[app_id] = sms_types
                elif kind == "replace":
                    if not exists:
                        raise NotFound(f"app {app_id} has no blocking rule at {current.address}")
                    assert sms_types is not None
                    await tx.update_rule(RuleRow(current.id, app_id, sms_types))
                    rules[app_id] = sms_types
                else:
                    if not exists:
                        raise NotFound(f"app {app_id} has no blocking rule at {current.address}")
                    await tx.delete_rule(current.id, app_id)
                    del rules[app_id]
                new = replace(current, rules=MappingProxyType(rules))
                tx.after_commit(lambda: self._put(new))
            if sms_types is None:
                return None
            return BlockingRule(current.address, app_id, sms_types)

        return await self._write(run())

    async def create_rule(
        self, address: str, app_id: str, sms_types: Iterable[SmsType], *, actor: str | None = None
    ) -> BlockingRule:
        """Conflict if the app already has a rule at this address. An empty
        `sms_types` is allowed: that app is then blocked for nothing there."""
        rule = await self._rule_write(address, _app_id(app_id), _sms_types(sms_types), "create")
        assert rule is not None
        return rule

    async def replace_rule(
        self, address: str, app_id: str, sms_types: Iterable[SmsType], *, actor: str | None = None
    ) -> BlockingRule:
        """NotFound if the app has no rule at this address."""
        rule = await self._rule_write(address, _app_id(app_id), _sms_types(sms_types), "replace")
        assert rule is not None
        return rule

    async def delete_rule(self, address: str, app_id: str, *, actor: str | None = None) -> None:
        """NotFound if the app has no rule at this address; afterwards the app
        falls under the address's default rule."""
        await self._rule_write(address, _app_id(app_id), None, "delete")

    async def get_default_rule(self, address: str) -> frozenset[SmsType]:
        return self._require(address).row.default_rule

    async def set_default_rule(
        self, address: str, sms_types: Iterable[SmsType], *, actor: str | None = None
    ) -> frozenset[SmsType]:
        types = _sms_types(sms_types)
        new = await self._edit(
            address, lambda a: replace(a, row=replace(a.row, default_rule=types))
        )
        return new.row.default_rule

    # --- the decision (synchronous, in memory, never touches the disk) ---

    def decide(self, app_id: str, sms_type: SmsType, number: str) -> Decision:
        """`number` is already normalised (rules.numbers.normalize / from_smpp)."""
        try:
            key = numbers.to_key(number)
        except ValueError:
            return decision.OUT_OF_SCOPE  # not a number we could ever store
        hits = self._index.addresses_of(key)
        if hits:
            # Only in-scope numbers are ever stored, so a hit skips the scope
            # check (a phonenumbers region look-up for an uncached number).
            return decision.decide(hits, app_id, sms_type, self._book)
        if not numbers.in_scope(number):
            return decision.OUT_OF_SCOPE
        return decision.ALLOWED

    # --- MO handling ---

    async def handle_mo(
        self,
        inbound_address: str,
        from_number: str,
        text: str,
        *,
        carrier_ids: str | None = None,
    ) -> MoOutcome:
        """Classify, change state, record, and queue the reply in the outbox, all
        committed durably before returning. Raises StoreUnavailable if it could not
        commit (nothing changed then).

        An unknown inbound address, or a sender that is not a valid in-scope
        number, gives `handled=False` and stores nothing (the action is still
        classified, with the default keywords for an unknown address, so the
        caller can count it)."""
        address = self._lookup(inbound_address)
        if address is None:
            action, keyword = classify(text, DEFAULT_KEYWORDS)
            return MoOutcome(action, keyword, handled=False, notes=("unknown inbound address",))
        action, keyword = classify(text, address.row.keywords)
        try:
            subscriber = numbers.normalize(from_number)
        except InvalidNumber:
            return MoOutcome(action, keyword, handled=False, notes=("sender is not a number",))
        if not numbers.in_scope(subscriber):
            return MoOutcome(
                action, keyword, handled=False, notes=("sender outside US/Canada opt-out scope",)
            )
        if action is Action.NONE:
            return MoOutcome(Action.NONE)
        return await self._write(
            self._apply_mo(address, subscriber, action, keyword, text, carrier_ids)
        )

    async def _apply_mo(
        self,
        address: _Address,
        subscriber: str,
        action: Action,
        keyword: str | None,
        text: str,
        carrier_ids: str | None,
    ) -> MoOutcome:
        key = numbers.to_key(subscriber)
        # Kept, not refused: the keyword in it has already been acted on.
        text = scalar_text(text[:MAX_RAW_TEXT_CHARS])
        if carrier_ids is not None:
            carrier_ids = scalar_text(carrier_ids[:MAX_CARRIER_IDS_CHARS])
        async with self._store.transaction() as tx:
            try:
                current = self._current(address)
            except NotFound:
                return MoOutcome(action, keyword, handled=False, notes=("address just deleted",))
            packed = pack(key, current.id)
            unsubscribed = await tx.unsubscription(packed) is not None
            plan = plan_mo(action, unsubscribed, current.row.replies.effective(self._program))
            now = self._clock()
            if plan.new_status is Status.UNSUBSCRIBED:
                await tx.insert_unsubscription(
                    UnsubRow(packed, current.id, key, now, Source.KEYWORD)
                )
                tx.after_commit(lambda: self._index.add(key, current.id))
            elif plan.new_status is Status.SUBSCRIBED:
                await tx.delete_unsubscription(packed)
                tx.after_commit(lambda: self._index.remove(key, current.id))
            record: Record | None = None
            if plan.record_status is not None:
                values: RecordValues = (
                    subscriber,
                    current.address,
                    plan.record_status.value,
                    Source.KEYWORD.value,
                    now,
                    plan.reason,
                    None,
                    text,
                    keyword,
                    carrier_ids,
                )
                record_id = await tx.insert_record(values)
                record = Record(
                    id=record_id,
                    phone_number=subscriber,
                    inbound_address=current.address,
                    status=plan.record_status,
                    source=Source.KEYWORD,
                    at=now,
                    reason=plan.reason,
                    raw_text=text,
                    keyword=keyword,
                    carrier_ids=carrier_ids,
                )
            reply: Reply | None = None
            if plan.reply_text is not None and plan.reply_action is not None:
                reply_id = await tx.insert_reply(
                    record_id=record.id if record else None,
                    source_addr=current.address,
                    destination_addr=subscriber,
                    text=plan.reply_text,
                    action=plan.reply_action,
                    created_at=now,
                )
                reply = Reply(
                    reply_id, current.address, subscriber, plan.reply_text, plan.reply_action
                )
                tx.after_commit(self._queued)
        return MoOutcome(action, keyword, record=record, reply=reply, notes=plan.notes)

    # --- unsubscribed users ---

    async def unsubscribe(
        self,
        phone_number: str,
        inbound_address: str,
        *,
        source: Source,
        actor: str | None = None,
        reason: str = "",
    ) -> Record:
        """Unsubscribes by hand (no confirmation SMS). InvalidNumber /
        OutOfScope for the number, NotFound for the address, Conflict if the
        number is already unsubscribed there."""
        number = numbers.require_in_scope(phone_number)
        target = self._require(inbound_address)
        source = _source(source)
        why = _reason(reason, f"unsubscribed via {source.value}")
        return await self._write(
            self._manual(number, target, Status.UNSUBSCRIBED, source, actor, why)
        )

    async def resubscribe(
        self,
        phone_number: str,
        inbound_address: str,
        *,
        source: Source,
        actor: str | None = None,
        reason: str = "",
    ) -> Record:
        """NotFound if the number is not unsubscribed at that address."""
        number = numbers.normalize(phone_number)
        target = self._require(inbound_address)
        source = _source(source)
        why = _reason(reason, f"resubscribed via {source.value}")
        return await self._write(
            self._manual(number, target, Status.SUBSCRIBED, source, actor, why)
        )

    async def _manual(
        self,
        number: str,
        target: _Address,
        status: Status,
        source: Source,
        actor: str | None,
        reason: str,
    ) -> Record:
        try:
            key = numbers.to_key(number)
        except ValueError:
            raise InvalidNumber(f"{numbers.mask(number)} cannot be stored") from None
        async with self._store.transaction() as tx:
            current = self._current(target)
            packed = pack(key, current.id)
            exists = await tx.unsubscription(packed) is not None
            now = self._clock()
            if status is Status.UNSUBSCRIBED:
                if exists:
                    raise Conflict(
                        f"{numbers.mask(number)} is already unsubscribed at {current.address}"
                    )
                await tx.insert_unsubscription(UnsubRow(packed, current.id, key, now, source))
                tx.after_commit(lambda: self._index.add(key, current.id))
            else:
                if not exists:
                    raise NotFound(
                        f"{numbers.mask(number)} is not unsubscribed at {current.address}"
                    )
                await tx.delete_unsubscription(packed)
                tx.after_commit(lambda: self._index.remove(key, current.id))
            values: RecordValues = (
                number,
                current.address,
                status.value,
                source.value,
                now,
                reason,
                actor,
                None,
                None,
                None,
            )
            record_id = await tx.insert_record(values)
        return Record(
            id=record_id,
            phone_number=number,
            inbound_address=current.address,
            status=status,
            source=source,
            at=now,
            reason=reason,
            actor=actor,
        )

    async def list_unsubscribed(
        self,
        *,
        inbound_address: str | None = None,
        phone_number: str | None = None,
        number_prefix: str | None = None,
        order: str = "number",
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Unsubscription], str | None]:
        """One page and the cursor of the next page (None at the end),
        ordered by number then address, or by `since` ("newest" /
        "oldest"). `number_prefix` keeps numbers whose E.164 form starts
        with those digits. Keyset pagination: rows inserted while paging
        never shift or repeat a page. An unknown address gives an empty
        page; a malformed number InvalidNumber. Each item carries the
        reason of its latest opt-out record."""
        limit = _check_limit(limit)
        if order not in _UNSUB_ORDERS:
            raise InvalidValue(f"order must be one of {', '.join(_UNSUB_ORDERS)}")
        after, after_since = _decode_unsub_cursor(order, cursor)
        address_id: int | None = None
        if inbound_address is not None:
            found = self._lookup_strict(inbound_address)
            if found is None:
                return [], None
            address_id = found.id
        packed_range: tuple[int, int] | None = None
        if phone_number is not None:
            try:
                key = numbers.to_key(numbers.normalize(phone_number))
            except ValueError:
                return [], None
            packed_range = (key << PACK_SHIFT, (key + 1) << PACK_SHIFT)
        elif number_prefix is not None:
            keys = _prefix_keys(number_prefix)
            if keys is None:
                return [], None
            packed_range = (keys[0] << PACK_SHIFT, keys[1] << PACK_SHIFT)
        async with self._store.reading() as tx:
            rows = await tx.unsubscriptions(
                address_id=address_id,
                packed_range=packed_range,
                after=after,
                after_since=after_since,
                order=order,
                limit=limit + 1,
            )
            more = len(rows) > limit
            rows = rows[:limit]
            items = [i for i in (self._unsubscription(r) for r in rows) if i is not None]
            reasons = await tx.unsubscribe_reasons(
                [(i.phone_number, i.inbound_address) for i in items]
            )
        items = [
            replace(i, reason=reasons.get((i.phone_number, i.inbound_address), ""))
            for i in items
        ]
        next_cursor = _encode_unsub_cursor(order, rows[-1]) if more else None
        return items, next_cursor

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

    def unsubscribed_count(self) -> int:
        """(number, address) pairs unsubscribed now; O(1), from memory."""
        return len(self._index)

    # --- history ---

    def _record_filter(
        self,
        phone_number: str | None,
        inbound_address: str | None,
        since: float | None,
        until: float | None,
    ) -> RecordFilter:
        return RecordFilter(
            phone_number=None if phone_number is None else numbers.normalize(phone_number),
            inbound_address=None if inbound_address is None else numbers.normalize(inbound_address),
            since=since,
            until=until,
        )

    async def list_records(
        self,
        *,
        phone_number: str | None = None,
        inbound_address: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> tuple[list[Record], str | None]:
        """One page of the history (oldest first unless `newest_first`) and
        the next page's cursor. `since` is inclusive, `until` exclusive
        (unix seconds). Addresses deleted since still match by string."""
        limit = _check_limit(limit)
        kind = "d" if newest_first else "r"
        after = _decode_cursor(kind, cursor)
        flt = self._record_filter(phone_number, inbound_address, since, until)
        async with self._store.reading() as tx:
            rows = await tx.records(flt, after=after, limit=limit + 1, newest_first=newest_first)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (_encode_cursor(kind, rows[-1].id) if more else None)

    async def iter_records(
        self,
        *,
        phone_number: str | None = None,
        inbound_address: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> AsyncIterator[Record]:
        """All matching records, oldest first, read in pages (for CSV export)."""
        flt = self._record_filter(phone_number, inbound_address, since, until)
        after: int | None = None
        while True:
            async with self._store.reading() as tx:
                rows = await tx.records(flt, after=after, limit=_RECORD_PAGE)
            for row in rows:
                yield row
            if len(rows) < _RECORD_PAGE:
                return
            after = rows[-1].id

    # --- reply outbox ---

    async def pending_replies(self, limit: int = 100) -> list[Reply]:
        """Unsent replies, oldest first (at most `limit`, capped at MAX_PAGE)."""
        limit = max(1, min(int(limit), MAX_PAGE))
        async with self._store.reading() as tx:
            return await tx.pending_replies(limit)

    async def pending_reply_count(self) -> int:
        async with self._store.reading() as tx:
            return await tx.pending_reply_count()

    async def mark_reply_sent(self, reply_id: int, message_id: str | None) -> None:
        """Marks a reply as accepted by the carrier. NotFound for an unknown
        id; marking an already sent reply again changes nothing."""

        async def run() -> None:
            async with self._store.transaction() as tx:
                marked = await tx.mark_reply_sent(reply_id, message_id, self._clock())
                if not marked and not await tx.reply_exists(reply_id):
                    raise NotFound(f"reply {reply_id} does not exist")

        await self._write(run())

    # --- import / export ---

    async def import_csv(self, lines: Iterable[str], *, actor: str | None = None) -> ImportReport:
        """Imports `phone_number,inbound_address[,since]` CSV lines (see
        `rules.csvio`). Bad rows are reported with their line numbers and the
        good ones land, in transactions of `IMPORT_BATCH` rows, each change
        recorded with source "import". Numbers already unsubscribed (or
        repeated in the file) are skipped. If the store fails, batches
        already committed stay and StoreUnavailable is raised.

        The event loop gets a turn every `_IMPORT_YIELD_ROWS` rows so live
        traffic is not starved. (Parsing is not overlapped with writing on
        purpose: both need the GIL per row, and the hand-offs cost more than
        the overlap gains.)
        """
        errors: list[tuple[int, str]] = []
        error_count = imported = skipped = 0
        batch: list[_ImportRow] = []

        def bad(line: int, message: str) -> None:
            nonlocal error_count
            error_count += 1
            if len(errors) < MAX_IMPORT_ERRORS:
                errors.append((line, message))

        async def flush() -> None:
            nonlocal imported, skipped, batch
            if batch:
                done, dup, gone = await self._write(self._import_batch(batch, actor))
                batch = []
                imported += done
                skipped += dup
                for line in gone:
                    bad(line, "inbound address was deleted during the import")

        by_address = self._by_address
        for n, item in enumerate(csvio.read_rows(lines), 1):
            if n % _IMPORT_YIELD_ROWS == 0:
                await asyncio.sleep(0)
            if isinstance(item, csvio.CsvError):
                bad(item.line, item.message)
                continue
            address = by_address.get(item.inbound_address)
            if address is None:
                bad(item.line, f"inbound address {item.inbound_address} does not exist")
                continue
            key = numbers.to_key(item.phone_number)
            batch.append(
                (pack(key, address.id), key, item.line, address, item.phone_number, item.since)
            )
            if len(batch) >= IMPORT_BATCH:
                await flush()
        await flush()
        if imported:
            self._index.compact()  # fold the import into the sorted array now
        log.info(
            "import: %d imported, %d already unsubscribed, %d bad rows",
            imported,
            skipped,
            error_count,
        )
        return ImportReport(imported, skipped, tuple(errors), error_count)

    async def _import_batch(
        self, batch: list[_ImportRow], actor: str | None
    ) -> tuple[int, int, list[int]]:
        """(imported, skipped, lines whose address vanished) for one batch."""
        # Key order makes every b-tree insert land next to the previous one.
        batch.sort(key=lambda row: row[0])
        unsubs: list[tuple[int, int, int, float, str]] = []
        records: list[tuple[str, str]] = []
        gone: list[int] = []
        skipped = 0
        async with self._store.transaction() as tx:
            now = self._clock()
            last = -1
            by_id = self._by_id
            addresses_of = self._index.addresses_of
            for packed, key, line, address, phone_number, since in batch:
                address_id = address.id
                if by_id.get(address_id) is not address and (
                    (current := by_id.get(address_id)) is None or current.address != address.address
                ):
                    gone.append(line)
                    continue
                if packed == last or address_id in addresses_of(key):
                    skipped += 1
                    continue
                last = packed
                unsubs.append((packed, address_id, key, now if since is None else since, _IMPORT))
                records.append((phone_number, address.address))
            await tx.insert_unsubscription_values(unsubs)
            await tx.insert_import_records(records, at=now, actor=actor)

            def index_them() -> None:
                add = self._index.add
                for u in unsubs:
                    add(u[2], u[1])

            tx.after_commit(index_them)
        return len(unsubs), skipped, gone

    async def export_csv(self) -> AsyncIterator[str]:
        """The current unsubscribed list as CSV lines, header first, read
        from the store in pages (a consistent snapshot per page)."""
        yield csvio.format_row(*csvio.HEADER)
        after: int | None = None
        while True:
            async with self._store.reading() as tx:
                rows = await tx.unsubscriptions(
                    address_id=None, packed_range=None, after=after, limit=_EXPORT_PAGE
                )
            for row in rows:
                item = self._unsubscription(row)
                if item is not None:
                    yield csvio.format_row(
                        item.phone_number, item.inbound_address, csvio.format_since(item.since)
                    )
            if len(rows) < _EXPORT_PAGE:
                return
            after = rows[-1].packed
