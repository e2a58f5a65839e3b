"""A loopback TCP proxy that a test can cut and restore, to simulate a database outage
without stopping the real server other tests use."""

from __future__ import annotations

import asyncio
import contextlib


class CuttableProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server: asyncio.AbstractServer | None = None
        self.port: int | None = None
        self.tasks: set[asyncio.Task] = set()
        self.writers: set[asyncio.StreamWriter] = set()
        self._lose: tuple[bytes, bytes] | None = None
        self.answers_lost = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port or 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening and drop every open connection, as a crashed server would."""
        self.server.close()
        await self.server.wait_closed()
        for writer in list(self.writers):
            writer.close()
        for task in list(self.tasks):
            task.cancel()
        self.writers.clear()

    async def restore(self) -> None:
        await self.start()

    def lose_answer_after(self, first: bytes, then: bytes) -> None:
        """On the next connection whose client sends ``first`` and later ``then`` (say a
        statement and its COMMIT): pass ``then`` on to the server, drop everything the server
        answers from there, and close the connection a moment later. The server did the work
        (it committed); the client never hears so: a commit whose acknowledgement was lost."""
        self._lose = (first, then)

    async def _handle(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers.update({writer, up_writer})
        state = {"seen_first": False, "deaf": False}

        async def pipe(source, sink, upstream: bool):
            with contextlib.suppress(Exception):
                while data := await source.read(65536):
                    if not upstream and state["deaf"]:
                        continue  # the answer is lost
                    sink.write(data)
                    await sink.drain()
                    if upstream and self._lose is not None:
                        first, then = self._lose
                        if state["seen_first"] and then in data:
                            self._lose, state["deaf"] = None, True
                            self.answers_lost += 1
                            asyncio.get_running_loop().call_later(0.5, _hang_up)
                        elif first in data:
                            state["seen_first"] = True
            sink.close()

        def _hang_up():
            writer.close()
            up_writer.close()

        for task in (asyncio.create_task(pipe(reader, up_writer, True)),
                     asyncio.create_task(pipe(up_reader, writer, False))):
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
