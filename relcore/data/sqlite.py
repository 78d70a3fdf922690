"""A user's SQLite file as a relbench :class:`~relbench.base.Dataset`.

The schema comes from what the file declares: each user table's single-column
``PRIMARY KEY`` (``PRAGMA table_info``) and its single-column ``FOREIGN KEY ...
REFERENCES`` clauses that point at another table's primary key (``PRAGMA
foreign_key_list``). SQLite cannot say which column is a table's event time, so
time columns are given explicitly as ``{table: column}`` (on the command line as
``TABLE.COLUMN``, see :func:`parse_time_cols`).

The file is opened read-only; keys are left as stored, because relbench's
``get_db()`` renumbers primary and foreign keys itself. Every problem a user can
cause is raised as a one-line :class:`~relcore.errors.RelcoreError`.
"""

from __future__ import annotations

import sqlite3
import warnings
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from relbench.base import Database, Dataset, Table

from relcore.data.validate import check_foreign_keys
from relcore.errors import RelcoreError

__all__ = ["SQLiteDataset", "parse_time_cols"]

# Used when the database has no time column: later than any real row, so
# relbench's ``upto(test_timestamp)`` keeps everything.
NO_TIME_SENTINEL = pd.Timestamp("2262-01-01")


@dataclass
class _TableSchema:
    """What SQLite declares about one table (names in their stored case)."""

    name: str
    columns: list[str]
    pkey_col: str | None
    fkeys: dict[str, str] = field(default_factory=dict)  # column -> parent table


def parse_time_cols(specs: list[str]) -> dict[str, str]:
    """Turn CLI strings like ``"orders.created_at"`` into ``{"orders": "created_at"}``.

    The table name ends at the first dot. A malformed spec or a table named twice
    raises :class:`RelcoreError`.
    """
    result: dict[str, str] = {}
    for spec in specs:
        table, dot, column = str(spec).strip().partition(".")
        table, column = table.strip(), column.strip()
        if not dot or not table or not column:
            raise RelcoreError(f"bad time column '{spec}': expected TABLE.COLUMN")
        if table in result and result[table] != column:
            raise RelcoreError(
                f"time column given twice for table '{table}': "
                f"'{result[table]}' and '{column}'"
            )
        result[table] = column
    return result


class SQLiteDataset(Dataset):
    """Tables, keys and time columns of a SQLite file.

    Args:
        path: The SQLite file.
        time_cols: ``{table: column}`` naming each event table's time column.
        val_timestamp, test_timestamp: Split timestamps. When omitted, both are
            one second after the latest time in the file (or
            :data:`NO_TIME_SENTINEL` without time columns), so ``get_db()`` keeps
            every row.
        cache_dir: Optional relbench cache directory for the built database.

    The file is read when the object is made (to validate the time columns and
    find the default timestamps) and again by :meth:`make_db`.
    """

    def __init__(
        self,
        path: str | Path,
        time_cols: dict[str, str] | None = None,
        val_timestamp: pd.Timestamp | str | None = None,
        test_timestamp: pd.Timestamp | str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(cache_dir=cache_dir)
        self.path = str(path)
        with closing(_connect(self.path)) as conn:
            schemas = _read_schemas(conn, self.path)
            self.time_cols = _resolve_time_cols(schemas, dict(time_cols or {}), self.path)
            default = None
            if val_timestamp is None or test_timestamp is None:
                default = _default_timestamp(conn, self.time_cols)
        self.val_timestamp = _as_timestamp(val_timestamp, "val_timestamp", default)
        self.test_timestamp = _as_timestamp(test_timestamp, "test_timestamp", default)
        if self.val_timestamp > self.test_timestamp:
            raise RelcoreError(
                f"val_timestamp {self.val_timestamp} is after test_timestamp "
                f"{self.test_timestamp}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r})"

    def make_db(self) -> Database:
        """Read every user table with its declared keys and the given time columns."""
        with closing(_connect(self.path)) as conn:
            schemas = _read_schemas(conn, self.path)
            tables = {
                name: _read_table(conn, schema, self.time_cols.get(name))
                for name, schema in schemas.items()
            }
        db = Database(tables)
        # relbench would silently null keys that point to no row; refuse instead.
        check_foreign_keys(db)
        return db


def _connect(path: str) -> sqlite3.Connection:
    """Open ``path`` read-only, checking that it exists and is a SQLite database."""
    file = Path(path)
    if not file.exists():
        raise RelcoreError(f"SQLite file not found: {path}")
    if not file.is_file():
        raise RelcoreError(f"SQLite path is not a file: {path}")
    try:
        # as_uri() percent-encodes the path, so '?' or '#' in a name stay literal.
        conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
        # Opening is lazy: this first read is what fails on a non-database file.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise RelcoreError(f"cannot read {path} as a SQLite database: {exc}") from exc
    return conn


def _query(conn: sqlite3.Connection, sql: str, params: tuple = ()) -> list[tuple]:
    """Run a query, turning SQLite errors into :class:`RelcoreError`."""
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise RelcoreError(f"SQLite query failed ({sql.split()[0]}): {exc}") from exc


def _quote(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _read_schemas(conn: sqlite3.Connection, path: str) -> dict[str, _TableSchema]:
    """Declared columns, primary keys and foreign keys of every user table."""
    names = [
        row[0]
        for row in _query(
            conn,
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
        )
    ]
    if not names:
        raise RelcoreError(f"SQLite database {path} has no tables")
    schemas = {name: _table_schema(conn, name) for name in names}
    for schema in schemas.values():
        schema.fkeys = _foreign_keys(conn, schema, schemas)
    return schemas


def _table_schema(conn: sqlite3.Connection, name: str) -> _TableSchema:
    """Columns and single-column primary key (None if composite or missing)."""
    info = _query(conn, "SELECT name, pk FROM pragma_table_info(?) ORDER BY cid", (name,))
    pkeys = [col for col, pk in info if pk > 0]
    return _TableSchema(
        name=name,
        columns=[col for col, _ in info],
        pkey_col=pkeys[0] if len(pkeys) == 1 else None,
    )


def _foreign_keys(
    conn: sqlite3.Connection, schema: _TableSchema, schemas: dict[str, _TableSchema]
) -> dict[str, str]:
    """Single-column foreign keys of ``schema`` that reference a table's primary key."""
    rows = _query(
        conn,
        'SELECT id, "table", "from", "to" FROM pragma_foreign_key_list(?) ORDER BY id, seq',
        (schema.name,),
    )
    by_id: dict[int, list[tuple[str, str, str | None]]] = {}
    for fk_id, parent, col, to in rows:
        by_id.setdefault(fk_id, []).append((parent, col, to))

    lower = {name.lower(): name for name in schemas}  # SQLite names are case-insensitive
    fkeys: dict[str, str] = {}
    for parts in by_id.values():
        parent, col, to = parts[0]
        if parent.lower() not in lower:
            raise RelcoreError(
                f"table '{schema.name}': foreign key '{col}' references unknown table '{parent}'"
            )
        target = schemas[lower[parent.lower()]]
        skip = _unsupported_fkey_reason(schema, parts, target, col, to)
        if skip:
            warnings.warn(f"table '{schema.name}': ignoring foreign key '{col}': {skip}")
            continue
        fkeys[col] = target.name
    return fkeys


def _unsupported_fkey_reason(
    schema: _TableSchema,
    parts: list[tuple[str, str, str | None]],
    target: _TableSchema,
    col: str,
    to: str | None,
) -> str | None:
    """Why relbench cannot represent this foreign key, or None if it can."""
    if len(parts) > 1:
        return "composite foreign keys are not supported"
    if target.pkey_col is None:
        return f"table '{target.name}' has no single-column primary key"
    # ``to`` is None for "REFERENCES parent" without a column: the parent's PK.
    if to is not None and to.lower() != target.pkey_col.lower():
        return f"it references '{target.name}.{to}', not the primary key"
    if schema.pkey_col is not None and col.lower() == schema.pkey_col.lower():
        return "the column is also this table's primary key"
    return None


def _resolve_time_cols(
    schemas: dict[str, _TableSchema], time_cols: dict[str, str], path: str
) -> dict[str, str]:
    """Check ``{table: column}`` against the schema; return it in stored case."""
    tables = {name.lower(): name for name in schemas}
    resolved: dict[str, str] = {}
    for table, column in time_cols.items():
        if table.lower() not in tables:
            raise RelcoreError(
                f"time column '{table}.{column}': no table '{table}' in {path} "
                f"(tables: {', '.join(schemas)})"
            )
        schema = schemas[tables[table.lower()]]
        columns = {c.lower(): c for c in schema.columns}
        if column.lower() not in columns:
            raise RelcoreError(
                f"time column '{table}.{column}': table '{schema.name}' has no column "
                f"'{column}' (columns: {', '.join(schema.columns)})"
            )
        resolved[schema.name] = columns[column.lower()]
    return resolved


def _to_datetime(values: pd.Series, where: str) -> pd.Series:
    """Parse a SQLite time column: ISO-like text, or numbers as unix seconds."""
    try:
        if pd.api.types.is_numeric_dtype(values):
            parsed = pd.to_datetime(values, unit="s")
        else:
            parsed = pd.to_datetime(values, format="mixed")
    except (ValueError, TypeError, OverflowError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RelcoreError(
            f"time column '{where}': cannot parse as timestamps ({first_line})"
        ) from exc
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.astype("datetime64[ns]")


def _default_timestamp(conn: sqlite3.Connection, time_cols: dict[str, str]) -> pd.Timestamp:
    """One second after the latest time in the file (or the no-time sentinel)."""
    latest = []
    for table, column in time_cols.items():
        rows = _query(conn, f"SELECT {_quote(column)} FROM {_quote(table)}")
        values = _to_datetime(pd.Series([r[0] for r in rows]), f"{table}.{column}")
        if values.notna().any():
            latest.append(values.max())
    if not latest:
        return NO_TIME_SENTINEL
    return max(latest) + pd.Timedelta(seconds=1)


def _as_timestamp(value, name: str, default: pd.Timestamp | None) -> pd.Timestamp:
    """A user-given split timestamp (or the default), as a ``pd.Timestamp``."""
    if value is None:
        return default
    try:
        return pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise RelcoreError(f"{name}: cannot parse '{value}' as a timestamp") from exc


def _read_table(conn: sqlite3.Connection, schema: _TableSchema, time_col: str | None) -> Table:
    """One table as a relbench :class:`Table` (keys as stored, times parsed)."""
    try:
        df = pd.read_sql_query(f"SELECT * FROM {_quote(schema.name)}", conn)
    except (sqlite3.Error, pd.errors.DatabaseError) as exc:
        raise RelcoreError(f"cannot read table '{schema.name}': {exc}") from exc
    if schema.pkey_col is not None and df[schema.pkey_col].isna().any():
        # SQLite lets non-INTEGER primary keys be NULL; relbench cannot index those.
        raise RelcoreError(
            f"table '{schema.name}': primary key '{schema.pkey_col}' has NULL values"
        )
    for col in schema.fkeys:
        df[col] = _integer_if_possible(df[col])
    if time_col is not None:
        df[time_col] = _to_datetime(df[time_col], f"{schema.name}.{time_col}")
    return Table(
        df=df,
        fkey_col_to_pkey_table=dict(schema.fkeys),
        pkey_col=schema.pkey_col,
        time_col=time_col,
    )


def _integer_if_possible(values: pd.Series) -> pd.Series:
    """Integer keys with NULLs arrive as float; make them nullable ints again so
    they join exactly with the integer primary keys they reference."""
    if pd.api.types.is_float_dtype(values):
        present = values.dropna()
        if (present == present.round()).all():
            return values.astype("Int64")
    return values
