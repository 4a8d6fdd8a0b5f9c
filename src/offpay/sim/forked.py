"""Running a function in a forked copy of this process: a prepared network comes along for
free, and nothing the function changes reaches the next run. The fault sweep plays each of
its hundreds of cases this way (``tests/test_faults.py``, ``offpay attack transport-faults``)."""

from __future__ import annotations

import os
import pickle
import traceback
from collections.abc import Callable
from typing import TypeVar, cast

T = TypeVar("T")

CAN_FORK = hasattr(os, "fork")


class CopyFailed(AssertionError):
    """The function raised in the copy (carrying the copy's traceback), or the copy died. An
    assertion: what runs in a copy is a check, and its failure is a finding, not a refusal."""


def in_a_copy(fn: Callable[[], T]) -> T:
    """``fn()`` in a forked copy of this process; its result must pickle. Only where
    :data:`CAN_FORK`."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the copy: never return into the caller
        os.close(read)
        try:
            data = pickle.dumps(("ok", fn()))
        except BaseException:
            data = pickle.dumps(("raised", traceback.format_exc()))
        with os.fdopen(write, "wb") as out:
            out.write(data)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as inp:
        data = inp.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise CopyFailed(f"the copy of the process died (wait status {status})")
    kind, value = pickle.loads(data)
    if kind == "raised":
        raise CopyFailed(value)
    return cast(T, value)
