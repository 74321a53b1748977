"""The CLI's ``--json`` writer, with no database."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

import pgqueue._cli  # noqa: F401  (imports _cli_ops after the helpers it needs)
from pgqueue._cli_ops import _dumps


@pytest.mark.parametrize("indent", [None, 2])
def test_integers_too_long_for_int_are_written_as_their_digits_wherever_they_are(
    indent: int | None,
) -> None:
    """Huge integers (read as Decimals) nested in lists and objects, negative ones, and
    strings that look like the placeholders come back as the value read, in one line or
    indented; many of them (240 in each of fifty 1 MB jobs) are written in one pass."""
    big, negative = Decimal("9" * 4400), Decimal("-" + "1" * 4400)
    value = [
        {"args": [big, [negative, [big]]], "kwargs": {"n": big, "s": "0", "t": '"0"'}},
        {"args": [1, 2.5, None, "Infinity", Decimal("NaN")], "kwargs": {}},
        [{"args": [big] * 240}] * 50,
    ]
    text = _dumps(value, indent=indent)
    read = json.loads(text, parse_int=Decimal)
    assert read[0] == value[0]
    assert read[1]["args"] == [1, 2.5, None, "Infinity", "NaN"]
    assert read[2] == value[2]
    assert ("\n" in text) == (indent is not None)
