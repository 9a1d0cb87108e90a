"""The send-time decision: the pure table, then the same rules through the
service (rule edits apply at once, out-of-scope numbers, two addresses)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rules import decision, numbers
from rules.decision import DEFAULT_RULE, RuleBook
from rules.index import UnsubscribedIndex
from rules.model import ALL_SMS_TYPES, BlockedBy, Decision, SmsType, Source
from rules.service import OptOutService

M, N, V = SmsType.MARKETING, SmsType.NOTIFICATION, SmsType.VERIFICATION

BOOK = RuleBook(
    addresses={1: "+18005550199", 2: "898211"},
    rules={1: {"app1": frozenset({M}), "quiet": frozenset()}, 2: {}},
    defaults={1: frozenset({M, N}), 2: ALL_SMS_TYPES},
)

# (hits, app, type) -> blocked_by as (address, rule)
CASES = [
    ((), "app1", M, []),  # not unsubscribed anywhere
    ((1,), "app1", M, [("+18005550199", "app1")]),  # the app's own rule
    ((1,), "app1", N, []),  # the app's rule wins over the wider default
    ((1,), "app2", N, [("+18005550199", DEFAULT_RULE)]),  # no rule: default
    ((1,), "app2", V, []),  # the default was narrowed
    ((1,), "quiet", M, []),  # an empty rule blocks nothing
    ((2,), "app1", V, [("898211", DEFAULT_RULE)]),  # other address, its own rules
    ((1, 2), "app1", M, [("+18005550199", "app1"), ("898211", DEFAULT_RULE)]),
    ((1, 2), "app1", N, [("898211", DEFAULT_RULE)]),
    ((7,), "app1", V, [("#7", DEFAULT_RULE)]),  # unknown address id: fail closed
]


@pytest.mark.parametrize(("hits", "app", "sms_type", "expected"), CASES)
def test_decision_table(
    hits: tuple[int, ...], app: str, sms_type: SmsType, expected: list[tuple[str, str]]
) -> None:
    result = decision.decide(hits, app, sms_type, BOOK)
    assert result.allowed is (not expected)
    assert result.in_scope
    assert [(b.inbound_address, b.rule) for b in result.blocked_by] == expected


@pytest.mark.parametrize(("hits", "app", "sms_type", "expected"), CASES)
def test_blocks_agrees_with_the_decision_table(
    hits: tuple[int, ...], app: str, sms_type: SmsType, expected: list[tuple[str, str]]
) -> None:
    assert decision.blocks(hits, app, sms_type, BOOK) is bool(expected)


def test_blocked_by_names_the_types_of_the_matching_rule() -> None:
    result = decision.decide((1,), "app2", M, BOOK)
    assert result.blocked_by == (BlockedBy("+18005550199", DEFAULT_RULE, frozenset({M, N})),)


def test_a_decider_decides_against_the_index_and_book_it_was_given() -> None:
    # given a decider whose index holds alice unsubscribed at address 1
    alice = "+14155550100"
    index = UnsubscribedIndex()
    index.add(numbers.to_key(alice), 1)
    decider = decision.Decider(index, BOOK)
    # then alice is blocked by address 1's rules, by number and by key alike
    by_number = decider.decide("app2", M, alice)
    assert not by_number.allowed
    assert [(b.inbound_address, b.rule) for b in by_number.blocked_by] == [
        ("+18005550199", DEFAULT_RULE)]
    assert decider.decide_key("app2", M, numbers.to_key(alice), True) == by_number
    assert decider.decide("app2", V, alice) == decision.ALLOWED  # the default was narrowed
    # and anyone else is allowed when in scope, out of scope otherwise
    assert decider.decide("app2", M, "+14155550101") == decision.ALLOWED
    assert decider.decide("app2", M, "+442079460000") == decision.OUT_OF_SCOPE
    assert decider.decide("app2", M, "not a number") == decision.OUT_OF_SCOPE
    assert decider.decide_key("app2", M, numbers.to_key("+442079460000"), False) \
        == decision.OUT_OF_SCOPE


def test_the_relays_verdict_is_the_decision_without_its_reasons() -> None:
    # given alice unsubscribed at address 1, carol at addresses 1 and 2
    alice, carol = numbers.to_key("+14155550100"), numbers.to_key("+14155550102")
    index = UnsubscribedIndex()
    index.add(alice, 1)
    index.add(carol, 1)
    index.add(carol, 2)
    decider = decision.Decider(index, BOOK)
    # then each verdict is the decision's, as one of three shared constants
    verdicts = []
    for key in (alice, carol):
        for app, sms_type in [("app1", M), ("app1", N), ("app1", V), ("quiet", M),
                              ("app2", N), ("app2", V)]:
            verdict = decider.verdict_key(app, sms_type, key, True)
            full = decider.decide_key(app, sms_type, key, True)
            assert (verdict.allowed, verdict.in_scope) == (full.allowed, full.in_scope)
            assert verdict is (decision.ALLOWED if full.allowed else decision.BLOCKED)
            verdicts.append(verdict.allowed)
    # (the app's own rule, the default and both addresses each decided some)
    assert verdicts == [False, True, True, True, False, True,
                        False, False, False, False, False, False]
    assert Decision(allowed=False, in_scope=True, blocked_by=()) == decision.BLOCKED
    # ... and a number that never opted out is allowed, or out of scope
    bob = numbers.to_key("+14155550101")
    assert decider.verdict_key("app1", M, bob, True) is decision.ALLOWED
    assert decider.verdict_key("app1", M, bob, False) is decision.OUT_OF_SCOPE
    # whatever the scope flag says of a number that has opted out somewhere
    assert decider.verdict_key("app1", M, alice, False) is decision.BLOCKED


# --- through the service ---------------------------------------------------------

TOLL_FREE = "+18005550199"
SHORT = "898211"
ALICE = "+14155550100"


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[OptOutService]:
    svc = await OptOutService.open(f"sqlite:///{tmp_path}/d.db")
    await svc.create_address(TOLL_FREE)
    await svc.create_address(SHORT)
    yield svc
    await svc.close()


async def test_rule_edit_applies_at_once_to_already_unsubscribed(
    service: OptOutService,
) -> None:
    await service.handle_mo(TOLL_FREE, ALICE, "STOP")
    assert not service.decide("app1", N, ALICE).allowed  # default: all types

    await service.create_rule(TOLL_FREE, "app1", [M])
    assert service.decide("app1", N, ALICE).allowed
    assert not service.decide("app1", M, ALICE).allowed
    assert not service.decide("app2", N, ALICE).allowed  # other apps: default

    await service.replace_rule(TOLL_FREE, "app1", [M, N])
    assert not service.decide("app1", N, ALICE).allowed
    await service.set_default_rule(TOLL_FREE, [V])
    assert service.decide("app2", N, ALICE).allowed
    await service.delete_rule(TOLL_FREE, "app1")
    assert service.decide("app1", N, ALICE).allowed  # now under the narrowed default
    assert not service.decide("app1", V, ALICE).allowed


async def test_number_unsubscribed_at_two_addresses(service: OptOutService) -> None:
    await service.unsubscribe(ALICE, TOLL_FREE, source=Source.API)
    await service.unsubscribe(ALICE, SHORT, source=Source.API)
    await service.create_rule(TOLL_FREE, "app1", [])
    result = service.decide("app1", M, ALICE)
    assert not result.allowed
    assert [(b.inbound_address, b.rule) for b in result.blocked_by] == [(SHORT, DEFAULT_RULE)]

    await service.resubscribe(ALICE, SHORT, source=Source.API, reason="consent on file")
    assert service.decide("app1", M, ALICE).allowed
    assert not service.decide("app2", M, ALICE).allowed


async def test_out_of_scope_and_unknown_numbers(service: OptOutService) -> None:
    jamaica = "+18765550100"
    uk = "+442079460958"
    for number in (jamaica, uk):
        result = service.decide("app1", M, number)
        assert result.allowed and not result.in_scope
    clean = service.decide("app1", M, "+12125550100")
    assert clean.allowed and clean.in_scope and clean.blocked_by == ()


async def test_short_code_subscriber(service: OptOutService) -> None:
    await service.unsubscribe("12345", TOLL_FREE, source=Source.API)
    assert not service.decide("app1", M, "12345").allowed
