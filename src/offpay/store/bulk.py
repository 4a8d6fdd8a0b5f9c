"""Many rows in one statement, through the driver's own executemany.

SQLAlchemy's executemany builds a parameter dictionary and runs every column's bind processor
for each row, which cost more than the insert itself on the settlement path. Here the
statement is compiled once per table, columns and dialect, each row is a plain tuple, and
values that are the same for every row (a batch's time, a flag) are processed once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, CursorResult, Table

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


_IN_SQL: dict[tuple[str, int, str], str] = {}
_IN_KEPT = 4096  # statements kept (one per template, list length and dialect)


def execute_in(
    conn: Connection,
    template: str,
    values: Sequence[Any],
    before: Sequence[Any] = (),
) -> CursorResult[Any]:
    """Run ``template`` through the driver: SQL with ``?`` marks for ``before`` and one
    ``(*)`` where the list ``values`` goes (``IN (*)``). The statement text is made once per
    template, list length and dialect, so the driver's own statement cache prepares it once;
    no SQLAlchemy expression is built. ``values`` must not be empty."""
    dialect = conn.dialect
    key = (template, len(values), dialect.name)
    sql = _IN_SQL.get(key)
    if sql is None:
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        listed = "(" + ", ".join(mark for _ in values) + ")"
        sql = template.replace("?", mark).replace("(*)", listed)
        if len(_IN_SQL) >= _IN_KEPT:
            _IN_SQL.clear()
        _IN_SQL[key] = sql
    return conn.exec_driver_sql(sql, (*before, *values))


def execute_many(conn: Connection, template: str, rows: Sequence[tuple[Any, ...]]) -> int:
    """``template`` (SQL with ``?`` marks) once per row, through the driver's executemany;
    returns the rows it changed as the driver counts them (-1: unknown)."""
    if not rows:
        return 0
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return conn.exec_driver_sql(template.replace("?", mark), list(rows)).rowcount
