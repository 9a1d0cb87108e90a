"""Inbound addresses, their keywords, replies and blocking rules."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from types import MappingProxyType

from rules import numbers
from rules.keywords import DEFAULT_KEYWORDS, validate_keywords
from rules.model import (
    ALL_SMS_TYPES,
    BlockingRule,
    Conflict,
    InboundAddress,
    InvalidValue,
    Keywords,
    NotFound,
    Replies,
    SmsType,
)
from rules.replies import ReplySettings, validate_replies
from rules.service import feed
from rules.service.core import ServiceCore, _Address, _app_id, _description, _sms_types
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
            tx.add_change(feed.ADDRESS, feed.address_payload(created))
        log.info("inbound address created: %s", number)
        return self._view(created)

    async def _edit(self, raw: str, change: Callable[[_Address], _Address]) -> _Address:
        """Applies `change` to an address's row in one transaction."""
        target = self._require(raw)

        async def run() -> _Address:
            async with self._store.transaction() as tx:
                new = change(self._current(target))
                await tx.update_address(new.row)
                tx.add_change(feed.ADDRESS, feed.address_payload(new))
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
                tx.add_change(feed.ADDRESS_DELETED, {"a": current.id})
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

