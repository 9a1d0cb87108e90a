"""Inbound addresses, their keywords, replies and blocking rules."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from types import MappingProxyType

from rules import nearmiss, numbers
from rules.compliance import missing_required_keywords
from rules.keywords import DEFAULT_KEYWORDS, validate_keywords
from rules.model import (
    ALL_SMS_TYPES,
    AddressHasUnsubscribed,
    BlockingRule,
    Conflict,
    InboundAddress,
    InvalidValue,
    Keywords,
    NoncompliantKeywords,
    NotFound,
    Replies,
    SmsType,
    Source,
)
from rules.replies import ReplySettings, validate_replies
from rules.service import feed
from rules.service.core import (
    REASON_ADDRESS_DELETED,
    ServiceCore,
    _Address,
    _address_json,
    _app_id,
    _description,
    _sms_types,
    _source,
    keywords_json,
    replies_json,
    types_list,
)
from rules.store import (
    ADDRESS_ID_LIMIT,
    AddressRow,
    RuleRow,
)

log = logging.getLogger("rules.service")


class AddressCommands(ServiceCore):
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
        return await self._write(self._create_address(number, description, actor))

    async def _create_address(
        self, number: str, description: str, actor: str | None
    ) -> InboundAddress:
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
            await self._audit(
                tx, actor, "address.create", number, None, _address_json(self._view(created))
            )
            tx.add_change(feed.ADDRESS, feed.address_payload(created))
        log.info("inbound address created: %s", number)
        return self._view(created)

    async def _edit(
        self,
        raw: str,
        change: Callable[[_Address], _Address],
        *,
        actor: str | None,
        action: str,
        part: Callable[[_Address], object],
        note: Callable[[_Address], dict[str, object]] | None = None,
    ) -> _Address:
        """Applies `change` to an address's row in one transaction, with an
        audit entry `action` whose before/after are `part` of the address
        (plus `note(new)` merged into `after`, when given)."""
        target = self._require(raw)

        async def run() -> _Address:
            async with self._store.transaction() as tx:
                old = self._current(target)
                new = change(old)
                await tx.update_address(new.row)
                after = part(new)
                if note is not None and isinstance(after, dict):
                    after = {**after, **note(new)}
                await self._audit(tx, actor, action, old.address, part(old), after)
                tx.add_change(feed.ADDRESS, feed.address_payload(new))
            return new

        return await self._write(run())

    async def update_address(
        self, address: str, description: str, *, actor: str | None = None
    ) -> InboundAddress:
        description = _description(description)
        new = await self._edit(
            address,
            lambda a: replace(a, row=replace(a.row, description=description)),
            actor=actor,
            action="address.update",
            part=lambda a: {"description": a.row.description},
        )
        return self._view(new)

    async def delete_address(
        self,
        address: str,
        *,
        actor: str | None = None,
        force: bool = False,
        source: Source = Source.API,
    ) -> int:
        """Deletes the address, its keywords, rules and unsubscriptions, but
        never its history records. While numbers are unsubscribed there it
        refuses with AddressHasUnsubscribed (HTTP 409, with the count) unless
        `force`; forced, each released number gets its own "subscribed"
        record (reason: the address was deleted; the actor). Returns how many
        opt-outs were released."""
        target = self._require(address)
        source = _source(source)

        async def run() -> int:
            async with self._store.transaction() as tx:
                current = self._current(target)
                count = await tx.count_unsubscribed(current.id)
                if count and not force:
                    raise AddressHasUnsubscribed(
                        f"{count} number(s) are unsubscribed at {current.address}; deleting it "
                        "releases their opt-outs. Repeat with force=true to delete anyway.",
                        count,
                    )
                released: list[str] = []
                if count:
                    keys = await tx.unsubscribed_keys(current.id)
                    released = [numbers.from_key(k) for k in keys]
                    await tx.insert_release_records(
                        released,
                        inbound_address=current.address,
                        at=self._clock(),
                        source=source,
                        actor=actor,
                        reason=REASON_ADDRESS_DELETED,
                    )
                await self._audit(
                    tx,
                    actor,
                    "address.delete",
                    current.address,
                    _address_json(self._view(current)),
                    {"released": len(released)} if force else None,
                )
                removed = await tx.delete_address(current.id)
                tx.add_change(feed.ADDRESS_DELETED, {"a": current.id})
            log.info(
                "inbound address deleted: %s (%d opt-outs released, records kept)",
                current.address,
                removed,
            )
            return removed

        return await self._write(run())

    async def get_keywords(self, address: str) -> Keywords:
        return self._require(address).row.keywords

    async def set_keywords(
        self,
        address: str,
        keywords: Keywords,
        *,
        actor: str | None = None,
        allow_noncompliant: bool = False,
    ) -> Keywords:
        """Replaces the keyword lists. An opt-out list without one of the
        words FCC 24-24 requires (`rules.compliance.REQUIRED_OPT_OUT`) raises
        NoncompliantKeywords naming them, unless `allow_noncompliant`: then
        it is saved, and the audit entry says so."""
        clean = validate_keywords(keywords)
        missing = missing_required_keywords(clean)
        if missing and not allow_noncompliant:
            raise NoncompliantKeywords(
                "The opt-out keywords lack " + ", ".join(missing) + ": FCC 24-24 says each of "
                "STOP, QUIT, END, REVOKE, OPT OUT, CANCEL and UNSUBSCRIBE revokes consent. "
                'Send "allow_noncompliant": true to save them anyway.',
                missing,
            )
        note: Callable[[_Address], dict[str, object]] | None = None
        if missing:
            note = lambda _a: {"allow_noncompliant": True, "missing": list(missing)}  # noqa: E731
        new = await self._edit(
            address,
            lambda a: replace(a, row=replace(a.row, keywords=clean)),
            actor=actor,
            action="keywords.update",
            part=lambda a: keywords_json(a.row.keywords),
            note=note,
        )
        return new.row.keywords

    async def get_near_miss_phrases(self, address: str) -> tuple[str, ...]:
        """The address's own near-miss phrases (on top of
        `rules.nearmiss.DEFAULT_PHRASES`)."""
        return self._require(address).row.near_miss_phrases

    async def set_near_miss_phrases(
        self, address: str, phrases: Iterable[str], *, actor: str | None = None
    ) -> tuple[str, ...]:
        clean = nearmiss.validate_phrases(list(phrases))
        new = await self._edit(
            address,
            lambda a: replace(a, row=replace(a.row, near_miss_phrases=clean)),
            actor=actor,
            action="near_miss_phrases.update",
            part=lambda a: {"phrases": list(a.row.near_miss_phrases)},
        )
        return new.row.near_miss_phrases

    async def get_replies(self, address: str) -> Replies:
        """The texts that go out now (None: switched off)."""
        return self._require(address).row.replies.effective(self._program)

    async def set_replies(
        self, address: str, replies: Replies, *, actor: str | None = None
    ) -> Replies:
        """Sets the three texts (None switches one off). A text equal to the
        default keeps following the configured program name."""
        settings = ReplySettings.from_replies(validate_replies(replies), self._program)
        new = await self._edit(
            address,
            lambda a: replace(a, row=replace(a.row, replies=settings)),
            actor=actor,
            action="replies.update",
            part=lambda a: replies_json(a.row.replies.effective(self._program)),
        )
        return new.row.replies.effective(self._program)

    # --- blocking rules ---

    async def list_rules(self, address: str) -> list[BlockingRule]:
        return list(self._view(self._require(address)).rules)

    async def _rule_write(
        self,
        raw: str,
        app_id: str,
        sms_types: frozenset[SmsType] | None,
        kind: str,
        actor: str | None,
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
                before = current.rules.get(app_id)
                await self._audit(
                    tx,
                    actor,
                    f"rule.{kind}",
                    f"{current.address} {app_id}",
                    None if before is None else {"sms_types": types_list(before)},
                    None if sms_types is None else {"sms_types": types_list(sms_types)},
                )
                tx.add_change(feed.ADDRESS, feed.address_payload(new))
            if sms_types is None:
                return None
            return BlockingRule(current.address, app_id, sms_types)

        return await self._write(run())

    async def create_rule(
        self, address: str, app_id: str, sms_types: Iterable[SmsType], *, actor: str | None = None
    ) -> BlockingRule:
        """Conflict if the app already has a rule at this address. An empty
        `sms_types` is allowed: that app is then blocked for nothing there."""
        types = _sms_types(sms_types)
        rule = await self._rule_write(address, _app_id(app_id), types, "create", actor)
        assert rule is not None
        return rule

    async def replace_rule(
        self, address: str, app_id: str, sms_types: Iterable[SmsType], *, actor: str | None = None
    ) -> BlockingRule:
        """NotFound if the app has no rule at this address."""
        types = _sms_types(sms_types)
        rule = await self._rule_write(address, _app_id(app_id), types, "replace", actor)
        assert rule is not None
        return rule

    async def delete_rule(self, address: str, app_id: str, *, actor: str | None = None) -> None:
        """NotFound if the app has no rule at this address; afterwards the app
        falls under the address's default rule."""
        await self._rule_write(address, _app_id(app_id), None, "delete", actor)

    async def get_default_rule(self, address: str) -> frozenset[SmsType]:
        return self._require(address).row.default_rule

    async def set_default_rule(
        self, address: str, sms_types: Iterable[SmsType], *, actor: str | None = None
    ) -> frozenset[SmsType]:
        types = _sms_types(sms_types)
        new = await self._edit(
            address,
            lambda a: replace(a, row=replace(a.row, default_rule=types)),
            actor=actor,
            action="default_rule.update",
            part=lambda a: {"sms_types": types_list(a.row.default_rule)},
        )
        return new.row.default_rule
