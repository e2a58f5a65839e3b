"""The access log: one JSON line a request, written off the request's path.

A request only encodes its line (msgspec, once) and appends it to the current batch. The
batch is handed, whole, to one writer thread ``BATCH_SECONDS`` after its first line (or
once it holds ``MAX_BATCH_LINES``), so the requests answered meanwhile cost one hand-over
and one write. The hand-over queue is bounded: when the writer falls behind (a slow disk, a full
pipe), whole batches are dropped and counted (``fluxer_access_log_dropped_total``) instead
of blocking requests or growing memory. The writer takes the log handler's lock around
each write, so access lines and the other log records (ops/logging.py) never interleave
within a line.

The lines carry the same fields as the other records: ts, level, logger, msg, and the
request's request_id, method, path (never the query string), status and ms.
"""

from __future__ import annotations

import asyncio
import atexit
import io
import logging
import os
import queue
import sys
import threading
import time

import msgspec

from fluxer_oauth.ops import metrics

LOGGER = "fluxer.http"
MAX_PENDING_BATCHES = 256  # batches waiting for the writer; beyond, a batch is dropped
BATCH_SECONDS = 0.02  # how long a batch gathers lines: waking the writer once per loop turn cost more
MAX_BATCH_LINES = 2048
_encode = msgspec.json.Encoder().encode


class AccessLog:
    """Writes to ``stream`` (a binary file) when given, else where ``handler`` (a logging
    StreamHandler) writes, under its lock, else to the process's stderr."""

    def __init__(self, *, stream=None, handler: logging.StreamHandler | None = None) -> None:
        self._stream = stream
        self._handler = handler
        self._batch: list[bytes] = []
        self._queue: queue.Queue[bytes | None] = queue.Queue(MAX_PENDING_BATCHES)
        self._writer: threading.Thread | None = None
        self._pid = os.getpid()

    def record(self, request_id: str, method: str, path: str, status: int, ms: float) -> None:
        line = _encode({"ts": round(time.time(), 3), "level": "info", "logger": LOGGER, "msg": "request",
                        "request_id": request_id, "method": method, "path": path, "status": status, "ms": ms})
        batch = self._batch
        batch.append(line)
        if len(batch) == 1:
            try:
                asyncio.get_running_loop().call_later(BATCH_SECONDS, self._hand_over)
            except RuntimeError:  # no loop (a synchronous caller): write at once
                self._hand_over()
        elif len(batch) >= MAX_BATCH_LINES:
            self._hand_over()

    def _hand_over(self) -> None:
        lines, self._batch = self._batch, []
        if not lines:
            return
        self._start_writer()
        try:
            self._queue.put_nowait(b"\n".join(lines) + b"\n")
        except queue.Full:
            metrics.ACCESS_LOG_DROPPED.inc(len(lines))

    def _start_writer(self) -> None:
        if self._writer is not None and self._pid == os.getpid():
            return
        # First use, or a forked child: the parent's thread did not come along.
        self._pid = os.getpid()
        self._queue = queue.Queue(MAX_PENDING_BATCHES)
        self._writer = threading.Thread(target=self._write_forever, name="access-log", daemon=True)
        self._writer.start()
        atexit.register(self.flush)

    def _write_forever(self) -> None:
        while True:
            data = self._queue.get()
            if data is None:
                return
            self._write(data)
            self._queue.task_done()

    def _write(self, data: bytes) -> None:
        try:
            if self._stream is not None:
                _write_to(self._stream, data)
            elif self._handler is not None:
                with self._handler.lock:  # (an RLock: whole lines, never inside another record's)
                    _write_to(self._handler.stream, data)
            else:
                _write_to(sys.stderr, data)
        except (OSError, ValueError):  # the log's file went away: requests carry on
            metrics.ACCESS_LOG_DROPPED.inc(data.count(b"\n"))

    def flush(self) -> None:
        """Write what is pending and wait until the writer has written it (at exit; tests)."""
        self._hand_over()
        if self._writer is not None and self._pid == os.getpid() and self._writer.is_alive():
            self._queue.join()


def access_log_for(logger: logging.Logger) -> AccessLog:
    """The access log writing where ``logger``'s records go: its first stream handler's
    stream, under that handler's lock (stderr when it has none)."""
    handler = next((h for h in _handlers(logger) if isinstance(h, logging.StreamHandler)), None)
    return AccessLog(handler=handler)


def _write_to(stream, data: bytes) -> None:
    binary = getattr(stream, "buffer", None)
    if binary is not None:
        stream.flush()  # what the text layer holds goes first
        binary.write(data)
        binary.flush()
    elif isinstance(stream, (io.RawIOBase, io.BufferedIOBase)):
        stream.write(data)
        stream.flush()
    else:
        stream.write(data.decode())
        stream.flush()


def _handlers(logger: logging.Logger):
    current = logger
    while current is not None:
        yield from current.handlers
        if not current.propagate:
            return
        current = current.parent
