"""A TCP proxy between workers and PostgreSQL that loses the reply to a committed statement."""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import threading
from collections.abc import Iterator

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class ReplyCutter:
    """Forwards connections to the server of ``dsn``. Once armed, the next statement whose text
    holds ``marker``, on a connection whose startup names ``application``, reaches the server
    and runs to its end (its ReadyForQuery: committed, or rolled back), but nothing of its reply
    reaches the client: the proxy then closes both sides, as a network failure between the
    commit and the reply would. With ``deliver`` False, the statement never reaches the server
    (a failure on the way there); with ``wait`` False, it does, and the proxy closes both
    sides at once, while the server may still run it (a failure during the statement).
    Connections opened after that wait for ``gate``. While ``refusing``, new connections are
    closed at once (the server out of reach), and counted in ``refused``."""

    def __init__(self, dsn: str, marker: bytes, application: bytes) -> None:
        info = conninfo_to_dict(dsn)
        self.server = (str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432))
        self.dsn = dsn
        self.marker = marker
        self.application = application
        self.armed = False
        self.deliver = True
        self.wait = True
        self.cut = asyncio.Event()  # set once a reply was lost
        self.gate = asyncio.Event()
        self.gate.set()
        self.refusing = False
        self.refused = 0
        self.accepted = 0  # connections the proxy was asked to open
        self._listener: asyncio.Server | None = None
        self._serving: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ReplyCutter:
        self._listener = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._listener.sockets[0].getsockname()[1]
        info = conninfo_to_dict(self.dsn)
        info.update(host="127.0.0.1", port=str(port), sslmode="disable", gssencmode="disable")
        self.dsn = make_conninfo("", **info)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._listener is not None
        self._listener.close()
        for serving in list(self._serving):
            serving.cancel()
        await asyncio.gather(*self._serving, return_exceptions=True)
        await self._listener.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        assert me is not None
        self._serving.add(me)
        self.accepted += 1
        writers = [client_w]
        try:
            if self.refusing:
                self.refused += 1
                return
            if self.cut.is_set():
                await self.gate.wait()
            server_r, server_w = await asyncio.open_connection(*self.server)
            writers.append(server_w)
            cutting = asyncio.Event()  # the marked statement was sent: hold back the reply
            pumps = [
                asyncio.ensure_future(self._up(client_r, server_w, cutting)),
                asyncio.ensure_future(self._down(server_r, client_w, cutting)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            for writer in writers:
                writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.gather(*(w.wait_closed() for w in writers))
            self._serving.discard(me)

    async def _up(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cutting: asyncio.Event
    ) -> None:
        seen = b""
        while data := await reader.read(65536):
            if len(seen) < 4096:
                seen += data  # the startup packet, which names the application
            if self.armed and self.application in seen and self.marker in data:
                self.armed = False
                cutting.set()  # before the server can answer
                if not self.deliver:
                    self.cut.set()
                    return
            writer.write(data)
            await writer.drain()
            if cutting.is_set() and not self.wait:
                self.cut.set()
                return

    async def _down(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cutting: asyncio.Event
    ) -> None:
        held = b""
        while data := await reader.read(65536):
            if not cutting.is_set():
                writer.write(data)
                await writer.drain()
                continue
            # The client waits for each reply before it sends the next statement: these bytes
            # start at a message boundary. Messages: a type byte, then their length (int32).
            held += data
            while len(held) >= 5:
                kind, length = held[:1], struct.unpack("!i", held[1:5])[0]
                if len(held) < 1 + length:
                    break
                if kind == b"Z":  # ReadyForQuery: the statement's transaction has ended
                    self.cut.set()
                    return
                held = held[1 + length :]


class _Frames:
    """Splits one direction of a connection into whole protocol messages; ``startup``: the
    first one is the startup packet (no type byte)."""

    def __init__(self, startup: bool = False) -> None:
        self.startup = startup
        self._held = b""

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """The (type, whole message) pairs ``data`` completes; the startup packet's type is b""."""
        self._held += data
        messages = []
        while True:
            head = 0 if self.startup else 1
            if len(self._held) < head + 4:
                return messages
            length = struct.unpack("!i", self._held[head : head + 4])[0]
            if len(self._held) < head + length:
                return messages
            kind, message = self._held[:head], self._held[: head + length]
            self._held = self._held[head + length :]
            self.startup = False
            messages.append((kind, message))


def _strings(message: bytes, count: int) -> list[bytes]:
    """The first ``count`` NUL-terminated strings after a typed message's header."""
    return message[5:].split(b"\0", count)[:count]


class LossyProxy(ReplyCutter):
    """Forwards connections to the server of ``dsn``, and loses, with the chance ``markers``
    gives the first marker a statement's text holds, drawn from ``random.Random(seed)`` in the
    order they come, what follows of each execution of that statement on a connection whose
    startup names one of ``applications``: either the reply (the statement runs to its end,
    committed or rolled back, and the proxy then closes both sides), or, one time in three, the
    statement itself. Executions of a prepared statement are recognised by its name. ``lost``
    counts them."""

    def __init__(
        self, dsn: str, markers: dict[bytes, float], applications: tuple[bytes, ...], seed: int
    ) -> None:
        super().__init__(dsn, b"", b"")
        self.markers = markers
        self.applications = applications
        self.rng = random.Random(seed)
        self.lost = {"reply": 0, "statement": 0}

    def _chance(self, text: bytes) -> float:
        return next((chance for marker, chance in self.markers.items() if marker in text), 0.0)

    async def _up(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cutting: asyncio.Event
    ) -> None:
        frames = _Frames(startup=True)
        watched = False
        prepared: dict[bytes, float] = {}  # the chances of marked prepared statements
        unnamed = 0.0  # ... and of the unnamed statement
        while data := await reader.read(65536):
            for kind, message in frames.feed(data):
                chance = 0.0
                if kind == b"":
                    watched = any(app in message for app in self.applications)
                elif kind == b"P":
                    name, text = _strings(message, 2)
                    if name:
                        prepared[name] = self._chance(text)
                    else:
                        unnamed = self._chance(text)
                elif kind == b"B":
                    statement = _strings(message, 2)[1]
                    chance = prepared.get(statement, 0.0) if statement else unnamed
                elif kind == b"Q":
                    chance = self._chance(message)
                if watched and chance and self.rng.random() < chance:
                    cutting.set()  # before the server can answer
                    if self.rng.random() < 1 / 3:
                        self.lost["statement"] += 1
                        return
                    self.lost["reply"] += 1
                writer.write(message)
            await writer.drain()

    async def _down(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cutting: asyncio.Event
    ) -> None:
        frames = _Frames()
        while data := await reader.read(65536):
            for kind, message in frames.feed(data):
                if not cutting.is_set():
                    writer.write(message)
                elif kind == b"Z":  # ReadyForQuery: the statement's transaction has ended
                    return
            await writer.drain()


class Blackout(ReplyCutter):
    """Forwards connections to the server of ``dsn`` until :meth:`black_out`: then every
    connection through it is closed, and new ones are closed at once (as a server restarting
    refuses them), until ``down`` is set back to False."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, b"", b"")
        self.down = False
        self._clients: set[asyncio.StreamWriter] = set()

    def black_out(self) -> None:
        """Close every connection, and refuse new ones from now on."""
        self.down = True
        for client in self._clients:
            client.close()  # its pumps end, and the server's side is closed with it

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.down:
            client_w.close()
            return
        self._clients.add(client_w)
        try:
            await super()._serve(client_r, client_w)
        finally:
            self._clients.discard(client_w)


@contextlib.contextmanager
def serving(proxy: ReplyCutter) -> Iterator[ReplyCutter]:
    """Run ``proxy`` on an event loop of its own, in a thread, for a synchronous test."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(proxy.__aenter__(), loop).result(10)
    try:
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(proxy.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
