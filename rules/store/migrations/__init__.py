"""Versioned schema migrations, one ordered list per backend.

`sqlite.MIGRATIONS[i]` (and `postgres.MIGRATIONS[i]`) moves a schema from
version `i` to `i + 1`. A store applies every migration above its version
in ONE transaction together with the new version number, so a crash
half-way leaves it at its old version rather than at a version that lies
about its tables. Never edit a migration that has shipped: append one. A
new table or column goes into BOTH lists (the store interface is the same
on both backends).
"""

from __future__ import annotations

from collections.abc import Sequence

Migration = Sequence[str]


def pending(
    current_version: int, migrations: Sequence[Migration]
) -> list[tuple[int, Migration]]:
    """The migrations to run on a store at `current_version`, as (target
    version, statements), in order.

    A store newer than this code (a downgrade) is refused: running old code
    on a schema it does not know could silently drop opt-outs.
    """
    latest = len(migrations)
    if current_version < 0 or current_version > latest:
        raise ValueError(
            f"store schema version {current_version} is not supported by this "
            f"version of optout-sidecar (knows 0..{latest})"
        )
    return [(v + 1, migrations[v]) for v in range(current_version, latest)]
