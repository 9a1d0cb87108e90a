"""The durable store, behind one interface (`rules.store.base`).

`open_store(url)` picks the backend from the URL's scheme:

* ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite://:memory:``
  -- one file, one host (`rules.store.sqlite`);
* ``postgresql://user:password@host:port/db`` (or ``postgres://``) -- one
  database shared by a fleet of sidecars (`rules.store.postgres`).

Nothing above this package knows which one runs.
"""

from __future__ import annotations

from rules.model import InvalidValue
from rules.store.base import (
    ADDRESS_ID_LIMIT,
    PACK_SHIFT,
    AddressRow,
    Change,
    FeedSink,
    InboundFilter,
    InboundValues,
    RecordFilter,
    RecordValues,
    RuleRow,
    Store,
    Tx,
    UnsubRow,
    UnsubValues,
    pack,
)
from rules.store.sqlite import parse_url

__all__ = [
    "ADDRESS_ID_LIMIT",
    "PACK_SHIFT",
    "AddressRow",
    "Change",
    "FeedSink",
    "InboundFilter",
    "InboundValues",
    "RecordFilter",
    "RecordValues",
    "RuleRow",
    "Store",
    "Tx",
    "UnsubRow",
    "UnsubValues",
    "backend_for",
    "open_store",
    "pack",
    "parse_url",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def backend_for(url: str) -> str:
    """"sqlite" or "postgresql" for a store URL; InvalidValue for anything
    else (the message names the accepted forms)."""
    if url.startswith(POSTGRES_SCHEMES):
        return "postgresql"
    if url.startswith("sqlite://"):
        parse_url(url)  # refuses malformed sqlite URLs with a clear message
        return "sqlite"
    raise InvalidValue(
        f"unsupported store URL {url!r}: expected sqlite:///path.db or "
        "postgresql://user:password@host:port/database"
    )


async def open_store(url: str, *, busy_timeout_ms: int = 5000) -> Store:
    """Opens the store at `url`, creating and migrating its schema as needed.

    `busy_timeout_ms` bounds how long one statement (SQLite: a lock wait)
    may block before the operation fails with StoreUnavailable. Raises
    InvalidValue for a bad URL, StoreUnavailable when the store cannot be
    reached or migrated.
    """
    if backend_for(url) == "postgresql":
        from rules.store.postgres import PostgresStore

        return await PostgresStore.open(url, timeout_ms=busy_timeout_ms)
    from rules.store.sqlite import SqliteStore

    return await SqliteStore.open(url, busy_timeout_ms=busy_timeout_ms)
