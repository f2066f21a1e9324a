"""The bundled Redis: closed to other local accounts, and brought back when it dies."""

from __future__ import annotations

import os
import signal
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from tuplehub.storage.embedded_redis import EmbeddedRedis

from .factories import episode_arrays
from .processes import (
    Processes,
    children_of,
    command_of,
    embedded_client,
    free_port,
    isolated_env,
    start_serve,
    stop,
    wait_for_server,
    wait_until,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def bundled(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / ("a-data-folder-with-a-long-path-" * 5) / "redis")  # too long for a socket
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_another_local_account_gets_nothing_from_the_bundled_redis(bundled: EmbeddedRedis) -> None:
    assert bundled.url.startswith("unix://")  # never a TCP port, however long the data folder's path
    assert len(str(bundled.socket_path)) < 100
    assert stat.S_IMODE(bundled.socket_path.parent.stat().st_mode) == 0o700
    [conf] = bundled.socket_path.parent.glob("*.conf")
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    password = redis.Redis.from_url(bundled.url).connection_pool.connection_kwargs["password"]
    assert password not in command_of(bundled.process.pid)  # ps shows no secret
    assert _tcp_ports(bundled) == []

    with socket.socket(socket.AF_UNIX) as attacker:  # the socket file itself, without the password
        attacker.connect(str(bundled.socket_path))
        attacker.sendall(b"DEL tuplehub:login:admin\r\n")  # e.g. clearing sign-in limits
        assert attacker.recv(200).startswith(b"-NOAUTH")
    with redis.Redis.from_url(bundled.url) as insider:  # even with it, no files and no settings
        assert insider.ping()
        for command in (("CONFIG", "SET", "dir", "/tmp"), ("SAVE",), ("DEBUG", "SLEEP", "0"), ("MODULE", "LIST")):
            with pytest.raises(redis.ResponseError, match="unknown command"):
                insider.execute_command(*command)


def _tcp_ports(server: EmbeddedRedis) -> list[int]:
    """TCP ports the process holds open (none expected)."""
    inodes = set()
    for fd in Path(f"/proc/{server.process.pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    tables = (Path(f"/proc/net/{name}").read_text().splitlines()[1:] for name in ("tcp", "tcp6"))
    for line in (line for table in tables for line in table):
        fields = line.split()
        if fields[9] in inodes:
            ports.append(int(fields[1].split(":")[1], 16))
    return ports


def _redis_pid(server_pid: int) -> int:
    [pid] = [pid for pid in children_of(server_pid) if "redis-server" in command_of(pid)]
    return pid


@pytest.mark.slow
def test_a_killed_redis_is_restarted_and_sign_in_upload_and_export_recover(
        tmp_path: Path, running: Processes) -> None:
    env = isolated_env(tmp_path / "config", TUPLEHUB_AUTO_METRICS="false")
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    server = running.add(start_serve(data_dir, free_port(), env=env, log=log))
    url = wait_for_server(data_dir, server, log)
    with embedded_client(data_dir, env) as hub:
        dataset = hub.datasets.create("survivor")
        dataset.upload(episode_arrays(episodes=3, length=10)).wait(timeout=60)
        old = _redis_pid(server.pid)
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: httpx.get(f"{url}/api/v1/health/ready", timeout=5).status_code == 200
                   and _redis_pid(server.pid) != old, 30, "redis to come back")

        with embedded_client(data_dir, env) as again:  # sign-in counts attempts in Redis
            assert again.datasets.get("survivor").name == "survivor"
        dataset.upload(episode_arrays(episodes=2, length=10, first_id=10)).wait(timeout=60)
        exported = dataset.export().to_numpy()
        assert len(np.unique(exported["episode_id"])) == 5
    assert stop(server) == 0
    assert "the bundled redis-server was killed by SIGKILL; restarting it" in log.read_text()


@pytest.mark.slow
def test_a_redis_that_cannot_come_back_is_reported_then_the_server_exits_non_zero(
        tmp_path: Path, running: Processes) -> None:
    env = isolated_env(tmp_path / "config")
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    server = running.add(start_serve(data_dir, free_port(), env=env, log=log))
    url = wait_for_server(data_dir, server, log)
    logfile = data_dir / "redis" / "redis.log"
    logfile.unlink()
    logfile.mkdir()  # redis-server cannot open its log file any more: every restart fails
    os.kill(_redis_pid(server.pid), signal.SIGKILL)

    def reported() -> bool:
        answer = httpx.get(f"{url}/api/v1/health/ready", timeout=5)
        return answer.status_code == 503 and answer.json()["checks"]["redis"].startswith("down")

    wait_until(reported, 10, "readiness to report redis down")
    assert server.wait(30) == 1
    assert "could not be restarted" in log.read_text()
    assert not (data_dir / "server.json").exists()
