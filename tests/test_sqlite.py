"""Loading a SQLite file: declared keys, time columns, relbench reindexing, errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from relcore.data.sqlite import NO_TIME_SENTINEL, SQLiteDataset, parse_time_cols
from relcore.errors import RelcoreError

SHOP_SQL = """
CREATE TABLE Users (user_code TEXT PRIMARY KEY, name TEXT, joined TEXT);
CREATE TABLE products (id INTEGER PRIMARY KEY, title TEXT, price REAL);
CREATE TABLE orders (
    order_id INTEGER PRIMARY KEY,
    user_code TEXT REFERENCES users(user_code),
    product_id INTEGER,
    created_at TEXT,
    amount REAL,
    FOREIGN KEY (product_id) REFERENCES products
);
CREATE TABLE tags (product_id INTEGER REFERENCES products(id), tag TEXT);
CREATE TABLE pairs (a INTEGER, b INTEGER, PRIMARY KEY (a, b));
INSERT INTO Users VALUES ('u-b', 'Bob', '2020-01-01'), ('u-a', 'Ann', '2020-02-01');
INSERT INTO products VALUES (10, 'pen', 1.5), (20, 'ink', 3.0), (30, 'pad', 2.0);
INSERT INTO orders VALUES
    (100, 'u-a', 20, '2021-03-01 10:00:00', 3.0),
    (101, 'u-b', 10, '2021-01-01 09:00:00', 1.5),
    (102, NULL, 30, '2021-02-01', 2.0),
    (103, 'u-a', NULL, '2021-04-01T12:00:00', 5.0);
INSERT INTO tags VALUES (10, 'office'), (30, 'paper');
INSERT INTO pairs VALUES (1, 2);
"""


def _make_db(path: Path, sql: str) -> str:
    with sqlite3.connect(path) as conn:
        conn.executescript(sql)
    conn.close()
    return str(path)


@pytest.fixture
def shop(tmp_path) -> str:
    return _make_db(tmp_path / "shop.db", SHOP_SQL)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


def test_schema_from_declared_keys(shop):
    dataset = SQLiteDataset(shop, time_cols={"orders": "created_at"})
    db = dataset.make_db()
    tables = db.table_dict
    assert set(tables) == {"Users", "products", "orders", "tags", "pairs"}
    assert tables["Users"].pkey_col == "user_code"  # a TEXT primary key
    assert tables["products"].pkey_col == "id"
    assert tables["orders"].pkey_col == "order_id"
    assert tables["tags"].pkey_col is None  # no primary key
    assert tables["pairs"].pkey_col is None  # composite primary key
    # "REFERENCES users(...)" names the table in another case; "REFERENCES products"
    # names no column (meaning the primary key).
    assert tables["orders"].fkey_col_to_pkey_table == {
        "user_code": "Users",
        "product_id": "products",
    }
    assert tables["tags"].fkey_col_to_pkey_table == {"product_id": "products"}
    assert tables["orders"].time_col == "created_at"
    assert {n for n, t in tables.items() if t.time_col} == {"orders"}
    assert pd.api.types.is_datetime64_dtype(tables["orders"].df["created_at"])
    # Only declared time columns are converted.
    assert tables["Users"].df["joined"].dtype == object


def test_default_timestamps_keep_every_row(shop):
    dataset = SQLiteDataset(shop, time_cols={"orders": "created_at"})
    latest = pd.Timestamp("2021-04-01 12:00:00")
    assert dataset.val_timestamp == dataset.test_timestamp == latest + pd.Timedelta(seconds=1)
    db = dataset.get_db()
    assert len(db.table_dict["orders"]) == 4


def test_get_db_reindexes_keys(shop):
    db = SQLiteDataset(shop, time_cols={"orders": "created_at"}).get_db()
    users = db.table_dict["Users"].df
    # A table without a time column keeps its row order: 'u-b' -> 0, 'u-a' -> 1.
    assert users["user_code"].tolist() == [0, 1]
    assert users["name"].tolist() == ["Bob", "Ann"]
    orders = db.table_dict["orders"].df
    # Orders are sorted by time (101, 102, 100, 103) and renumbered.
    assert orders["order_id"].tolist() == [0, 1, 2, 3]
    assert orders["amount"].tolist() == [1.5, 2.0, 3.0, 5.0]
    assert orders["user_code"].tolist() == [0, pd.NA, 1, 1]
    # products: 10 -> 0, 20 -> 1, 30 -> 2.
    assert orders["product_id"].tolist() == [0, 2, 1, pd.NA]
    assert db.table_dict["tags"].df["product_id"].tolist() == [0, 2]


def test_explicit_timestamps_cut_rows(shop):
    dataset = SQLiteDataset(
        shop,
        time_cols={"orders": "created_at"},
        val_timestamp="2021-01-15",
        test_timestamp="2021-02-15",
    )
    assert dataset.test_timestamp == pd.Timestamp("2021-02-15")
    assert len(dataset.get_db().table_dict["orders"]) == 2
    assert len(dataset.get_db(upto_test_timestamp=False).table_dict["orders"]) == 4


def test_no_time_columns_uses_sentinel(shop):
    dataset = SQLiteDataset(shop)
    assert dataset.val_timestamp == dataset.test_timestamp == NO_TIME_SENTINEL
    db = dataset.get_db()
    assert all(t.time_col is None for t in db.table_dict.values())
    assert len(db.table_dict["orders"]) == 4


def test_time_column_names_are_case_insensitive(shop):
    dataset = SQLiteDataset(shop, time_cols={"ORDERS": "Created_At"})
    assert dataset.time_cols == {"orders": "created_at"}


def test_integer_unix_time_column(tmp_path):
    path = _make_db(
        tmp_path / "events.db",
        "CREATE TABLE events (id INTEGER PRIMARY KEY, ts INTEGER);"
        "INSERT INTO events VALUES (1, 1600000000), (2, 1500000000), (3, NULL);",
    )
    dataset = SQLiteDataset(path, time_cols={"events": "ts"})
    assert dataset.test_timestamp == pd.Timestamp(1600000001, unit="s")
    times = dataset.make_db().table_dict["events"].df["ts"]
    assert times.iloc[0] == pd.Timestamp("2020-09-13 12:26:40")
    assert times.isna().sum() == 1


def test_file_is_opened_read_only(shop):
    before = Path(shop).read_bytes()
    SQLiteDataset(shop, time_cols={"orders": "created_at"}).get_db()
    assert Path(shop).read_bytes() == before
    assert sorted(p.name for p in Path(shop).parent.iterdir()) == ["shop.db"]


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.db"
    with pytest.raises(RelcoreError) as exc:
        SQLiteDataset(str(missing))
    assert "not found" in _one_line(exc) and str(missing) in str(exc.value)
    assert not missing.exists()  # read-only open must not create it


def test_not_a_sqlite_file(tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("this is just some text, long enough to not be a database header\n" * 20)
    with pytest.raises(RelcoreError) as exc:
        SQLiteDataset(str(text))
    message = _one_line(exc)
    assert "SQLite" in message and str(text) in message


def test_unknown_time_table(shop):
    with pytest.raises(RelcoreError) as exc:
        SQLiteDataset(shop, time_cols={"purchases": "created_at"})
    message = _one_line(exc)
    assert "purchases" in message and "orders" in message  # lists the known tables


def test_unknown_time_column(shop):
    with pytest.raises(RelcoreError) as exc:
        SQLiteDataset(shop, time_cols={"orders": "placed_at"})
    message = _one_line(exc)
    assert "placed_at" in message and "created_at" in message  # lists the columns


def test_unparseable_time_column(shop):
    with pytest.raises(RelcoreError) as exc:
        SQLiteDataset(shop, time_cols={"Users": "name"})
    assert "Users.name" in _one_line(exc)


def test_foreign_key_to_unknown_table(tmp_path):
    path = _make_db(
        tmp_path / "ghost.db",
        "CREATE TABLE a (id INTEGER PRIMARY KEY, g INTEGER REFERENCES ghost(id));",
    )
    with pytest.raises(RelcoreError) as exc:
        SQLiteDataset(path)
    message = _one_line(exc)
    assert "ghost" in message and "'a'" in message


def test_dangling_foreign_key_is_refused(tmp_path):
    path = _make_db(
        tmp_path / "dangling.db",
        "CREATE TABLE p (id INTEGER PRIMARY KEY);"
        "CREATE TABLE c (id INTEGER PRIMARY KEY, p_id INTEGER REFERENCES p(id));"
        "INSERT INTO p VALUES (1); INSERT INTO c VALUES (1, 1), (2, 99);",
    )
    with pytest.raises(RelcoreError) as exc:
        SQLiteDataset(path).get_db()
    assert "c.p_id" in _one_line(exc)


def test_foreign_key_to_non_primary_column_is_ignored(tmp_path):
    path = _make_db(
        tmp_path / "unique.db",
        "CREATE TABLE p (id INTEGER PRIMARY KEY, code TEXT UNIQUE);"
        "CREATE TABLE c (id INTEGER PRIMARY KEY, code TEXT REFERENCES p(code));",
    )
    with pytest.warns(UserWarning, match="not the primary key"):
        db = SQLiteDataset(path).make_db()
    assert db.table_dict["c"].fkey_col_to_pkey_table == {}


def test_empty_database(tmp_path):
    path = _make_db(tmp_path / "empty.db", "CREATE TABLE t (x INTEGER); DROP TABLE t;")
    with pytest.raises(RelcoreError) as exc:
        SQLiteDataset(path)
    assert "no tables" in _one_line(exc)


def test_parse_time_cols():
    assert parse_time_cols(["orders.created_at", " reviews.ts "]) == {
        "orders": "created_at",
        "reviews": "ts",
    }
    assert parse_time_cols([]) == {}
    for bad in ["orders", "orders.", ".created_at", ""]:
        with pytest.raises(RelcoreError) as exc:
            parse_time_cols([bad])
        assert "TABLE.COLUMN" in _one_line(exc)
    with pytest.raises(RelcoreError):
        parse_time_cols(["orders.a", "orders.b"])
