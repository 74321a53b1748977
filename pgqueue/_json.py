"""JSON in and out: arguments and results are JSON, and nothing else crosses the database."""

from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Mapping, Sequence
from typing import Any

# Postgres' jsonb rejects \u0000; an odd run of backslashes before "u0000" is that escape.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")

DEFAULT_MAX_PAYLOAD = 1024 * 1024
# What the table's active_jobs_payload_check allows of pg_column_size(args) +
# pg_column_size(kwargs): the jsonb as stored, which can take several times the room of the
# JSON text (a 0 in a list takes 2 bytes of JSON and 12 of jsonb).
STORED_MAX_PAYLOAD = 1024 * 1024

# One encoder for every call: json.dumps() with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)
# Arguments' encoder sorts keys: in C that costs little, and it raises TypeError for every dict
# whose keys JSON can make one (1 and "1", None and "null": keys of types that do not order),
# which _raise_for_argument then looks into. jsonb keeps keys in an order of its own anyway.
_ARGUMENTS = json.JSONEncoder(
    separators=(",", ":"), allow_nan=False, ensure_ascii=False, sort_keys=True
)


def dumps(value: Any, encoder: json.JSONEncoder = _ENCODER) -> str:
    """Encode ``value`` as compact, strict JSON (no NaN, no NUL, valid UTF-8) or raise
    ``TypeError``."""
    if value is None:  # what most tasks return
        return "null"
    try:
        text = encoder.encode(value)
    except ValueError as exc:  # NaN / Infinity, or a circular reference
        raise TypeError(str(exc)) from exc
    except RecursionError:
        raise TypeError("the value is nested too deeply to encode as JSON") from None
    if "u0000" in text and _NUL_ESCAPE.search(text):
        raise TypeError("strings containing NUL (\\u0000) cannot be stored by PostgreSQL")
    if not text.isascii():  # O(1) in CPython; most payloads stop here
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            raise TypeError(
                f"strings containing a lone surrogate ({text[exc.start]!r}) are not valid UTF-8 "
                "and cannot be stored by PostgreSQL"
            ) from None
    return text


def dumps_arguments(
    task: str, args: Sequence[Any], kwargs: Mapping[str, Any], max_bytes: int = DEFAULT_MAX_PAYLOAD
) -> tuple[str, str]:
    """Encode a call's arguments; a failure names the argument that cannot be encoded."""
    for name in kwargs:  # JSON would make 1 "1": the task would then fail on every attempt
        if name.__class__ is not str and not isinstance(name, str):
            raise TypeError(
                f"keyword argument names of task {task!r} must be str, got {reprlib.repr(name)}"
            )
    listed = list(args)  # an iterator is read once, and read again to name a bad argument
    try:
        encoded = _encode(listed, kwargs, _ARGUMENTS)
    except TypeError:
        _raise_for_argument(task, listed, kwargs)
        encoded = _encode(listed, kwargs, _ENCODER)  # keys of mixed types, but none merged
    if (len(encoded[0]) + len(encoded[1])) * 4 <= max_bytes:  # UTF-8 is 4 bytes at most
        return encoded
    size = len(encoded[0].encode()) + len(encoded[1].encode())
    if size > max_bytes:
        raise ValueError(
            f"arguments of {task!r} are {size} bytes of JSON; the limit is {max_bytes} bytes"
        )
    return encoded


def _encode(
    args: list[Any], kwargs: Mapping[str, Any], encoder: json.JSONEncoder
) -> tuple[str, str]:
    return dumps(args, encoder), dumps(dict(kwargs), encoder) if kwargs else "{}"


def stored_size_error(task: str) -> ValueError:
    """The error for arguments the database refused: their JSON passed ``max_payload_bytes``,
    but as stored (jsonb) they are over the table's limit."""
    return ValueError(
        f"arguments of {task!r} are over {STORED_MAX_PAYLOAD} bytes as stored by PostgreSQL"
        " (jsonb, which can take several times the room of their JSON); the database refused"
        " the job (active_jobs_payload_check), so the transaction must be rolled back"
    )


def _raise_for_argument(task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    labelled = [(f"positional argument {i}", v) for i, v in enumerate(args)]
    labelled += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for label, value in labelled:
        try:
            dumps(value)
        except TypeError as exc:
            raise TypeError(f"{label} of task {task!r} is not JSON-serialisable: {exc}") from None
        merged = _merged_keys(value)
        if merged is not None:
            path, first, second, name = merged
            raise TypeError(
                f"{label} of task {task!r}{' at ' + path if path else ''}: dict keys {first!r}"
                f" and {second!r} would both be {name} in JSON, which keeps one of their values"
            )
    for name in kwargs:  # a NUL or a lone surrogate in a name: **{"a\x00": 1}
        try:
            dumps(name)
        except TypeError as exc:
            raise TypeError(f"keyword argument name {name!r} of task {task!r}: {exc}") from None


def _merged_keys(value: Any) -> tuple[str, Any, Any, str] | None:
    """The first dict in ``value`` two keys of which JSON makes one (1 and "1"): its path,
    the two keys, and the JSON string they would both be; or ``None``. A dict's keys are
    looked at before what it holds. A loop, not a recursion: from Python 3.12 the encoder's
    limit (in C) is no longer Python's, and takes values nested deeper than it."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            seen: dict[str, Any] = {}
            for key in value:
                name = key if isinstance(key, str) else _ENCODER.encode(key)
                if name in seen:
                    return _path(where), seen[name], key, _ENCODER.encode(name)
                seen[name] = key
            stack.extend((item, (where, key)) for key, item in reversed(value.items()))
        elif isinstance(value, list | tuple):
            stack.extend((value[i], (where, i)) for i in reversed(range(len(value))))
    return None


def _path(where: tuple[Any, ...]) -> str:
    """The path ``[0]['a']`` of ``where``: (((), 0), 'a'), each step a list index or a key."""
    steps: list[str] = []
    while where:
        where, step = where
        steps.append(f"[{step!r}]")
    return "".join(reversed(steps))
