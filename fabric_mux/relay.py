"""A slow link on loopback: a TCP relay that delays everything by a fixed time each way.

This kernel may have no netem, and tests run as a normal process, so the link
is made in Python: every chunk read from one side is written to the other
``delay`` seconds later, in order, with no limit on bandwidth. A round trip
through the relay costs twice the delay.

The relay also counts the *turns* of each conversation (the direction
changing), and among them the answers (the server starting to talk back):
each is a round trip the client waited for. That is how tests count round
trips without timing anything::

    with LatencyRelay(server.port, delay=0.025) as relay:
        ...  # connect to 127.0.0.1:relay.port
        assert relay.round_trips() <= 3
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

__all__ = ["LatencyRelay"]


class LatencyRelay:
    """Relay 127.0.0.1:``port`` to ``target_host``:``target_port``, ``delay`` seconds each way,
    in order, bandwidth untouched.

    A context manager; :meth:`start` and :meth:`close` do the same by hand.
    """

    def __init__(self, target_port: int, delay: float, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        #: The port it listens on (127.0.0.1), once started.
        self.port = 0
        #: Connections relayed so far.
        self.connections = 0
        self._turns = 0
        self._answers = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fabric-mux relay", daemon=True)

    def __enter__(self) -> LatencyRelay:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> LatencyRelay:
        """Start listening (on :attr:`port`) and relaying; returns the relay."""
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def close(self) -> None:
        """Stop listening and cut every relayed connection."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
            self._thread.join(10)

    def turns(self) -> int:
        """How many times, over all connections so far, the talking changed sides."""
        with self._lock:
            return self._turns

    def round_trips(self) -> int:
        """How many times the server side started answering: the round trips the
        client waited for (unlike :meth:`turns`, the same wherever one operation
        ends and the next begins)."""
        with self._lock:
            return self._answers

    # -- inside the relay's thread ------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.ensure_future(self._relay(reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        last_side: list[str] = []
        try:
            await asyncio.gather(
                self._one_way(client_r, server_w, "out", last_side),
                self._one_way(server_r, client_w, "in", last_side),
            )
        finally:
            for writer in (client_w, server_w):
                writer.close()

    async def _one_way(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        side: str,
        last_side: list[str],
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def receive() -> None:
            while True:
                try:
                    data = await reader.read(65536)
                except OSError:
                    data = b""  # reset: the same as its end, for the other side
                if data and last_side[-1:] != [side]:
                    last_side[:] = [side]
                    with self._lock:
                        self._turns += 1
                        self._answers += side == "in"
                queue.put_nowait((loop.time() + self.delay, data))
                if not data:
                    return

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                try:
                    writer.write(data)
                    await writer.drain()
                except OSError:
                    return

        await asyncio.gather(receive(), deliver())
