"""The acceptance tests' app, in a worker whose heartbeat loop has a bug: a heartbeat that holds
jobs raises RuntimeError, an error that is not the database's (``--app
tests.acceptance.broken_heartbeat_app:app``)."""

from __future__ import annotations

from typing import Any

from pgqueue import _store
from tests.acceptance.app_under_test import app

__all__ = ["app"]

_extend = _store.leases_extend


def _broken(worker: str, lease: float, held: Any) -> Any:
    if held:
        raise RuntimeError("planted bug in the heartbeat")
    return _extend(worker, lease, held)


_store.leases_extend = _broken
