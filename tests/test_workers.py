"""Worker count and how connections spread over the workers."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import psutil
import pytest

from service import fair_accept
from service.fair_accept import ConnectionBoard, FairServer
from service.settings import ServiceSettings, usable_cpus
from tests.support.processes import worker_pids
from tests.support.raw_http import read_response
from tests.support.servers import running_server, server_env


def test_auto_workers_follow_the_cgroup_quota(tmp_path):
    mask = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == mask
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # docker run --cpus 0.5
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text(f"{150000 * mask} 100000\n")
    assert usable_cpus(tmp_path) == mask  # never more than the affinity mask


def test_auto_workers_read_a_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == 1


@pytest.mark.parametrize(("value", "count"), [("auto", usable_cpus()), ("3", 3), (" 1 ", 1)])
def test_workers_setting(monkeypatch, value, count):
    monkeypatch.setenv("MNIST_WORKERS", value)
    assert ServiceSettings().worker_count == count


def test_connection_board_is_shared_between_workers(tmp_path):
    path = tmp_path / "board"
    ConnectionBoard.create(path)
    first, second = ConnectionBoard(path, 0, 2), ConnectionBoard(path, 1, 2)
    assert first.accepting_elsewhere() == second.accepting_elsewhere() == []
    first.start_accepting()
    second.start_accepting()
    for _ in range(3):
        first.opened()
    second.opened()
    assert second.fewest_elsewhere() == 3
    assert first.fewest_elsewhere() == 1
    first.closed()
    assert second.fewest_elsewhere() == 2
    first.stop_accepting()  # closed (shutting down): no longer counted as a sibling
    assert second.accepting_elsewhere() == []
    assert second.fewest_elsewhere() == second.open


def test_a_worker_that_shut_down_or_restarted_is_not_counted(tmp_path):
    """uvicorn closes the server, then each open connection (which counts it down): the board
    must go on saying "not accepting". A worker restarted after a SIGKILL starts from "not
    accepting", not from its predecessor's count."""
    ConnectionBoard.create(tmp_path / "board")
    first = ConnectionBoard(tmp_path / "board", slot=0, workers=2)
    second = ConnectionBoard(tmp_path / "board", slot=1, workers=2)
    second.start_accepting()
    second.opened()
    second.opened()
    second.stop_accepting()
    second.closed()
    assert first.accepting_elsewhere() == []
    killed = ConnectionBoard(tmp_path / "board", slot=1, workers=2)
    killed.start_accepting()
    killed.opened()  # then SIGKILL: the count stays on the board
    assert first.accepting_elsewhere() == [1]
    ConnectionBoard(tmp_path / "board", slot=1, workers=2)  # its replacement, still starting
    assert first.accepting_elsewhere() == []


def test_a_closed_server_stays_off_the_board(tmp_path):
    ConnectionBoard.create(tmp_path / "board")
    board = ConnectionBoard(tmp_path / "board", slot=1, workers=2)
    sibling = ConnectionBoard(tmp_path / "board", slot=0, workers=2)
    loop = asyncio.new_event_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = FairServer(loop, asyncio.Protocol, listener, board)
        assert sibling.accepting_elsewhere() == [0]
        board.opened()
        server.close()
        board.closed()  # a connection closed during shutdown
        assert sibling.accepting_elsewhere() == []
    loop.close()


@pytest.mark.parametrize(
    ("workers", "sibling_accepts", "per_wake"),
    [
        (1, False, fair_accept.ACCEPTS_PER_WAKE),
        (2, True, fair_accept.SLACK + 1),
        (2, False, fair_accept.ACCEPTS_PER_WAKE),  # the sibling is still starting
    ],
)
def test_one_wake_takes_several_pending_connections(tmp_path, workers, sibling_accepts, per_wake):
    """One accept per wake was fair but slow: a busy worker's loop wakes every ~15 ms, so wrk's
    128 new connections waited up to ~1 s in the backlog (c=128 p99 264-351 ms). A wake now
    takes up to SLACK + 1 while it is not ahead of its siblings (alone, or while no sibling
    accepts yet: ACCEPTS_PER_WAKE)."""
    ConnectionBoard.create(tmp_path / "board")
    board = ConnectionBoard(tmp_path / "board", slot=0, workers=workers)
    if sibling_accepts:
        ConnectionBoard(tmp_path / "board", slot=1, workers=workers).start_accepting()
    loop = asyncio.new_event_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        server = FairServer(loop, asyncio.Protocol, listener, board)
        try:
            server.on_readable()
            assert board.open == per_wake
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            for client in clients:
                client.close()
            loop.close()


def connect_many(port: int, count: int) -> list[socket.socket]:
    """Open `count` keep-alive connections at once, each answered once (so it was accepted)."""
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    for s in sockets:
        s.sendall(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
    for s in sockets:
        s.settimeout(10)
        assert read_response(s).startswith(b"HTTP/1.1 200")
    return sockets


def connections_per_worker(server_pid: int, port: int) -> list[int]:
    counts = []
    for pid in worker_pids(server_pid):
        process = psutil.Process(pid)
        # psutil < 6 (kserve pins it) names it `connections`.
        listing = getattr(process, "net_connections", None) or process.connections
        established = [
            c
            for c in listing("tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
        ]
        counts.append(len(established))
    return counts


def test_a_burst_of_connections_is_spread_evenly_over_two_workers(
    trained_checkpoint, tmp_path: Path
):
    env = server_env(tmp_path, MODEL_PATH=str(trained_checkpoint), MNIST_WORKERS="2")
    with running_server(env, tmp_path / "server.log") as server:  # both workers accept
        port = int(server.url.rsplit(":", 1)[1])
        for _ in range(5):  # without the fair accept, 28:4 and 21:11 splits were seen
            sockets = connect_many(port, 32)
            counts = connections_per_worker(server.process.pid, port)
            for s in sockets:
                s.close()
            assert sum(counts) == 32, counts
            assert max(counts) - min(counts) <= 4, counts
