"""The wait hub's copy of an error for each of its waiters (pgqueue._wait_hub._own)."""

from __future__ import annotations

from pgqueue._wait_hub import _own


class Coded(Exception):
    """An error whose ``__init__`` makes its message from what it is given."""

    def __init__(self, code: int) -> None:
        super().__init__(f"error {code}")
        self.code = code


def test_a_copy_keeps_the_message_of_an_error_whose_init_makes_it() -> None:
    """The copy was made again from the error's arguments, its message: an ``__init__`` that
    makes the message from a code wrapped it a second time ("error error 5")."""
    error = Coded(5)
    own = _own(error)
    assert own is not error and type(own) is Coded
    assert (own.args, str(own), own.code) == (("error 5",), "error 5", 5)
