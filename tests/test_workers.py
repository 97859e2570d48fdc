"""Worker count and how connections spread over the workers."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psutil
import pytest

from service.fair_accept import ConnectionBoard
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
    for _ in range(3):
        first.opened()
    second.opened()
    assert second.fewest_elsewhere() == 3
    assert first.fewest_elsewhere() == 1
    first.closed()
    assert second.fewest_elsewhere() == 2


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
    with running_server(env, tmp_path / "server.log") as server:
        port = int(server.url.rsplit(":", 1)[1])
        for _ in range(5):  # without the fair accept, 28:4 and 21:11 splits were seen
            sockets = connect_many(port, 32)
            counts = connections_per_worker(server.process.pid, port)
            for s in sockets:
                s.close()
            assert sum(counts) == 32, counts
            assert max(counts) - min(counts) <= 4, counts
