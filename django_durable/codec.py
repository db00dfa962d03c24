"""JSON for contexts, with typed round-trips for datetime, date, Decimal and UUID.

Typed values are stored as small tagged objects (`{"__durable__": "decimal", "value":
"9.99"}`), so plain numbers and strings stay queryable with Django's JSON lookups. A
user's own dict that happens to have the tag key is wrapped (`{"__durable__": "dict",
"value": {...}}`), so it can never be mistaken for a typed value.
"""

import math
import uuid
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from .errors import ContextNotSerializable

TAG = "__durable__"

_ENCODERS: list[tuple[type, str, Callable[[Any], str]]] = [
    (datetime, "datetime", datetime.isoformat),
    (date, "date", date.isoformat),
    (Decimal, "decimal", str),
    (uuid.UUID, "uuid", str),
]
_DECODERS: dict[str, Callable[[str], Any]] = {
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "decimal": Decimal,
    "uuid": uuid.UUID,
}


class Encoded:
    """A value already in its stored (JSON-native) form, written as it is.

    The engine encodes a step's returned context once, to check it and to store it, and
    wraps it in this so `DurableJSONField` does not encode it a second time.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Encoded({self.value!r:.60})"


def encode(value: Any, path: str = "") -> Any:
    """Return a JSON-native copy of `value`; raise ContextNotSerializable naming the key."""
    if isinstance(value, str):
        _check_text(value, path)
        return value
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _not_serializable(path, value, "is not a finite number")
        return value
    if isinstance(value, dict):
        encoded = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _not_serializable(_join(path, repr(key)), key, "is not a string key")
            _check_text(key, _join(path, repr(key)))
            encoded[key] = encode(item, _join(path, key))
        return {TAG: "dict", "value": encoded} if TAG in encoded else encoded
    if isinstance(value, (list, tuple)):
        return [encode(item, f"{path}[{index}]") for index, item in enumerate(value)]
    for kind, tag, to_text in _ENCODERS:
        if isinstance(value, kind):
            return {TAG: tag, "value": to_text(value)}
    raise _not_serializable(path, value, "cannot be stored as JSON")


def decode(value: Any) -> Any:
    """Inverse of `encode`: rebuild typed values from their tagged form.

    A tagged object that does not decode (written by hand, say) is returned as it is
    rather than making the whole execution unreadable.
    """
    if isinstance(value, dict):
        tag = value.get(TAG)
        if len(value) == 2 and "value" in value:
            if tag == "dict" and isinstance(value["value"], dict):
                return {key: decode(item) for key, item in value["value"].items()}
            if tag in _DECODERS:
                try:
                    return _DECODERS[tag](value["value"])
                except (TypeError, ValueError, ArithmeticError):
                    return value
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


def _check_text(text: str, path: str) -> None:
    """Text PostgreSQL's JSON can hold: no NUL character, no lone surrogate."""
    if "\x00" in text:
        raise _not_serializable(path, text, "contains a NUL character (\\x00)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _not_serializable(path, text, "is not valid Unicode (a lone surrogate)") from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _not_serializable(path: str, value: Any, why: str) -> ContextNotSerializable:
    where = f"key {path!r}" if path else "the value"
    return ContextNotSerializable(
        f"Context {where} holds {type(value).__name__} {value!r:.80}, which {why}. "
        "Store JSON values (dict, list, str, int, float, bool, None) or "
        "datetime/date/Decimal/UUID.",
        key=path,
    )
