"""The store backends: URLs, migrations, durability settings, append-only
records, and failures surfacing as StoreUnavailable. Tests taking
`store_url` run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rules.model import InvalidValue, Source, Status, StoreUnavailable
from rules.store import RecordFilter, UnsubRow, backend_for, open_store, pack, parse_url
from rules.store.migrations import postgres as pg_schema
from rules.store.migrations import sqlite as sqlite_schema
from rules.store.sqlite import SqliteStore
from tests.stores import execute_raw

Store = SqliteStore
LATEST = {"sqlite": sqlite_schema.SCHEMA_VERSION, "postgresql": pg_schema.SCHEMA_VERSION}


def url_for(path: Path) -> str:
    return f"sqlite:///{path}"  # absolute path -> sqlite:////abs/path.db


@contextlib.asynccontextmanager
async def opened(path: Path, **options: Any) -> AsyncIterator[SqliteStore]:
    """The SQLite store at `path`, closed when the block ends."""
    store = await Store.open(url_for(path), **options)
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/optout.db", "var/optout.db"),
        ("sqlite:////var/lib/optout.db", "/var/lib/optout.db"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite:///x", "x"),  # the shortest file name
    ],
)
def test_url_forms_of_the_spec(url: str, path: str) -> None:
    assert parse_url(url) == path


@pytest.mark.parametrize(
    "url", ["postgresql://db/optout", "sqlite:/x.db", "sqlite://", "sqlite:///", "x.db"]
)
def test_bad_urls_are_refused_clearly(url: str) -> None:
    with pytest.raises(InvalidValue, match=f"^unsupported store URL {re.escape(repr(url))}: "):
        parse_url(url)


def test_a_bad_url_message_names_the_forms_that_work() -> None:
    with pytest.raises(InvalidValue) as other_scheme:
        parse_url("mysql://db/optout")
    assert str(other_scheme.value) == (
        "unsupported store URL 'mysql://db/optout': expected sqlite:///path.db")
    with pytest.raises(InvalidValue) as no_path:
        parse_url("sqlite://")
    assert str(no_path.value) == (
        "unsupported store URL 'sqlite://': use sqlite:///relative.db, "
        "sqlite:////absolute.db or sqlite://:memory:")


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("sqlite:///var/optout.db", "sqlite"),
        ("postgresql://u:p@db.example:5432/optout", "postgresql"),
        ("postgres://u:p@db.example/optout", "postgresql"),
    ],
)
def test_each_url_scheme_picks_its_backend(url: str, backend: str) -> None:
    assert backend_for(url) == backend


@pytest.mark.parametrize("url", ["mysql://db/optout", "sqlite:/x.db", "x.db", ""])
def test_unknown_schemes_are_refused_naming_both_forms(url: str) -> None:
    with pytest.raises(InvalidValue, match="sqlite"):
        backend_for(url)


async def test_unreachable_postgresql_is_store_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(StoreUnavailable, match="cannot open store"):
        await open_store(f"postgresql://u:p@127.0.0.1:{port}/optout")


async def test_fresh_file_is_migrated_to_the_current_version(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "rules.store.sqlite")
    async with opened(tmp_path / "new.db") as store:
        assert await store.schema_version() == sqlite_schema.SCHEMA_VERSION
    assert [r.getMessage() for r in caplog.records if r.name == "rules.store.sqlite"] == [
        f"store: migrating schema to version {v}"
        for v in range(1, sqlite_schema.SCHEMA_VERSION + 1)]
    with sqlite3.connect(tmp_path / "new.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert {"inbound_address", "blocking_rule", "unsubscribed", "record", "reply_outbox"} <= tables
    assert mode == "wal"


async def test_reopening_an_up_to_date_store_changes_nothing(store_url: str) -> None:
    store = await open_store(store_url)
    async with store.transaction() as tx:
        await tx.insert_unsubscription(
            UnsubRow(pack(14155550100, 1), 1, 14155550100, 1.0, Source.API)
        )
    await store.close()

    again = await open_store(store_url)
    try:
        assert await again.schema_version() == LATEST[backend_for(store_url)]
        assert list(await again.load_packed()) == [pack(14155550100, 1)]
    finally:
        await again.close()


async def test_a_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {sqlite_schema.SCHEMA_VERSION + 1}")
    with pytest.raises(StoreUnavailable, match="not supported"):
        await Store.open(url_for(db))


async def test_a_database_from_a_newer_version_is_refused(pg_url: str) -> None:
    await execute_raw(
        pg_url,
        "CREATE TABLE schema_version (version integer NOT NULL)",
        f"INSERT INTO schema_version VALUES ({pg_schema.SCHEMA_VERSION + 1})",
    )
    with pytest.raises(StoreUnavailable, match="not supported"):
        await open_store(pg_url)


async def test_sidecars_starting_together_migrate_an_empty_database_once(pg_url: str) -> None:
    # Given eight sidecars opening the same empty database at the same moment
    stores = await asyncio.gather(*(open_store(pg_url) for _ in range(8)))
    try:
        # then every one sees the current schema, built exactly once (a
        # second run of the migration would have failed on CREATE TABLE).
        versions = [await s.schema_version() for s in stores]
        assert versions == [pg_schema.SCHEMA_VERSION] * 8
        async with stores[0].reading() as tx:
            rows = await tx._all("SELECT version FROM schema_version")
        assert [tuple(r) for r in rows] == [(pg_schema.SCHEMA_VERSION,)]
    finally:
        for s in stores:
            await s.close()


async def test_memory_store_works(tmp_path: Path) -> None:
    store = await Store.open("sqlite://:memory:")
    try:
        assert await store.ping()
        assert len(await store.load_packed()) == 0
    finally:
        await store.close()


async def test_records_cannot_be_rewritten_or_deleted(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        async with store.transaction() as tx:
            await tx.insert_record(
                (
                    "+14155550100",
                    "+18005550199",
                    Status.UNSUBSCRIBED.value,
                    "api",
                    1.0,
                    "",
                    None,
                    None,
                    None,
                    None,
                )
            )
        statements = ["UPDATE record SET status = 'subscribed'", "DELETE FROM record"]
        if backend_for(store_url) == "postgresql":
            statements.append("TRUNCATE record")
        for statement in statements:
            with pytest.raises(StoreUnavailable, match="append-only"):
                async with store.transaction() as tx:
                    await tx._run(statement)
    finally:
        await store.close()


async def test_failure_inside_a_transaction_rolls_everything_back(store_url: str) -> None:
    store = await open_store(store_url)
    committed: list[str] = []
    try:
        with pytest.raises(StoreUnavailable):
            async with store.transaction() as tx:
                tx.after_commit(lambda: committed.append("yes"))
                await tx.insert_unsubscription(UnsubRow(pack(1, 1), 1, 1, 1.0, Source.API))
                # A second row with the same key violates the primary key.
                await tx.insert_unsubscription(UnsubRow(pack(1, 1), 1, 1, 1.0, Source.API))
        assert len(await store.load_packed()) == 0
        assert committed == []
    finally:
        await store.close()


async def test_closed_store_raises_store_unavailable(store_url: str) -> None:
    store = await open_store(store_url)
    await store.close()
    with pytest.raises(StoreUnavailable):
        async with store.reading():
            pass
    assert not await store.ping()


async def test_lock_held_past_busy_timeout_is_store_unavailable(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = await Store.open(url_for(db), busy_timeout_ms=50)
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(StoreUnavailable, match="locked"):
            async with store.transaction() as tx:
                await tx.insert_unsubscription(UnsubRow(pack(1, 1), 1, 1, 1.0, Source.API))
        other.execute("ROLLBACK")
        # Once the lock is gone the store works again: nothing was half-applied.
        async with store.transaction() as tx:
            await tx.insert_unsubscription(UnsubRow(pack(1, 1), 1, 1, 1.0, Source.API))
        assert list(await store.load_packed()) == [pack(1, 1)]
    finally:
        other.close()
        await store.close()


async def test_ping_fails_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    # given a store that waits long for locks, and another process holding the lock
    db = tmp_path / "s.db"
    store = await Store.open(url_for(db), busy_timeout_ms=60_000)
    other = sqlite3.connect(db, isolation_level=None)
    try:
        assert await store.ping()
        other.execute("BEGIN IMMEDIATE")
        # then readiness says no at once (reads alone would still pass) ...
        assert not await asyncio.wait_for(store.ping(), 10)
        other.execute("ROLLBACK")
        # ... and yes again once the lock is free, with writes waiting as long as before
        assert await store.ping()
        other.execute("BEGIN IMMEDIATE")
        assert len(await asyncio.wait_for(store.load_packed(), 10)) == 0  # reads pass
        commit = asyncio.ensure_future(_insert_one(store))
        # past the probe's 200 ms the write still waits (it cannot finish while
        # the lock is held; it would have failed with the probe's timeout)
        done, _ = await asyncio.wait({commit}, timeout=0.5)
        assert not done
        other.execute("ROLLBACK")
        await asyncio.wait_for(commit, 10)
    finally:
        other.close()
        await store.close()


async def _insert_one(store: SqliteStore) -> None:
    async with store.transaction() as tx:
        await tx.insert_unsubscription(UnsubRow(pack(1, 1), 1, 1, 1.0, Source.API))


async def test_an_import_at_a_time_that_is_not_finite_is_refused(tmp_path: Path) -> None:
    async with opened(tmp_path / "s.db") as store:
        for at in (float("nan"), float("inf")):
            with pytest.raises(ValueError, match=r"record time must be finite, not (nan|inf)"):
                async with store.transaction() as tx:
                    await tx.insert_import_records([("+14155550100", "+18005550199")], at=at,
                                                   actor=None)


async def test_a_connection_lost_under_the_store_is_store_unavailable(tmp_path: Path) -> None:
    async with opened(tmp_path / "s.db") as store:
        # the driver's connection goes away without the store closing it
        await store._conn.close()
        with pytest.raises(StoreUnavailable):
            async with store.reading() as tx:
                await tx.feed_head()
        with pytest.raises(StoreUnavailable):
            async with store.transaction() as tx:
                tx.add_change("x", {})
        assert not await store.ping()


async def test_a_closed_store_says_so_and_closes_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = await Store.open(url_for(tmp_path / "s.db"))
    await store.close()
    await store.close()
    with pytest.raises(StoreUnavailable, match=r"^store is closed$"):
        async with store.transaction():
            pass
    assert not await store.ping()
    assert [r for r in caplog.records if r.name == "rules.store.sqlite"] == []


async def test_an_error_while_closing_is_logged_not_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = await Store.open(url_for(tmp_path / "s.db"))
    real_close = store._conn.close

    async def failing_close() -> None:
        await real_close()
        raise sqlite3.OperationalError("disk I/O error")

    # the driver fails while closing (a disk error on the last checkpoint)
    monkeypatch.setattr(store._conn, "close", failing_close)
    await store.close()
    (warning,) = [r for r in caplog.records if r.name == "rules.store.sqlite"]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == "store: error while closing: disk I/O error"


async def test_a_domain_error_inside_a_transaction_passes_through_unchanged(
        tmp_path: Path) -> None:
    async with opened(tmp_path / "s.db") as store:
        with pytest.raises(InvalidValue, match="bad input"):
            async with store.transaction() as tx:
                tx.add_change("x", {})
                raise InvalidValue("bad input")
        async with store.reading() as tx:
            assert await tx.feed_head() == 0  # rolled back


async def test_a_follower_is_woken_within_the_poll_interval(tmp_path: Path) -> None:
    async with opened(tmp_path / "s.db") as store:
        # no notifications across processes on SQLite: a short poll instead,
        # never longer than the caller's own timeout
        await asyncio.wait_for(store.wait_for_changes(3600), 5)
        await asyncio.wait_for(store.wait_for_changes(0), 5)


async def test_an_inbound_log_row_that_fails_alone_is_undone_alone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "s.db"
    store = await Store.open(url_for(db))
    await execute_raw(url_for(db), "CREATE TRIGGER broken BEFORE INSERT ON inbound_message "
                                   "BEGIN SELECT RAISE(ABORT, 'disk failure'); END")
    try:
        async with store.transaction() as tx:
            tx.add_change("opt-out", {"n": 1})
            logged = await tx.try_insert_inbound_message(
                (1.0, "+14155550100", "+18005550199", "STOP", "opt_out", "STOP", False))
            tx.add_change("opt-out", {"n": 2})
        assert logged is None
        async with store.reading() as tx:
            assert await tx.feed_head() == 2  # the rest of the transaction committed
        (warning,) = [r for r in caplog.records if r.name == "rules.store.sqlite"]
        assert warning.levelno == logging.WARNING
        assert warning.getMessage() == "store: inbound message not logged: disk failure"
        await execute_raw(url_for(db), "DROP TRIGGER broken")
        async with store.transaction() as tx:
            logged = await tx.try_insert_inbound_message(
                (2.0, "+14155550100", "+18005550199", "STOP", "opt_out", "STOP", False))
            assert logged is not None and await tx.inbound_message(logged) is not None
    finally:
        await store.close()


async def test_unopenable_file_is_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(StoreUnavailable, match=r"^cannot open store '.*not-a-dir/s\.db': "):
        await Store.open(url_for(blocker / "s.db"))


async def test_a_store_in_a_new_directory_tree_is_created(tmp_path: Path) -> None:
    store = await Store.open(url_for(tmp_path / "a" / "b" / "c" / "s.db"))
    await store.close()
    assert (tmp_path / "a" / "b" / "c" / "s.db").is_file()


async def test_a_memory_store_leaves_no_file_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite://:memory:", "sqlite:///:memory:"):
        store = await Store.open(url)
        async with store.transaction() as tx:
            tx.add_change("x", {})
        await store.close()
    assert list(tmp_path.iterdir()) == []


async def test_a_file_that_is_not_a_database_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not an SQLite database, just some text " * 100)
    with pytest.raises(StoreUnavailable, match=r"^cannot (configure|migrate) store: file is not a"):
        await Store.open(url_for(path))


async def test_a_migration_that_fails_is_store_unavailable_and_changes_nothing(
        tmp_path: Path) -> None:
    # given a file someone started by hand: one of our tables, but no schema version
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE record (x)")
    with pytest.raises(StoreUnavailable,
                       match=r"^cannot migrate store: table record already exists"):
        await Store.open(url_for(path))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"record"}  # rolled back whole


async def test_load_packed_on_every_backend(store_url: str) -> None:
    store = await open_store(store_url)
    values = [pack(k, a) for k in (14155550101, 14155550100, 16045550100, 2**34) for a in (2, 1)]
    try:
        empty = await store.load_packed()
        assert len(empty) == 0 and empty.dtype.name == "int64"  # the index's input type
        async with store.transaction() as tx:
            await tx.insert_unsubscriptions(
                UnsubRow(p, p & 0x7FFF, p >> 15, 1.0, Source.IMPORT) for p in values
            )
        loaded = await store.load_packed()
        assert loaded.dtype.name == "int64"
        assert list(loaded) == sorted(values)
    finally:
        await store.close()


@pytest.mark.parametrize("chunk", [2, 5, 1 << 20])
async def test_load_packed_returns_every_value_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr("rules.store.sqlite._LOAD_CHUNK", chunk)
    store = await Store.open(url_for(tmp_path / "s.db"))
    values = [pack(k, a) for k in (14155550101, 14155550100, 16045550100) for a in (2, 1)]
    try:
        async with store.transaction() as tx:
            await tx.insert_unsubscriptions(
                UnsubRow(p, p & 0x7FFF, p >> 15, 1.0, Source.IMPORT) for p in values
            )
        loaded = await store.load_packed()
        assert loaded.dtype.name == "int64"
        assert list(loaded) == sorted(values)
    finally:
        await store.close()


async def test_debug_logging_does_not_leak_numbers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    driver = logging.getLogger("aiosqlite")
    caplog.set_level(logging.NOTSET, "aiosqlite")  # as nobody configured it (restored after)
    async with opened(tmp_path / "s.db") as store, store.transaction() as tx:
        await tx.insert_record(
            (
                "+14155550177",
                "+18005550199",
                "unsubscribed",
                "api",
                1.0,
                "",
                None,
                "STOP please",
                None,
                None,
            )
        )
    assert "4155550177" not in caplog.text
    assert "STOP please" not in caplog.text
    assert driver.level == logging.INFO


async def test_a_driver_log_level_set_on_purpose_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "aiosqlite")  # someone debugging the driver itself
    store = await Store.open(url_for(tmp_path / "s.db"))
    await store.close()
    assert logging.getLogger("aiosqlite").level == logging.DEBUG


@pytest.mark.parametrize("rows", [0, 1, 99, 100, 101, 250])
async def test_multi_row_inserts_write_every_row(store_url: str, rows: int) -> None:
    store = await open_store(store_url)
    try:
        async with store.transaction() as tx:
            await tx.insert_unsubscription_values(
                [(pack(14155550000 + i, 1), 1, 14155550000 + i, 1.0, "import") for i in range(rows)]
            )
            await tx.insert_import_records(
                [(f"+1415555{i:04d}", "+18005550199") for i in range(rows)], at=5.0, actor="o'k"
            )
        assert len(await store.load_packed()) == rows
        async with store.reading() as tx:
            records = await tx.records(RecordFilter(), after=None, limit=1000)
        assert len(records) == rows
        assert all(r.actor == "o'k" and r.at == 5.0 and r.source is Source.IMPORT for r in records)
    finally:
        await store.close()


async def test_store_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    # Given a permissive umask (as in many containers),
    import os
    import stat

    old = os.umask(0o000)
    try:
        # when the store is created and written to (so the WAL and the shared
        # memory file exist),
        path = tmp_path / "sub" / "optout.db"
        store = await Store.open(url_for(path))
        async with store.transaction() as tx:
            await tx.insert_unsubscription(UnsubRow(pack(1, 1), 1, 1, 1.0, Source.API))
        try:
            # then the database, its -wal and its -shm are its owner's only.
            for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                assert name.exists(), name
                assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
        finally:
            await store.close()
    finally:
        os.umask(old)


async def test_an_existing_world_readable_store_is_tightened(tmp_path: Path) -> None:
    import os
    import stat

    path = tmp_path / "optout.db"
    store = await Store.open(url_for(path))
    await store.close()
    os.chmod(path, 0o644)
    async with opened(path) as store:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_left_behind_wal_and_shm_readable_by_others_are_tightened(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import os
    import stat

    # given a store whose files were left readable by others (say, restored
    # from a backup with a loose umask), the WAL and shared memory included
    path = tmp_path / "optout.db"
    store = await Store.open(url_for(path))
    await store.close()
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    for name in (path, wal, shm):
        name.touch()
        os.chmod(name, 0o644)
    # when the store opens it, then all three are its owner's only, each with a warning
    store = await Store.open(url_for(path))
    await store.close()
    for name in (path, wal, shm):
        if name.exists():  # SQLite removes the WAL and -shm files on a clean close
            assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
    warned = [r.getMessage() for r in caplog.records if r.name == "rules.store.sqlite"]
    assert warned == [f"store: {name} was readable by others (mode 644); now 600"
                      for name in (path, wal, shm)]

    # a missing WAL does not stop the -shm check; private files give no warning
    caplog.clear()
    for name in (path, shm):
        name.touch()
    os.chmod(shm, 0o640)
    wal.unlink(missing_ok=True)
    async with opened(path) as store:
        assert stat.S_IMODE(shm.stat().st_mode) == 0o600
        warned = [r.getMessage() for r in caplog.records if r.name == "rules.store.sqlite"]
        assert warned == [f"store: {shm} was readable by others (mode 640); now 600"]


async def test_a_store_file_replaced_while_open_refuses_to_commit(tmp_path: Path) -> None:
    path = tmp_path / "optout.db"
    async with opened(path) as store:
        async with store.transaction() as tx:
            tx.add_change("before", {})
        # someone restores another file over the open one
        other = tmp_path / "other.db"
        other.write_bytes(path.read_bytes())
        other.replace(path)
        with pytest.raises(StoreUnavailable,
                           match=r"store file '.*optout\.db' was removed or replaced while open"):
            async with store.transaction() as tx:
                tx.add_change("lost", {})
        assert not await store.ping()


async def test_old_changes_are_pruned_only_when_ids_cross_a_multiple_of_256(
        tmp_path: Path) -> None:
    import time

    from rules.store.base import FEED_KEEP, PRUNE_EVERY

    path = tmp_path / "optout.db"
    async with opened(path) as store:
        # given a long feed: every change old except id 5, the head at 10400
        old, now = 1.0, time.time()
        with sqlite3.connect(path, isolation_level=None) as conn:
            conn.executemany("INSERT INTO changes (id, at, kind, payload) VALUES (?, ?, 'x', '{}')",
                             [(i, now if i == 5 else old) for i in range(1, 10401)])
            conn.execute("UPDATE feed_head SET id = 10400")

        async def ids() -> list[int]:
            async with store.reading() as tx:
                return [c.id for c in await tx.changes_after(0, 10)]

        # when a write does not cross a multiple of PRUNE_EVERY, nothing is pruned
        assert 10400 // PRUNE_EVERY == 10401 // PRUNE_EVERY
        async with store.transaction() as tx:
            tx.add_change("y", {})
        assert (await ids())[:3] == [1, 2, 3]
        # when one does, the changes older than the retention and more than
        # FEED_KEEP behind the head go; a recent one stays however far behind
        with sqlite3.connect(path, isolation_level=None) as conn:
            conn.execute("UPDATE feed_head SET id = 10495")
        async with store.transaction() as tx:
            tx.add_change("z", {})
        first_kept = 10496 - FEED_KEEP + 1
        assert (await ids())[:3] == [5, first_kept, first_kept + 1]


async def test_audit_values_are_stored_as_canonical_json_or_null(tmp_path: Path) -> None:
    # an operator querying the file compares the stored text: equal values,
    # equal text (sorted keys), and "nothing" as SQL NULL, not the text 'null'
    path = tmp_path / "s.db"
    async with opened(path) as store, store.transaction() as tx:
        await tx.insert_audit(at=1.0, actor="ops", action="address.update", target="x",
                              before={"b": 1, "a": 2}, after=None)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT before, after FROM audit").fetchall() == [
            ('{"a": 2, "b": 1}', None)]
