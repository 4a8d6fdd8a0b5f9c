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
from collections.abc import Mapping
from functools import cache
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar, get_args, get_origin

import cbor2

from offpay.errors import EncodingError, MoneyError
from offpay.money import Money

MAX_MESSAGE_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class Message:
    """Base of every wire message; ``TYPE`` is its stable tag on the wire."""

    TYPE: ClassVar[str] = "message"

    def __reduce__(self) -> tuple[type[Message], tuple[Any, ...]]:
        """What a pickle keeps (a card's sealed memory, a verification worker's arguments): the
        class and the fields only, rebuilt through the constructor. Values cached from them (an
        envelope's encoding, a payment's id) are recomputed when needed; kept, they would
        double a stored payment, and a card's storage would depend on which of its payments
        someone had encoded. A tuple of the fields pickles about twice as fast as a dict of
        them restored by ``__setstate__``, and a device pickles on every write."""
        return type(self), tuple([getattr(self, name) for name in _field_names(type(self))])


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@cache
def _omissible(cls: type) -> frozenset[str]:
    """The fields of ``cls`` declared ``= None``: left out of the map while they are None, and
    None when a map lacks them. A field added to a message this way keeps every older message,
    and its signature, valid (a limits policy signed before the field existed means "no
    limit")."""
    return frozenset(f.name for f in dataclasses.fields(cls) if f.default is None)


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


def registered() -> Mapping[str, type[Message]]:
    """Every message type imported so far, by wire tag (read-only): what the wire
    specification (``offpay.cddl``) must describe."""
    return MappingProxyType(_REGISTRY)


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
    omissible = _omissible(cls)

    def encode_message(msg: Message) -> dict[str, Any]:
        return {k: tag if is_tag else _fast_obj(getattr(msg, k)) for k, is_tag in names}

    if not omissible:
        return encode_message

    def encode_sparse(msg: Message) -> dict[str, Any]:
        out = {}
        for k, is_tag in names:
            value = tag if is_tag else getattr(msg, k)
            if value is not None or k not in omissible:
                out[k] = _fast_obj(value)
        return out

    return encode_sparse


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
        omissible = _omissible(type(value))
        for f in dataclasses.fields(value):
            field_value = getattr(value, f.name)
            if field_value is not None or f.name not in omissible:
                out[f.name] = to_obj(field_value)
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
        msg = _fast_decoder(cls)(obj)
        if cbor2.dumps(obj) == data:
            return msg
    except (_Unusual, EncodingError, MoneyError, ValueError, TypeError):
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
def _fields(cls: type[Message]) -> tuple[tuple[tuple[str, str, Convert], ...], frozenset[str]]:
    """Per field of ``cls``: its name, where it is for error messages, and its converter;
    and the keys a message of ``cls`` must have. Worked out once per class: decoding is on
    every hop's path, and reading type hints is slow."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    fields = tuple((n, f"{cls.TYPE}.{n}", _converter(hints[n])) for n in names)
    return fields, frozenset({"t", *names})


def from_obj(obj: Any, cls: type[M]) -> M:
    if not isinstance(obj, dict) or obj.get("t") != cls.TYPE:
        raise EncodingError(f"expected a {cls.TYPE} message")
    fields, keys = _fields(cls)
    omissible = _omissible(cls)
    if omissible:  # one encoding only: an absent value is left out, never written as nil
        if not (keys - omissible <= obj.keys() <= keys):
            raise EncodingError(f"{cls.TYPE}: fields do not match")
        if any(obj[name] is None for name in omissible & obj.keys()):
            raise EncodingError(f"{cls.TYPE}: an absent field is left out, not nil")
        obj = {**dict.fromkeys(omissible), **obj}
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
def _converter(hint: Any) -> Convert:
    """The strict conversion of a decoded value to a field of type ``hint``, built once."""
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        optional = type(None) in options
        real = [o for o in options if o is not type(None)]
        inner = _converter(real[0]) if len(real) == 1 else None

        def union(value: Any, where: str) -> Any:
            if value is None and optional:
                return None
            if inner is None:
                raise EncodingError(f"{where}: ambiguous union")
            return inner(value, where)

        return union
    if origin is tuple:
        item = _converter(get_args(hint)[0])

        def sequence(value: Any, where: str) -> Any:
            if not isinstance(value, list):
                raise EncodingError(f"{where}: expected a list")
            return tuple(item(v, where) for v in value)

        return sequence
    if hint is Money:
        return _money
    if isinstance(origin, type) and issubclass(origin, Message):
        return lambda value, where: from_obj(value, origin)  # e.g. Signed[Payment]
    if isinstance(hint, type) and issubclass(hint, Message):
        return lambda value, where: from_obj(value, hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):

        def member(value: Any, where: str) -> Any:
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


# --- the fast decoder ---------------------------------------------------------------------------
# One function per message class, generated from its type hints (as dataclasses generates
# __init__): it accepts only a map with exactly the class's keys in canonical order and values
# of exactly the declared types, and raises _Unusual (or the constructor's own error) on
# anything else; decode then takes the general path, which gives the error.


@cache
def _fast_decoder(cls: type[Message]) -> typing.Callable[[Any], Any]:
    hints = _hints(cls)
    omissible = _omissible(cls)
    env: dict[str, Any] = {
        "_Unusual": _Unusual,
        "cls": cls,
        "Money": Money,
        "order": _key_order(cls),
        "required": frozenset(_key_order(cls)) - omissible,
    }
    lines = [
        "def decode_fast(obj):",
        "    if type(obj) is not dict or obj.get('t') != cls.TYPE:",
        "        raise _Unusual",
    ]
    if omissible:
        # A field declared ``= None`` is left out while it is None: the keys present must be
        # the canonical order's keys in that order (a canonical map of fewer keys keeps the
        # others' order), every other field among them, and none of them nil.
        lines += [
            "    keys = tuple(obj)",
            "    if keys != order and (keys != tuple([k for k in order if k in obj])",
            "                          or not required <= obj.keys()):",
            "        raise _Unusual",
        ]
    else:
        lines += ["    if tuple(obj) != order:", "        raise _Unusual"]
    args = []
    for i, f in enumerate(dataclasses.fields(cls)):
        if f.name in omissible:
            lines.append(f"    v{i} = obj.get({f.name!r}, _Unusual)")
            lines.append(f"    if v{i} is None: raise _Unusual")  # written as nil
            lines.append(f"    if v{i} is _Unusual: v{i} = None")
            lines.append("    else:")
            lines.extend(_check_lines(f"v{i}", hints[f.name], env, "        "))
        else:
            lines.append(f"    v{i} = obj[{f.name!r}]")
            lines.extend(_check_lines(f"v{i}", hints[f.name], env, "    "))
        args.append(f"v{i}")
    lines.append(f"    return cls({', '.join(args)})")
    exec("\n".join(lines), env)  # code built from this module's own templates
    return env["decode_fast"]  # type: ignore[no-any-return]


_EXACT = {int: "int", bool: "bool", bytes: "bytes", str: "str"}


def _check_lines(var: str, hint: Any, env: dict[str, Any], pad: str) -> list[str]:
    """Statements that check ``var`` against ``hint`` and leave the field's value in it."""
    origin = get_origin(hint)
    if hint in _EXACT:
        return [f"{pad}if type({var}) is not {_EXACT[hint]}: raise _Unusual"]
    if hint is Money:
        return [
            f"{pad}if type({var}) is not list or len({var}) != 2 or type({var}[0]) is not int"
            f" or type({var}[1]) is not str: raise _Unusual",
            f"{pad}{var} = Money({var}[0], {var}[1])",
        ]
    if origin in (typing.Union, types.UnionType):
        real = [o for o in get_args(hint) if o is not type(None)]
        if len(real) != 1 or len(get_args(hint)) != 2:
            return [f"{pad}raise _Unusual"]
        inner = _check_lines(var, real[0], env, pad + "    ")
        return [f"{pad}if {var} is not None:", *inner]
    if origin is tuple:
        item = get_args(hint)[0]
        if item in _EXACT:
            return [
                f"{pad}if type({var}) is not list: raise _Unusual",
                f"{pad}for e in {var}:",
                f"{pad}    if type(e) is not {_EXACT[item]}: raise _Unusual",
                f"{pad}{var} = tuple({var})",
            ]
        name = f"item_{len(env)}"
        env[name] = _item_decoder(item)
        return [
            f"{pad}if type({var}) is not list: raise _Unusual",
            f"{pad}{var} = tuple([{name}(e) for e in {var}])",
        ]
    target = origin if isinstance(origin, type) else hint
    if isinstance(target, type) and issubclass(target, Message):
        name = f"message_{len(env)}"
        env[name] = _LazyDecoder(target)
        return [f"{pad}{var} = {name}({var})"]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        name = f"enum_{len(env)}"
        env[name] = hint
        return [
            f"{pad}if type({var}) is not str and type({var}) is not int: raise _Unusual",
            f"{pad}{var} = {name}({var})",
        ]
    return [f"{pad}raise _Unusual"]


def _item_decoder(hint: Any) -> typing.Callable[[Any], Any]:
    """A function checking one element of a tuple field."""
    env: dict[str, Any] = {"_Unusual": _Unusual, "Money": Money}
    body = _check_lines("v", hint, env, "    ")
    exec("\n".join(["def item(v):", *body, "    return v"]), env)
    return env["item"]  # type: ignore[no-any-return]


class _LazyDecoder:
    """A nested message's fast decoder, looked up at first use (messages nest recursively)."""

    def __init__(self, cls: type[Message]) -> None:
        self.cls = cls

    def __call__(self, obj: Any) -> Any:
        return _fast_decoder(self.cls)(obj)
