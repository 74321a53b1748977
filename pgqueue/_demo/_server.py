"""A throwaway embedded PostgreSQL (the optional ``pgserver`` package) for the demo."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator

from pgqueue._errors import ConfigurationError

MISSING = (
    "the demo needs a database: pass --dsn DSN or set PGQUEUE_DSN, or install the embedded"
    " PostgreSQL with pip install 'pgqueue[demo]'"
)


@contextlib.contextmanager
def embedded_server() -> Iterator[str]:
    """Start a private PostgreSQL in a temporary directory; yield its DSN; delete it after."""
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:
        raise ConfigurationError(MISSING) from None
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    pgdata = tempfile.mkdtemp(prefix="pgqueue-demo-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(pgdata, cleanup_mode="delete")  # type: ignore[attr-defined]
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
