"""Canonical encoding of messages (deterministic CBOR, RFC 8949 §4.2).

Messages are frozen dataclasses; the codec walks their type hints, so a message type is
declared once and its encoding follows. Decoding is strict: a missing, extra or mistyped field
is an :class:`EncodingError`, never a silently defaulted value.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from functools import cache
from typing import Any, ClassVar, TypeVar, get_args, get_origin

import cbor2

from offpay.errors import EncodingError, MoneyError
from offpay.money import Money

MAX_MESSAGE_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class Message:
    """Base of every wire message; ``TYPE`` is its stable tag on the wire."""

    TYPE: ClassVar[str] = "message"


M = TypeVar("M", bound=Message)

_REGISTRY: dict[str, type[Message]] = {}


def message(tag: str) -> typing.Callable[[type[M]], type[M]]:
    """Class decorator: a frozen dataclass registered under a wire tag."""

    def wrap(cls: type[M]) -> type[M]:
        if tag in _REGISTRY:
            raise RuntimeError(f"wire tag {tag!r} is used twice")
        cls.TYPE = tag
        cls = dataclasses.dataclass(frozen=True)(cls)
        _REGISTRY[tag] = cls
        return cls

    return wrap


class _Unusual(Exception):
    """A value the fast paths do not handle; the caller falls back to the general path."""


# The types whose CBOR encoding is the same with and without ``canonical=True``: canonical
# mode differs only in the order of map keys and sets and in the size of floats.
_PLAIN = frozenset({str, bytes, int, bool, type(None)})


@cache
def _key_order(cls: type[Message]) -> tuple[str, ...]:
    """The keys of a ``cls`` message in canonical CBOR order (RFC 8949 §4.2), as cbor2 sorts
    them: a map built in this order encodes canonically without being sorted again."""
    keys = ["t", *(f.name for f in dataclasses.fields(cls))]
    return tuple(cbor2.loads(cbor2.dumps(dict.fromkeys(keys, 0), canonical=True)))


@cache
def _encoder(cls: type[Message]) -> typing.Callable[[Message], dict[str, Any]]:
    """The map of a ``cls`` message with its keys already in canonical order."""
    tag = cls.TYPE
    names = tuple((k, k == "t") for k in _key_order(cls))

    def encode_message(msg: Message) -> dict[str, Any]:
        return {k: tag if is_tag else _fast_obj(getattr(msg, k)) for k, is_tag in names}

    return encode_message


def _fast_obj(value: Any) -> Any:
    """:func:`to_obj` for the values messages hold, with maps in canonical order; anything
    else raises :class:`_Unusual`."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is Money:
        return [value.minor, value.currency]
    if kind is tuple or kind is list:
        return [_fast_obj(v) for v in value]
    if isinstance(value, Message):
        return _encoder(kind)(value)
    if isinstance(value, enum.Enum) and type(value.value) in _PLAIN:
        return value.value
    raise _Unusual


def to_obj(value: Any) -> Any:
    if isinstance(value, Message):
        out = {"t": value.TYPE}
        for f in dataclasses.fields(value):
            out[f.name] = to_obj(getattr(value, f.name))
        return out
    if isinstance(value, Money):
        return [value.minor, value.currency]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_obj(v) for v in value]
    return value


def encode(msg: Message) -> bytes:
    """The canonical encoding. Maps are built in canonical key order and hold only types
    whose encoding canonical mode does not change, so cbor2 need not sort them; any other
    value takes the general path, which gives the same bytes."""
    try:
        return cbor2.dumps(_fast_obj(msg))
    except _Unusual:
        return cbor2.dumps(to_obj(msg), canonical=True)


def decode(data: bytes, cls: type[M]) -> M:
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_MESSAGE_BYTES:
        raise EncodingError("message is not bytes or is too large")
    try:
        obj = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several decoder errors
        raise EncodingError(f"not canonical CBOR: {exc}") from None
    # Fast path: a message whose maps all have their keys in canonical order and whose values
    # all have the types its fields declare (no floats, no sets) is canonical exactly when
    # encoding it again without sorting gives the same bytes. Anything else, including every
    # refusal, takes the general path below, so errors are the same as ever.
    try:
        msg = _from_obj(obj, cls, True)
        if cbor2.dumps(obj) == data:
            return msg
    except (EncodingError, _Unusual):
        pass
    if encode_obj(obj) != bytes(data):
        raise EncodingError("encoding is not canonical")
    return from_obj(obj, cls)


def encode_obj(obj: Any) -> bytes:
    try:
        return cbor2.dumps(obj, canonical=True)
    except Exception:
        return b""


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


Convert = typing.Callable[[Any, str], Any]  # (decoded value, where in the message) -> field


@cache
def _fields(
    cls: type[Message], ordered: bool = False
) -> tuple[tuple[tuple[str, str, Convert], ...], frozenset[str]]:
    """Per field of ``cls``: its name, where it is for error messages, and its converter;
    and the keys a message of ``cls`` must have. Worked out once per class: decoding is on
    every hop's path, and reading type hints is slow. ``ordered``: nested messages must have
    their keys in canonical order too (see :func:`decode`)."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    fields = tuple((n, f"{cls.TYPE}.{n}", _converter(hints[n], ordered)) for n in names)
    return fields, frozenset({"t", *names})


def from_obj(obj: Any, cls: type[M]) -> M:
    return _from_obj(obj, cls, False)


def _from_obj(obj: Any, cls: type[M], ordered: bool) -> M:
    """:func:`from_obj`; ``ordered`` also insists on canonical key order in every map (an
    :class:`_Unusual` if not), for :func:`decode`'s fast path."""
    if not isinstance(obj, dict) or obj.get("t") != cls.TYPE:
        raise EncodingError(f"expected a {cls.TYPE} message")
    fields, keys = _fields(cls, ordered)
    if ordered:
        if tuple(obj) != _key_order(cls):
            raise _Unusual
    elif obj.keys() != keys:
        raise EncodingError(f"{cls.TYPE}: fields do not match")
    kwargs = {n: convert(obj[n], where) for n, where, convert in fields}
    try:
        return cls(**kwargs)
    except (MoneyError, ValueError, TypeError) as exc:
        raise EncodingError(f"{cls.TYPE}: {exc}") from None


def _convert(value: Any, hint: Any, where: str) -> Any:
    return _converter(hint)(value, where)


@cache
def _converter(hint: Any, ordered: bool = False) -> Convert:
    """The strict conversion of a decoded value to a field of type ``hint``, built once."""
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        optional = type(None) in options
        real = [o for o in options if o is not type(None)]
        inner = _converter(real[0], ordered) if len(real) == 1 else None

        def union(value: Any, where: str) -> Any:
            if value is None and optional:
                return None
            if inner is None:
                raise EncodingError(f"{where}: ambiguous union")
            return inner(value, where)

        return union
    if origin is tuple:
        item = _converter(get_args(hint)[0], ordered)

        def sequence(value: Any, where: str) -> Any:
            if not isinstance(value, list):
                raise EncodingError(f"{where}: expected a list")
            return tuple(item(v, where) for v in value)

        return sequence
    if hint is Money:
        return _money
    if isinstance(origin, type) and issubclass(origin, Message):
        return lambda value, where: _from_obj(value, origin, ordered)  # e.g. Signed[Payment]
    if isinstance(hint, type) and issubclass(hint, Message):
        return lambda value, where: _from_obj(value, hint, ordered)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):

        def member(value: Any, where: str) -> Any:
            if ordered and type(value) not in _PLAIN:
                raise _Unusual  # e.g. 1.0 equals an IntEnum's 1 but encodes otherwise
            try:
                return hint(value)
            except ValueError:
                raise EncodingError(f"{where}: unknown value {value!r}") from None

        return member
    if hint in _SCALARS:
        check, expected = _SCALARS[hint]

        def scalar(value: Any, where: str) -> Any:
            if not check(value):
                raise EncodingError(f"{where}: expected {expected}")
            return value

        return scalar

    def unsupported(value: Any, where: str) -> Any:
        raise EncodingError(f"{where}: unsupported field type {hint!r}")

    return unsupported


def _money(value: Any, where: str) -> Money:
    if not (isinstance(value, list) and len(value) == 2):
        raise EncodingError(f"{where}: expected an amount")
    minor, currency = value
    if type(minor) is not int or not isinstance(currency, str):
        raise EncodingError(f"{where}: expected an amount")
    try:
        return Money(minor, currency)
    except MoneyError as exc:
        raise EncodingError(f"{where}: {exc.message}") from None


_SCALARS: dict[type, tuple[typing.Callable[[Any], bool], str]] = {
    int: (lambda v: type(v) is int, "an integer"),
    bool: (lambda v: type(v) is bool, "true or false"),
    bytes: (lambda v: isinstance(v, bytes), "bytes"),
    str: (lambda v: isinstance(v, str), "text"),
}
