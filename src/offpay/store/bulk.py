"""Many rows in one statement, through the driver's own executemany.

SQLAlchemy's executemany builds a parameter dictionary and runs every column's bind processor
for each row, which cost more than the insert itself on the settlement path. Here the
statement is compiled once per table, columns and dialect, each row is a plain tuple, and
values that are the same for every row (a batch's time, a flag) are processed once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table

_SQL: dict[tuple[str, tuple[str, ...], str], str] = {}


def insert_rows(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Iterable[tuple[Any, ...]],
    constants: Mapping[str, Any] | None = None,
) -> None:
    """Insert ``rows`` (tuples of ``columns``' values, plain Python values the driver takes
    as they are: str, int, bool, bytes) with ``constants`` appended to each row; a duplicate
    key raises the driver's integrity error as SQLAlchemy's, and the caller's transaction
    rolls back."""
    constants = dict(constants or {})
    names = (*columns, *constants)
    dialect = conn.dialect
    key = (table.name, names, dialect.name)
    sql = _SQL.get(key)
    if sql is None:
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        quote = dialect.identifier_preparer.quote
        sql = _SQL[key] = (
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "
            f"VALUES ({', '.join(mark for _ in names)})"
        )
    tail = tuple(_bound(table, name, value, dialect) for name, value in constants.items())
    params = [(*row, *tail) for row in rows] if tail else [tuple(row) for row in rows]
    if params:
        conn.exec_driver_sql(sql, params)


def _bound(table: Table, name: str, value: Any, dialect: Any) -> Any:
    """``value`` as the column's type hands it to the driver (a time as SQLite stores it)."""
    processor = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
    return processor(value) if processor is not None and value is not None else value
