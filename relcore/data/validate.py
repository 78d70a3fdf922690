"""Integrity checks on a database before relbench renumbers its keys.

relbench's ``reindex_pkeys_and_fkeys`` silently turns a foreign key that points to no
row into a null, so a broken export would lose links without a word. We check first.
"""

from __future__ import annotations

import pandas as pd
from relbench.base import Database

from relcore.errors import RelcoreError


def dangling_foreign_keys(db: Database) -> dict[tuple[str, str], int]:
    """Count non-null foreign-key values that match no primary key, per (table, column)."""
    counts: dict[tuple[str, str], int] = {}
    for name, table in db.table_dict.items():
        for fkey_col, pkey_table in table.fkey_col_to_pkey_table.items():
            if pkey_table not in db.table_dict:
                raise RelcoreError(
                    f"table '{name}': foreign key '{fkey_col}' references unknown table "
                    f"'{pkey_table}'"
                )
            target = db.table_dict[pkey_table]
            if target.pkey_col is None:
                raise RelcoreError(
                    f"table '{name}': foreign key '{fkey_col}' references table "
                    f"'{pkey_table}', which has no primary key"
                )
            values = table.df[fkey_col].dropna()
            missing = int((~values.isin(target.df[target.pkey_col])).sum())
            if missing:
                counts[(name, fkey_col)] = missing
    return counts


def check_foreign_keys(db: Database) -> None:
    """Raise :class:`RelcoreError` naming every foreign key that points to no row."""
    dangling = dangling_foreign_keys(db)
    if dangling:
        parts = ", ".join(
            f"{table}.{col} -> {db.table_dict[table].fkey_col_to_pkey_table[col]}: {n} rows"
            for (table, col), n in sorted(dangling.items())
        )
        raise RelcoreError(f"dangling foreign keys (value matches no primary key): {parts}")


class ForeignKeyCheck:
    """Mixin for relbench ``Dataset`` subclasses: validate ``make_db()``'s output."""

    def make_db(self) -> Database:  # type: ignore[override]
        db = super().make_db()  # type: ignore[misc]
        check_foreign_keys(db)
        return db


def count_rows_and_links(db: Database) -> tuple[int, int]:
    """Total rows and non-null foreign-key values (links) of a database."""
    rows = sum(len(t.df) for t in db.table_dict.values())
    links = sum(
        int(pd.notna(t.df[c]).sum())
        for t in db.table_dict.values()
        for c in t.fkey_col_to_pkey_table
    )
    return rows, links
