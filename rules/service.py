"""INTERFACE SKELETON (being filled in): the one facade of the opt-out domain.

The SMPP relay and the HTTP API both call this class and nothing below it,
so a decision or an MO is handled by exactly one implementation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from rules.model import (
    BlockingRule,
    Decision,
    InboundAddress,
    Keywords,
    MoOutcome,
    Record,
    Replies,
    Reply,
    SmsType,
    Source,
    Unsubscription,
)


@dataclass(frozen=True, slots=True)
class ProgramInfo:
    """Used in default reply texts (CTIA: name the program, say how to opt
    back in, give contact information for HELP)."""

    name: str = "Messages"
    contact: str = "support"


@dataclass(frozen=True, slots=True)
class ImportReport:
    imported: int
    skipped: int  # already unsubscribed
    errors: tuple[tuple[int, str], ...]  # (line number, message)


class OptOutService:
    @classmethod
    async def open(
        cls, url: str, *, program: ProgramInfo = ProgramInfo(), mo_match_default: str = "leading"
    ) -> OptOutService:
        """Open the store at `url` ("sqlite:///rel/path.db", "sqlite:////abs/path.db",
        "sqlite://:memory:"), apply migrations, load the in-memory index."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def ping(self) -> bool:
        """True when the store answers (for /readyz)."""
        raise NotImplementedError

    # --- inbound addresses ---
    async def list_addresses(self) -> list[InboundAddress]:
        raise NotImplementedError

    async def get_address(self, address: str) -> InboundAddress:
        """`address` free-form; NotFound if absent."""
        raise NotImplementedError

    async def create_address(
        self, address: str, description: str = "", *, actor: str | None = None
    ) -> InboundAddress:
        """InvalidNumber/OutOfScope for non US/CA numbers, Conflict if it exists."""
        raise NotImplementedError

    async def update_address(
        self, address: str, description: str, *, actor: str | None = None
    ) -> InboundAddress:
        raise NotImplementedError

    async def delete_address(self, address: str, *, actor: str | None = None) -> None:
        """Deletes the address, its keywords, rules and unsubscriptions, but never its
        history records."""
        raise NotImplementedError

    async def get_keywords(self, address: str) -> Keywords:
        raise NotImplementedError

    async def set_keywords(
        self, address: str, keywords: Keywords, *, actor: str | None = None
    ) -> Keywords:
        raise NotImplementedError

    async def get_replies(self, address: str) -> Replies:
        raise NotImplementedError

    async def set_replies(
        self, address: str, replies: Replies, *, actor: str | None = None
    ) -> Replies:
        raise NotImplementedError

    # --- blocking rules ---
    async def list_rules(self, address: str) -> list[BlockingRule]:
        raise NotImplementedError

    async def create_rule(
        self, address: str, app_id: str, sms_types: Iterable[SmsType], *, actor: str | None = None
    ) -> BlockingRule:
        """Conflict if the app already has a rule at this address."""
        raise NotImplementedError

    async def replace_rule(
        self, address: str, app_id: str, sms_types: Iterable[SmsType], *, actor: str | None = None
    ) -> BlockingRule:
        raise NotImplementedError

    async def delete_rule(self, address: str, app_id: str, *, actor: str | None = None) -> None:
        raise NotImplementedError

    async def get_default_rule(self, address: str) -> frozenset[SmsType]:
        raise NotImplementedError

    async def set_default_rule(
        self, address: str, sms_types: Iterable[SmsType], *, actor: str | None = None
    ) -> frozenset[SmsType]:
        raise NotImplementedError

    # --- the decision (synchronous, in memory, never touches the disk) ---
    def decide(self, app_id: str, sms_type: SmsType, number: str) -> Decision:
        """`number` is already normalised (rules.numbers.normalize / from_smpp)."""
        raise NotImplementedError

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
        commit (nothing changed then)."""
        raise NotImplementedError

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
        raise NotImplementedError

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
        raise NotImplementedError

    async def list_unsubscribed(
        self,
        *,
        inbound_address: str | None = None,
        phone_number: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Unsubscription], str | None]:
        raise NotImplementedError

    def unsubscribed_count(self) -> int:
        raise NotImplementedError

    # --- history ---
    async def list_records(
        self,
        *,
        phone_number: str | None = None,
        inbound_address: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Record], str | None]:
        raise NotImplementedError

    def iter_records(
        self,
        *,
        phone_number: str | None = None,
        inbound_address: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> AsyncIterator[Record]:
        """All matching records, oldest first, read in pages (for CSV export)."""
        raise NotImplementedError

    # --- reply outbox ---
    async def pending_replies(self, limit: int = 100) -> list[Reply]:
        raise NotImplementedError

    async def mark_reply_sent(self, reply_id: int, message_id: str | None) -> None:
        raise NotImplementedError

    # --- import / export ---
    async def import_csv(
        self, lines: Iterable[str], *, actor: str | None = None
    ) -> ImportReport:
        raise NotImplementedError

    def export_csv(self) -> AsyncIterator[str]:
        raise NotImplementedError
