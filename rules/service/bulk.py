"""CSV import and export of the unsubscribed list."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable

import numpy as np

from rules import csvio, numbers
from rules.service import feed
from rules.service.core import (
    _EXPORT_PAGE,
    _IMPORT,
    _IMPORT_YIELD_ROWS,
    IMPORT_BATCH,
    MAX_IMPORT_ERRORS,
    ImportReport,
    ServiceCore,
    _ImportRow,
)
from rules.store import (
    pack,
)

log = logging.getLogger("rules.service")


class BulkTransfer(ServiceCore):
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
        await self._write(self._audit_import(actor, imported, skipped, error_count))
        if imported:
            self._index.compact()  # fold the import into the sorted array now
        log.info(
            "import: %d imported, %d already unsubscribed, %d bad rows",
            imported,
            skipped,
            error_count,
        )
        return ImportReport(imported, skipped, tuple(errors), error_count)

    async def _audit_import(
        self, actor: str | None, imported: int, skipped: int, error_count: int
    ) -> None:
        async with self._store.transaction() as tx:
            await self._audit(
                tx,
                actor,
                "import",
                "unsubscribed",
                None,
                {"imported": imported, "skipped": skipped, "errors": error_count},
            )

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
            if unsubs:
                packed_values = np.fromiter((u[0] for u in unsubs), dtype="<i8", count=len(unsubs))
                tx.add_change(feed.BULK_UNSUB, {"n": len(unsubs)}, packed_values.tobytes())
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

