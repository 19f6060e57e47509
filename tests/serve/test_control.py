"""The control socket: real Unix sockets, a real server, the CLI's blocking client."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from pathlib import Path

import pytest

from daemon.errors import DaemonNotRunning, FlowerdError
from daemon.serve.control import ControlServer, request


async def echo(req: dict) -> dict:
    return {"echo": req.get("schedule")}


async def refuse(req: dict) -> dict:
    raise FlowerdError("no schedule 'x'")


async def serve(path: Path) -> ControlServer:
    server = ControlServer(path, {"echo": echo, "refuse": refuse})
    await server.start()
    return server


@pytest.mark.parametrize("depth", [1, 12])  # 12 levels: a path far beyond sun_path's 108
async def test_answers_on_short_and_very_long_paths(tmp_path: Path, depth: int):
    directory = tmp_path.joinpath(*["a-rather-long-directory-name"] * depth)
    path = directory / "flowerd.sock"
    server = await serve(path)
    try:
        answer = await asyncio.to_thread(request, path, "echo", schedule="nightly")
        assert answer == {"ok": True, "echo": "nightly"}
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    finally:
        await server.close()
    assert not path.exists()


async def test_errors_come_back_as_answers(tmp_path: Path):
    path = tmp_path / "c.sock"
    server = await serve(path)
    try:
        refused = await asyncio.to_thread(request, path, "refuse")
        assert refused == {"ok": False, "error": "no schedule 'x'", "exit_code": 1}
        unknown = await asyncio.to_thread(request, path, "nope")
        assert not unknown["ok"] and "echo, refuse" in unknown["error"]
        raw = await asyncio.to_thread(_send_raw, path, b"not json\n")
        assert json.loads(raw)["ok"] is False
    finally:
        await server.close()


def _send_raw(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(data)
        return sock.recv(65536)


def test_no_daemon_is_exit_3(tmp_path: Path):
    with pytest.raises(DaemonNotRunning) as caught:
        request(tmp_path / "missing" / "flowerd.sock", "status")
    assert caught.value.exit_code == 3
    (tmp_path / "stale.sock").touch()  # a file left behind, nobody listening
    with pytest.raises(DaemonNotRunning):
        request(tmp_path / "stale.sock", "status")


async def test_a_stale_socket_is_replaced_at_start(tmp_path: Path):
    path = tmp_path / "c.sock"
    path.touch()
    server = await serve(path)
    try:
        assert (await asyncio.to_thread(request, path, "echo"))["ok"]
    finally:
        await server.close()
