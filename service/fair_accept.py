"""Even connection spread over the workers that share one listening socket.

BentoML's workers all accept from the socket its arbiter opened. Each worker's event loop
accepts every pending connection it is woken for, so a burst of new connections (a load
balancer's pool, wrk's 32) often lands mostly on one worker, and stays there for the life of
the keep-alive connections: measured, one run got 28 of 32 connections on one worker and
half the throughput. Here each worker accepts pending connections only while it holds at
most `SLACK` more open connections than the least loaded sibling, whose counts it reads from
a small shared file, and steps aside otherwise. A sibling that does not accept within
`MAX_DEFER_S` (busy, or killed) is not waited for; one that is still starting or has shut down
says so on the board and is not counted at all.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

import uvloop

logger = logging.getLogger("service")

BOARD_ENV = "_MNIST_CONNECTION_BOARD"
SLOT = struct.Struct("=i")
MAX_WORKERS = 64
MAX_DEFER_S = 0.05  # long enough for a sibling descheduled on a busy machine (CI: 23:9 at 2 ms)
RETRY_S = 0.001
# A worker takes pending connections while it holds at most SLACK more than the least loaded
# sibling (so a split ends at most SLACK + 1 apart), SLACK + 1 a wake (ACCEPTS_PER_WAKE when
# no sibling accepts). One connection per wake was fair but slow: a busy worker's loop
# wakes every ~15 ms, so wrk's 128 new connections took ~1 s to be all accepted and their
# first requests waited in the backlog (c=128 p99 264-351 ms; docs/benchmarks.md).
SLACK = 2
ACCEPTS_PER_WAKE = 16
# A sibling that does not accept (yet) is not waited for at all, not even MAX_DEFER_S: the
# worker that is up first takes connections as if it were the only one.
NOT_ACCEPTING = -1


class ConnectionBoard:
    """Open-connection counts of every worker, one int32 each, in a shared mmap'd file. A
    worker that does not accept connections (still starting, or shut down) holds NOT_ACCEPTING,
    so its siblings neither wait for it nor compare themselves with it."""

    def __init__(self, path: Path, slot: int, workers: int) -> None:
        self.slot, self.workers = slot, workers
        with open(path, "r+b") as f:
            self.map = mmap.mmap(f.fileno(), MAX_WORKERS * SLOT.size)
        self.open = 0
        self.accepting = False
        self.publish()  # a restarted worker: not its killed predecessor's count

    @staticmethod
    def create(path: Path) -> None:
        path.write_bytes(SLOT.pack(NOT_ACCEPTING) * MAX_WORKERS)

    def publish(self) -> None:
        value = self.open if self.accepting else NOT_ACCEPTING
        SLOT.pack_into(self.map, self.slot * SLOT.size, value)

    def start_accepting(self) -> None:
        self.accepting = True
        self.publish()

    def stop_accepting(self) -> None:
        """Shutting down: the connections still open close after this, and stay unpublished."""
        self.accepting = False
        self.publish()

    def accepting_elsewhere(self) -> list[int]:
        """The open-connection counts of the other workers that accept connections now."""
        counts = (
            SLOT.unpack_from(self.map, i * SLOT.size)[0]
            for i in range(self.workers)
            if i != self.slot
        )
        return [count for count in counts if count != NOT_ACCEPTING]

    def fewest_elsewhere(self) -> int:
        return min(self.accepting_elsewhere(), default=self.open)

    def opened(self) -> None:
        self.open += 1
        self.publish()

    def closed(self) -> None:
        self.open -= 1
        self.publish()


class FairServer:
    """What `loop.create_server(sock=...)` returns, for uvicorn: accepts fairly until closed."""

    def __init__(self, loop, protocol_factory: Callable, sock: socket.socket, board) -> None:
        self.loop, self.protocol_factory, self.board = loop, protocol_factory, board
        self.sock = sock
        self.sockets = [sock]
        self.fd = sock.fileno()
        sock.setblocking(False)
        self.deferred_since: float | None = None
        self.watching = False
        self.closed = asyncio.Event()
        board.start_accepting()
        logger.info("accepting connections (worker %d of %d)", board.slot + 1, board.workers)
        self.watch()

    def watch(self) -> None:
        if not self.watching and not self.closed.is_set():
            self.loop.add_reader(self.fd, self.on_readable)
            self.watching = True

    def step_aside(self) -> None:
        self.loop.remove_reader(self.fd)
        self.watching = False
        self.loop.call_later(RETRY_S, self.watch)

    def on_readable(self) -> None:
        now = time.monotonic()
        alone = not self.board.accepting_elsewhere()
        slack = ACCEPTS_PER_WAKE if alone else SLACK
        per_wake = ACCEPTS_PER_WAKE if alone else SLACK + 1
        if self.board.open > self.board.fewest_elsewhere() + slack:
            if self.deferred_since is None:
                self.deferred_since = now
            if now - self.deferred_since < MAX_DEFER_S:
                self.step_aside()
                return
        self.deferred_since = None
        # With siblings, at most slack + 1 a wake, then a step aside: a sibling's count may be
        # stale (closed connections it has not seen yet), and this gives it the time to catch up.
        for accepted in range(per_wake):
            if accepted and self.board.open > self.board.fewest_elsewhere() + slack:
                self.step_aside()  # far enough ahead: let a sibling take the next ones
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # none pending (a sibling took it)
            except OSError as exc:  # e.g. out of file descriptors: back off, do not spin
                logger.warning("accept failed: %s", exc)
                self.loop.remove_reader(self.fd)
                self.watching = False
                self.loop.call_later(0.1, self.watch)
                return
            conn.setblocking(False)
            self.board.opened()
            self.loop.create_task(self.serve(conn))
        if not alone:
            self.step_aside()

    async def serve(self, conn: socket.socket) -> None:
        board = self.board

        def counted_protocol():
            protocol = self.protocol_factory()
            lost = protocol.connection_lost

            def connection_lost(exc):
                board.closed()
                lost(exc)

            protocol.connection_lost = connection_lost
            return protocol

        try:
            await self.loop.connect_accepted_socket(counted_protocol, conn)
        except OSError:
            board.closed()
            conn.close()

    def close(self) -> None:
        if self.watching:
            self.loop.remove_reader(self.fd)
            self.watching = False
        self.board.stop_accepting()
        self.closed.set()

    async def wait_closed(self) -> None:
        await self.closed.wait()

    async def start_serving(self) -> None:
        pass

    def is_serving(self) -> bool:
        return not self.closed.is_set()


class FairLoop(uvloop.Loop):
    """uvloop, except that a server on an inherited socket accepts fairly (see module doc)."""

    board: ConnectionBoard | None = None

    async def create_server(self, protocol_factory, host=None, port=None, *, sock=None, **kw):
        if sock is None or self.board is None or kw.get("ssl") is not None:
            return await super().create_server(protocol_factory, host, port, sock=sock, **kw)
        return FairServer(self, protocol_factory, sock, self.board)


def fair_loop_factory(use_subprocess: bool = False) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvicorn's loop factory hook (`uvicorn.config.LOOP_FACTORIES`)."""
    return FairLoop


def install(worker_slot: int, workers: int) -> None:
    """In a worker: use the fair loop for uvicorn when the arbiter made a board."""
    import uvicorn.config

    board_path = os.environ.get(BOARD_ENV)
    if not board_path or workers < 2 or not 0 <= worker_slot < MAX_WORKERS:
        return
    FairLoop.board = ConnectionBoard(Path(board_path), worker_slot, min(workers, MAX_WORKERS))
    uvicorn.config.LOOP_FACTORIES["auto"] = f"{__name__}:fair_loop_factory"
