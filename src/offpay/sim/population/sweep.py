"""Sweeps: one scenario run over a grid of its fields, in parallel, into one table and plots.

A grid names scenario fields by dotted path (``liquidity.pool``) or by a short alias
(:data:`ALIASES`) and gives each a list of values; the sweep runs every point of their product.
Every point is built and checked by :func:`~offpay.sim.population.scenario.parse_scenario`
before anything runs, so a bad key or value costs a line, not an hour of runs.

The points run on Dask distributed: a ``LocalCluster`` of one single-threaded worker process
per core by default, or an existing cluster given its scheduler's address. Dask rather than
Ray: ``dask`` and ``distributed`` are pure-Python wheels from PyPI (Ray ships compiled wheels
per platform and Python version), a worker is an ordinary Python process that runs our numpy
and numba code unchanged, ``LocalCluster`` gives the tests a real cluster in one call, and
the same scheduler is what research teams already start on their HPC batch systems
(dask-jobqueue: Slurm, PBS, SGE, LSF) or in the cloud.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import logging
import math
import os
import time
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from offpay.errors import OffpayError
from offpay.sim.population.scenario import Scenario, ScenarioError, parse_scenario

MAX_POINTS = 1_000  # a grid larger than this is refused: split it, or narrow it
CONNECT_TIMEOUT_S = 20  # how long to wait for an existing scheduler to answer


class SweepError(OffpayError):
    """A grid that cannot run: a key that is not a scenario field, a value the scenario
    refuses, an empty or too large grid, or a scheduler that cannot be reached."""

    code = "sweep.invalid"


@dataclass(frozen=True)
class Alias:
    """A short grid key: the field it sets and, where it is not the field itself, how."""

    path: str
    meaning: str


ALIASES: dict[str, Alias] = {
    "pool": Alias(
        "liquidity.pool",
        "the central bank's liquidity pool in minor units (or 'SEK 10000'); a pool of 0 under "
        "policy 'pool' runs as policy 'queue', which is what an empty pool gives",
    ),
    "policy": Alias("liquidity.policy", "the liquidity policy: queue, restrict, pool, receipts"),
    "people": Alias("population.people", "how many people"),
    "outage_days": Alias("outage.hours", "the outage's length in days (×24 hours); 0: no outage"),
    "seed": Alias("seed", "the seed of every random draw"),
}


@dataclass(frozen=True)
class Axis:
    """One ``--grid KEY=V1,V2,...``: the key as given, the field it sets, its values."""

    key: str
    path: tuple[str, ...]
    texts: tuple[str, ...]  # the values as given, for messages
    values: tuple[Any, ...]  # the values as read (TOML literals, else text)


@dataclass(frozen=True)
class Point:
    """One run of the sweep: its grid values (as the table shows them) and its scenario."""

    index: int
    grid: dict[str, Any]
    data: dict[str, Any]  # the scenario as plain data, as the worker receives it
    scenario: Scenario


# -- the grid --------------------------------------------------------------------------------


def _literal(text: str) -> Any:
    """A value as TOML reads it (``3``, ``1_000_000``, ``0.5``, ``true``, ``"x"``); anything
    else (``queue``, ``SEK 150``) is taken as text."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    return value if isinstance(value, bool | int | float | str) else text


def _field_type(model: type[BaseModel], name: str) -> Any:
    return model.model_fields[name].annotation


def _section(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (``Outage`` for ``Outage | None``), or None for a value."""
    options = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    for option in options:
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
    return None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _is_list(annotation: Any) -> bool:
    options = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    return any(typing.get_origin(o) in (tuple, list) for o in options)


def resolve_key(key: str) -> tuple[str, ...]:
    """The scenario field a grid key sets; :class:`SweepError` if it names none, or names a
    section or a list rather than one value."""
    dotted = ALIASES[key].path if key in ALIASES else key
    path = tuple(dotted.split("."))
    model: type[BaseModel] = Scenario
    for depth, part in enumerate(path):
        where = ".".join(path[:depth]) or "the scenario"
        if part not in model.model_fields:
            known = ", ".join(model.model_fields)
            aliases = f"; or an alias: {', '.join(ALIASES)}" if depth == 0 else ""
            raise SweepError(
                f"--grid {key}: {where} has no field {part!r} (fields: {known}{aliases})",
                code="sweep.bad_key",
            )
        annotation = _field_type(model, part)
        inner = _section(annotation)
        last = depth == len(path) - 1
        if last and inner is not None:
            raise SweepError(
                f"--grid {key}: {dotted} is a section; name one of its fields "
                f"({', '.join(f'{dotted}.{f}' for f in inner.model_fields)})",
                code="sweep.bad_key",
            )
        if last and _is_list(annotation):
            raise SweepError(
                f"--grid {key}: {dotted} is a list; a grid sets single values",
                code="sweep.bad_key",
            )
        if not last:
            if inner is None:
                raise SweepError(
                    f"--grid {key}: {'.'.join(path[: depth + 1])} is a value, not a section",
                    code="sweep.bad_key",
                )
            model = inner
    return path


def parse_axis(spec: str) -> Axis:
    """``KEY=V1,V2,...`` as one axis of the grid."""
    key, sep, rest = spec.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SweepError(f"--grid {spec!r}: write KEY=V1,V2,...", code="sweep.bad_grid")
    texts = tuple(t.strip() for t in rest.split(","))
    if not rest.strip() or any(not t for t in texts):
        raise SweepError(f"--grid {key}: an empty value in {rest!r}", code="sweep.bad_value")
    path = resolve_key(key)
    values = tuple(_literal(t) for t in texts)
    seen: set[str] = set()
    for text, value in zip(texts, values, strict=True):
        norm = repr(value)
        if norm in seen:
            raise SweepError(f"--grid {key}: value {text} given twice", code="sweep.bad_value")
        seen.add(norm)
    return Axis(key, path, texts, values)


def parse_grid(specs: Sequence[str]) -> tuple[Axis, ...]:
    """Every ``--grid`` option as an axis; the grid must be non-empty, name each field once,
    and have at most :data:`MAX_POINTS` points."""
    if not specs:
        raise SweepError("give at least one --grid KEY=V1,V2,...", code="sweep.empty")
    axes = tuple(parse_axis(s) for s in specs)
    fields: dict[tuple[str, ...], str] = {}
    for axis in axes:
        if axis.path in fields:
            raise SweepError(
                f"--grid {axis.key}: sets {'.'.join(axis.path)}, as --grid "
                f"{fields[axis.path]} already does",
                code="sweep.bad_key",
            )
        fields[axis.path] = axis.key
    points = math.prod(len(a.values) for a in axes)
    if points > MAX_POINTS:
        sizes = " × ".join(str(len(a.values)) for a in axes)
        raise SweepError(
            f"the grid has {points:,} points ({sizes}); a sweep runs at most {MAX_POINTS:,}: "
            "narrow the grid or split it into several sweeps",
            code="sweep.too_large",
        )
    return axes


# -- grid points -----------------------------------------------------------------------------


def _set(data: dict[str, Any], axis: Axis, value: Any) -> None:
    """Write one grid value into the scenario's data (sections are created as needed)."""
    if axis.key == "outage_days":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(f"outage_days: {value!r} is not a number of days")
        if value == 0:
            data["outage"] = None
            return
        hours = value * 24
        value = int(hours) if float(hours).is_integer() else hours
    node = data
    for part in axis.path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[axis.path[-1]] = value


def _empty_pool_is_queue(data: dict[str, Any], grid: dict[str, Any]) -> None:
    """The ``pool`` alias at 0: no pool, so the point runs under policy queue (what a pool
    policy with an empty pool gives: every draw it cannot cover waits in the queue)."""
    liquidity = data.get("liquidity")
    empty = grid.get("pool") == 0 and not isinstance(grid.get("pool"), bool)
    if empty and isinstance(liquidity, dict) and str(liquidity.get("policy", "")) == "pool":
        liquidity["policy"] = "queue"


def _point_data(base: dict[str, Any], axes: Sequence[Axis], values: Sequence[Any]) -> dict:
    data = copy.deepcopy(base)
    for axis, value in zip(axes, values, strict=True):
        _set(data, axis, value)
    _empty_pool_is_queue(data, {a.key: v for a, v in zip(axes, values, strict=True)})
    return data


def _read_back(scenario: Scenario, axis: Axis, value: Any) -> Any:
    """The grid value as the table shows it: the field as the scenario read it (an amount in
    minor units, a policy by name); ``outage_days`` as given."""
    if axis.key == "outage_days":
        return value
    node: Any = scenario
    for part in axis.path:
        node = getattr(node, part)
    return node.value if isinstance(node, Enum) else node


def _check(base: dict[str, Any], axes: Sequence[Axis], picks: Sequence[int]) -> Scenario:
    """The point's scenario, or :class:`SweepError` naming the grid value at fault (or the
    whole point, when the rule it breaks is across fields)."""
    values = [a.values[i] for a, i in zip(axes, picks, strict=True)]
    try:
        return parse_scenario(_point_data(base, axes, values))
    except ScenarioError as exc:
        point_error = exc.message
    for axis, i in zip(axes, picks, strict=True):
        try:
            parse_scenario(_point_data(base, [axis], [axis.values[i]]))
        except ScenarioError as exc:
            # the value alone is at fault only where the schema refuses its own field
            if not exc.message.startswith((f"{'.'.join(axis.path)}:", f"{axis.key}:")):
                continue
            raise SweepError(
                f"--grid {axis.key}={axis.texts[i]}: {exc.message}", code="sweep.bad_value"
            ) from None
    where = ", ".join(f"{a.key}={a.texts[i]}" for a, i in zip(axes, picks, strict=True))
    raise SweepError(f"grid point {where}: {point_error}", code="sweep.bad_value")


def expand(base: dict[str, Any], axes: Sequence[Axis]) -> list[Point]:
    """Every point of the grid, in order (the last key varies fastest), each checked by the
    scenario schema before anything runs."""
    points = []
    for index, picks in enumerate(itertools.product(*(range(len(a.values)) for a in axes))):
        scenario = _check(base, axes, picks)
        values = [a.values[i] for a, i in zip(axes, picks, strict=True)]
        grid = {a.key: _read_back(scenario, a, v) for a, v in zip(axes, values, strict=True)}
        points.append(Point(index, grid, _point_data(base, axes, values), scenario))
    return points


def read_base(path: Path) -> dict[str, Any]:
    """The scenario file as plain data, after the schema accepted it as it is."""
    from offpay.sim.population.scenario import load_scenario

    load_scenario(path)  # refuses an unreadable or invalid file with its own one-line error
    return tomllib.loads(path.read_text(encoding="utf-8"))


# -- running ---------------------------------------------------------------------------------


def run_point(data: dict[str, Any]) -> dict[str, Any]:
    """One grid point on a worker: the scenario is validated again there (the worker may run
    another install), simulated by the fast executor and summarised."""
    from offpay.sim.population.run import Executor, simulate
    from offpay.sim.population.summary import summarise

    scenario = parse_scenario(data)
    wall, cpu = time.perf_counter(), time.process_time()
    summary = summarise(simulate(scenario, Executor.FAST))
    summary["run_seconds"] = round(time.perf_counter() - wall, 3)
    summary["run_cpu_seconds"] = round(time.process_time() - cpu, 3)
    return summary


def check_scheduler(address: str) -> str:
    """A scheduler's address as Dask writes it (``tcp://HOST:PORT``, ``tls://…``)."""
    scheme, sep, rest = address.partition("://")
    if not sep or not scheme.isalpha() or not rest or any(c.isspace() for c in address):
        raise SweepError(
            f"--scheduler {address!r}: give the scheduler's address, tcp://HOST:PORT",
            code="sweep.bad_scheduler",
        )
    return address


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A client of the cluster at ``scheduler``, or of a LocalCluster started here with
    ``workers`` single-threaded worker processes (one per usable core by default)."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        check_scheduler(scheduler)
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SweepError(
                f"--scheduler {scheduler}: cannot reach it: {reason}",
                code="sweep.scheduler_unreachable",
            ) from None
        with client:
            yield client
        return
    from dask.system import CPU_COUNT  # the cores this process may use (affinity, cgroups)

    n = workers or CPU_COUNT
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            # a failed point is reported here, in one line: the workers' own logs would
            # print its traceback across the progress bar
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OffpayError):
        return f"[{exc.code}] {exc.message}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def run_points(
    points: Sequence[Point],
    client: Any,
    done: Callable[[Point, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every point on the cluster, as results come back (in any order); the summaries in the
    points' order. A point that failed gets ``{"error": one line}``; the others still run."""
    from distributed import as_completed

    futures = {
        client.submit(run_point, p.data, key=f"offpay-sweep-{os.getpid()}-{p.index}-{id(p)}"): p
        for p in points
    }
    results: list[dict[str, Any]] = [{} for _ in points]
    for future in as_completed(futures):
        point = futures[future]
        if future.status == "finished":
            result = future.result()
        else:
            result = {"error": _one_line(future.exception())}
        results[point.index] = result
        if done is not None:
            done(point, result)
    return results


# -- the table -------------------------------------------------------------------------------


def rows(points: Sequence[Point], results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per point: its number, the grid values, ``error`` (empty when it ran), then
    every summary figure (a refusal code a point never met counts 0 there)."""
    grid_keys = list(points[0].grid) if points else []
    figures: list[str] = []
    for result in results:
        figures += [k for k in result if k not in figures and k not in grid_keys and k != "error"]
    out = []
    for point, result in zip(points, results, strict=True):
        ok = "error" not in result
        row: dict[str, Any] = {"point": point.index, **point.grid}
        row["error"] = result.get("error", "")
        for name in figures:
            default = 0 if ok and name.startswith("refused.") else None
            row[name] = result.get(name, default)
        out.append(row)
    return out


def _column(values: list[Any]) -> Any:
    """One typed column: integers stay integers (money in minor units), numbers mix to
    floats, anything else is text; a point that failed leaves its figures empty."""
    import pyarrow as pa

    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.array(values, pa.int64())
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def write_table(
    table_rows: Sequence[dict[str, Any]], out: Path, meta: dict[str, Any]
) -> list[Path]:
    """``sweep.parquet`` (with the sweep's description in its metadata) and ``sweep.csv``."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    names = list(table_rows[0]) if table_rows else ["point"]
    table = pa.table({n: _column([r.get(n) for r in table_rows]) for n in names})
    table = table.replace_schema_metadata({"offpay.sweep": json.dumps(meta, sort_keys=True)})
    parquet, csv = out / "sweep.parquet", out / "sweep.csv"
    pq.write_table(table, parquet)
    pacsv.write_csv(table, csv)
    return [parquet, csv]
