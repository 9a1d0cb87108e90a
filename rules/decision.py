"""The send-time decision (SPEC section 2), as a pure function.

A message from application A of type T to subscriber S is blocked iff S is
unsubscribed at some inbound address X whose rule for A -- or X's default
rule when A has no rule at X -- includes T.

Nothing here does I/O: the caller passes the index hits (the ids of the
addresses S is unsubscribed at) and a `RuleBook`, the in-memory copy of all
blocking rules. The service swaps in a new `RuleBook` after every committed
rule edit, so an edit applies from the next send on, also to numbers that
unsubscribed before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from rules import numbers
from rules.index import UnsubscribedIndex
from rules.model import ALL_SMS_TYPES, BlockedBy, Decision, SmsType

__all__ = ["ALLOWED", "BLOCKED", "DEFAULT_RULE", "OUT_OF_SCOPE", "Decider", "RuleBook", "blocks",
           "decide"]

DEFAULT_RULE = "default"
"""`BlockedBy.rule` when the address's default rule matched."""

ALLOWED = Decision(allowed=True, in_scope=True)
OUT_OF_SCOPE = Decision(allowed=True, in_scope=False)
BLOCKED = Decision(allowed=False, in_scope=True)
"""`Decider.verdict_key`'s blocked decision: the reasons left out."""

_EMPTY: Mapping[str, frozenset[SmsType]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RuleBook:
    """Every address's blocking rules, keyed by the store's address id.

    `rules[address_id][app_id]` is that app's rule; `defaults[address_id]`
    the address's default rule; `addresses[address_id]` its E.164 / short
    code string (to name it in `BlockedBy`).
    """

    addresses: Mapping[int, str] = field(default_factory=dict)
    rules: Mapping[int, Mapping[str, frozenset[SmsType]]] = field(default_factory=dict)
    defaults: Mapping[int, frozenset[SmsType]] = field(default_factory=dict)


def decide(hits: Iterable[int], app_id: str, sms_type: SmsType, book: RuleBook) -> Decision:
    """Decides one (app, type) message to a subscriber unsubscribed at the
    addresses `hits` (an in-scope subscriber; empty `hits` means allowed).

    `blocked_by` names every address that blocks, in the order of `hits`, so
    an operator sees all the reasons, not just the first.

    An address id the book does not know (which would be a bug: the index
    and the book are updated together) blocks everything: an opt-out must
    never be silently ignored.
    """
    blocked_by: list[BlockedBy] = []
    for address_id in hits:
        rule_name, rule_types = _rule(book, address_id, app_id)
        if sms_type in rule_types:
            blocked_by.append(
                BlockedBy(
                    inbound_address=book.addresses.get(address_id, f"#{address_id}"),
                    rule=rule_name,
                    sms_types=rule_types,
                )
            )
    if not blocked_by:
        return ALLOWED
    return Decision(allowed=False, in_scope=True, blocked_by=tuple(blocked_by))


def blocks(hits: Iterable[int], app_id: str, sms_type: SmsType, book: RuleBook) -> bool:
    """Whether `decide` would block, without naming what blocks: the relay's
    question per submit, answered without making an object per address."""
    return any(sms_type in _rule(book, address_id, app_id)[1] for address_id in hits)


def _rule(book: RuleBook, address_id: int, app_id: str) -> tuple[str, frozenset[SmsType]]:
    """The rule that applies to `app_id` at an address: (its name, its types).
    An address id the book does not know gets the block-all default."""
    rule_types = book.rules.get(address_id, _EMPTY).get(app_id)
    if rule_types is not None:
        return app_id, rule_types
    return DEFAULT_RULE, book.defaults.get(address_id, ALL_SMS_TYPES)


class Decider:
    """The decision for one normalised number against the live index and rule
    book: `OptOutService.decide`, which the relay calls once per submit.

    Why a class here and not a method of the service: this module is part of
    the compiled hot path (gateway.speed), so the relay's call is one native
    call with no interpreted frame. The service owns the one instance and
    swaps `index` and `book` in place when they change, so a holder of the
    decider always decides against what the service holds.
    """

    __slots__ = ("book", "index")

    def __init__(self, index: UnsubscribedIndex, book: RuleBook) -> None:
        self.index = index
        self.book = book

    def decide(self, app_id: str, sms_type: SmsType, number: str) -> Decision:
        """`number` is already normalised (rules.numbers.normalize / destination)."""
        try:
            key = numbers.to_key(number)
        except ValueError:
            return OUT_OF_SCOPE  # not a number we could ever store
        return self.decide_key(app_id, sms_type, key, numbers.in_scope(number))

    def decide_key(self, app_id: str, sms_type: SmsType, key: int, in_scope: bool) -> Decision:
        """`decide` for a number already turned into its index key and scope
        (the relay caches both per destination address)."""
        hits = self.index.addresses_of(key)
        if hits:
            return decide(hits, app_id, sms_type, self.book)
        return ALLOWED if in_scope else OUT_OF_SCOPE

    def verdict_key(self, app_id: str, sms_type: SmsType, key: int, in_scope: bool) -> Decision:
        """`decide_key` for the relay, which needs only the verdict: one of
        ALLOWED, OUT_OF_SCOPE and BLOCKED (whose `blocked_by` is empty), so a
        refused submit makes no objects."""
        hits = self.index.addresses_of(key)
        if hits:
            return BLOCKED if blocks(hits, app_id, sms_type, self.book) else ALLOWED
        return ALLOWED if in_scope else OUT_OF_SCOPE
