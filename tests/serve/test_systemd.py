"""serve/systemd.py against a real NOTIFY_SOCKET and the real systemd-analyze."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.serve.systemd import SystemdNotifier, default_run_as, render_unit
from daemon.settings import load_settings
from tests.contract import bound
from tests.notify_socket import NotifySocket

FLOWERD = str(Path(sys.executable).parent / "flowerd")  # the real one: verify checks it exists
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)"
)


@pytest.fixture
def notify_socket():
    with NotifySocket() as ns:
        yield ns


def notifier_for(ns: NotifySocket, **env: str) -> SystemdNotifier:
    return SystemdNotifier.from_env({**ns.env, **env})


# -- the notify protocol ------------------------------------------------------------------


def test_without_notify_socket_everything_is_a_no_op():
    notifier = SystemdNotifier.from_env({"WATCHDOG_USEC": "200000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    notifier.ready("up")
    notifier.status("x")
    notifier.reloading()
    notifier.stopping()
    notifier.extend_timeout(5)
    notifier.watchdog()
    notifier.close()


async def test_watchdog_loop_returns_at_once_without_a_watchdog(notify_socket):
    with notifier_for(notify_socket) as notifier:
        async with asyncio.timeout(1):
            await notifier.watchdog_loop()
    assert notify_socket.drain() == []


def test_one_datagram_per_message(notify_socket):
    with notifier_for(notify_socket) as notifier:
        notifier.notify(READY=1, STATUS="3 schedules")
        notifier.stopping()
    first, second = (
        notify_socket.wait_for(lambda m: True),
        notify_socket.wait_for(lambda m: "STOPPING" in m, after=1),
    )
    assert first.raw == b"READY=1\nSTATUS=3 schedules\n"
    assert second.raw == b"STOPPING=1\n"


def test_abstract_socket():
    with NotifySocket(abstract=True) as ns, notifier_for(ns) as notifier:
        assert ns.address.startswith("@")
        notifier.ready("up")
        assert ns.wait_for(lambda m: "READY" in m).fields == {"READY": "1", "STATUS": "up"}


def test_status_is_sent_only_when_it_changes(notify_socket):
    with notifier_for(notify_socket) as notifier:
        notifier.status("idle")
        notifier.status("idle")
        notifier.status("1 run\nactive")  # always one line
        notifier.ready("1 run active")  # same status: READY alone
        notifier.stopping("draining")
    notify_socket.wait_for(lambda m: "STOPPING" in m)
    assert [m.fields for m in notify_socket.messages] == [
        {"STATUS": "idle"},
        {"STATUS": "1 run active"},
        {"READY": "1"},
        {"STOPPING": "1", "STATUS": "draining"},
    ]


def test_reloading_carries_the_monotonic_time(notify_socket):
    before_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    with notifier_for(notify_socket) as notifier:
        notifier.reloading()
    message = notify_socket.wait_for(lambda m: "RELOADING" in m)
    after_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert message["RELOADING"] == "1"
    assert before_us <= int(message["MONOTONIC_USEC"]) <= after_us


def test_extend_timeout_and_watchdog(notify_socket):
    with notifier_for(notify_socket) as notifier:
        notifier.extend_timeout(2.5)
        notifier.watchdog()
    notify_socket.wait_for(lambda m: "WATCHDOG" in m)
    assert [m.raw for m in notify_socket.messages] == [
        b"EXTEND_TIMEOUT_USEC=2500000\n",
        b"WATCHDOG=1\n",
    ]


@pytest.mark.parametrize(
    ("env", "interval_s"),
    [
        ({"WATCHDOG_USEC": "200000"}, 0.1),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_from_env(notify_socket, env, interval_s):
    assert notifier_for(notify_socket, **env).watchdog_interval_s == interval_s


async def test_watchdog_loop_pings_at_half_the_timeout(notify_socket):
    with notifier_for(notify_socket, WATCHDOG_USEC="200000") as notifier:
        task = asyncio.create_task(notifier.watchdog_loop())
        try:
            for n in range(6):
                await notify_socket.async_wait_for(lambda m: "WATCHDOG" in m, 2, after=n)
        finally:
            task.cancel()
    pings = notify_socket.with_key("WATCHDOG", "1")
    gaps = sorted(b.at - a.at for a, b in zip(pings, pings[1:], strict=False))
    assert gaps[0] >= 0.08, gaps  # never faster than half the timeout...
    assert 0.09 <= statistics.median(gaps) <= 0.14, gaps  # ...and not the full timeout


async def test_a_stalled_event_loop_misses_its_pings(notify_socket):
    """The loop pings from the event loop itself, so a blocking call delays the pings:
    that is what lets systemd's watchdog catch a stalled daemon."""
    with notifier_for(notify_socket, WATCHDOG_USEC="100000") as notifier:
        task = asyncio.create_task(notifier.watchdog_loop())
        try:
            await notify_socket.async_wait_for(lambda m: "WATCHDOG" in m, 2)
            time.sleep(0.3)  # the stall under test
            await notify_socket.async_wait_for(lambda m: "WATCHDOG" in m, 2, after=1)
        finally:
            task.cancel()
    first, second = notify_socket.with_key("WATCHDOG")[:2]
    assert second.at - first.at >= 0.3


def test_a_vanished_manager_never_raises(caplog):
    ns = NotifySocket()
    notifier = notifier_for(ns)
    ns.close()  # the socket file is gone
    with caplog.at_level(logging.DEBUG, logger="daemon.systemd"):
        notifier.ready()
        notifier.watchdog()
    notifier.close()
    assert len([r for r in caplog.records if "cannot notify" in r.getMessage()]) == 1


def test_unsupported_address_disables_notifications():
    assert not SystemdNotifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_a_child_process_notifies_through_the_env(notify_socket):
    """The way an end-to-end test drives `flowerd serve`: pass `env` to the process."""
    code = (
        "from daemon.serve.systemd import SystemdNotifier; "
        "SystemdNotifier.from_env().ready('child up')"
    )
    env = {**os.environ, **notify_socket.env}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=bound(30))
    assert notify_socket.wait_for(lambda m: "READY" in m)["STATUS"] == "child up"


# -- the unit file ------------------------------------------------------------------------


def unit_settings(tmp_path: Path, **overrides):
    return load_settings(tmp_path, **overrides)


def directives(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_system_unit(tmp_path):
    settings = unit_settings(tmp_path, shutdown_grace=50)
    d = directives(render_unit(settings, user=False, flowerd_path=FLOWERD, run_as="alice"))
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert d["ExecStart"] == [f"{FLOWERD} --base-dir {tmp_path} serve"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["TimeoutStopSec"] == ["65"]  # the grace period and a margin
    assert d["User"] == ["alice"] and "DynamicUser" not in d
    assert d["StateDirectory"] == [f"flowerd/{tmp_path.name}"]  # one per project
    db_url = f"sqlite+aiosqlite:////var/lib/flowerd/{tmp_path.name}/history.db"
    assert f"FLOWERD_DATABASE_URL={db_url}" in d["Environment"]
    assert "PYTHONUNBUFFERED=1" in d["Environment"]
    assert d["ProtectSystem"] == ["strict"] and d["ProtectHome"] == ["read-only"]
    assert d["CapabilityBoundingSet"] == [""]
    assert "ReadWritePaths" not in d  # StateDirectory= is the only writable place
    assert d["WantedBy"] == ["multi-user.target"]
    assert d["OOMPolicy"] == ["continue"]  # an OOM-killed worker fails one run only
    assert d["KillMode"] == ["mixed"]  # SIGTERM to flowerd alone: it drains its workers


def test_system_unit_defaults_to_a_dynamic_user(tmp_path):
    d = directives(render_unit(unit_settings(tmp_path), user=False, flowerd_path=FLOWERD))
    assert d["DynamicUser"] == ["yes"] and "User" not in d


def test_user_unit_keeps_only_what_a_user_manager_can_apply(tmp_path):
    d = directives(render_unit(unit_settings(tmp_path), user=True, flowerd_path=FLOWERD))
    db_url = f"sqlite+aiosqlite:///%S/flowerd/{tmp_path.name}/history.db"
    assert f"FLOWERD_DATABASE_URL={db_url}" in d["Environment"]
    for system_only in ("User", "DynamicUser", "ProtectSystem", "PrivateUsers", "After"):
        assert system_only not in d
    assert d["NoNewPrivileges"] == ["yes"] and d["SystemCallFilter"][0] == "@system-service"
    assert d["WantedBy"] == ["default.target"]
    assert d["OOMPolicy"] == ["continue"]


def test_a_non_sqlite_database_stays_out_of_the_unit(tmp_path):
    url = "postgresql+asyncpg://flowerd:s3cret@db/flowerd"
    unit = render_unit(unit_settings(tmp_path, database_url=url), user=False, flowerd_path=FLOWERD)
    assert "s3cret" not in unit and "FLOWERD_DATABASE_URL" not in unit


def test_default_run_as_is_the_base_dir_owner_unless_root(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to chown the base dir")
    assert default_run_as(tmp_path) is None  # root-owned: a DynamicUser
    os.chown(tmp_path, 65534, 65534)
    assert default_run_as(tmp_path) == pwd.getpwuid(65534).pw_name


def analyze(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ANALYZE, *args], capture_output=True, text=True, timeout=bound(30), env=env
    )


def write_unit(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flowerd.service"
    path.write_text(text)
    return path


@needs_analyze
@pytest.mark.parametrize("run_as", [None, "root"])
def test_systemd_analyze_verify_accepts_the_system_unit(tmp_path, run_as):
    base = tmp_path / "my pipelines 100%"  # spaces and specifier characters are escaped
    base.mkdir()
    unit = write_unit(tmp_path, render_unit(unit_settings(base), user=False, run_as=run_as))
    result = analyze("verify", str(unit))
    assert result.returncode == 0 and str(unit) not in result.stdout + result.stderr, result


@needs_analyze
def test_systemd_analyze_verify_accepts_the_user_unit(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    unit = write_unit(tmp_path, render_unit(unit_settings(tmp_path), user=True))
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    result = analyze("--user", "verify", str(unit), env=env)
    assert result.returncode == 0 and str(unit) not in result.stdout + result.stderr, result


@needs_analyze
def test_systemd_analyze_verify_is_not_vacuous(tmp_path):
    unit_text = render_unit(unit_settings(tmp_path), user=False, flowerd_path="/nonexistent/fd")
    result = analyze("verify", str(write_unit(tmp_path, unit_text)))
    assert result.returncode != 0


@needs_analyze
def test_system_unit_exposure_is_low(tmp_path):
    unit = write_unit(tmp_path, render_unit(unit_settings(tmp_path), user=False))
    result = analyze("security", "--offline=true", str(unit))
    if "--offline" in result.stderr:
        pytest.skip(f"this systemd-analyze has no --offline: {result.stderr.strip()}")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result
    assert float(match.group(1)) <= 2.5, result.stdout


# -- flowerd service print / install ------------------------------------------------------


def flowerd_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FLOWERD, *args], capture_output=True, text=True, timeout=bound(30), env=dict(os.environ)
    )


def project(path):
    """What a unit serves: a base dir with schedules/ and pipelines/."""
    for part in ("schedules", "pipelines"):
        (path / part).mkdir(parents=True, exist_ok=True)
    return path


def test_service_print_prints_the_unit(tmp_path):
    project(tmp_path)
    result = flowerd_cli("--base-dir", str(tmp_path), "service", "print", "--run-as", "dynamic")
    assert result.returncode == 0, result.stderr
    settings = unit_settings(tmp_path)
    assert result.stdout == render_unit(settings, user=False, flowerd_path=FLOWERD)


def test_service_install_writes_the_unit_and_says_how_to_enable_it(tmp_path):
    target = project(tmp_path) / "units" / "flowerd.service"
    args = ("--base-dir", str(tmp_path), "service", "install", "--user", "--path", str(target))
    result = flowerd_cli(*args)
    assert result.returncode == 0, result.stderr
    assert target.read_text() == render_unit(unit_settings(tmp_path), user=True)
    assert f"wrote {target}" in result.stdout
    enable = (
        f"systemctl --user daemon-reload && systemctl --user enable --now flowerd-{tmp_path.name}"
    )
    assert enable in result.stdout


def test_two_projects_get_two_units_and_a_name_can_be_given(tmp_path):
    shop, blog = project(tmp_path / "shop"), project(tmp_path / "blog")
    units = [directives(render_unit(unit_settings(p), user=False)) for p in (shop, blog)]
    assert [u["StateDirectory"] for u in units] == [["flowerd/shop"], ["flowerd/blog"]]
    named = render_unit(unit_settings(shop), user=False, name="webshop")
    assert named.startswith(f"# flowerd-webshop.service for {shop},")
    assert directives(named)["StateDirectory"] == ["flowerd/webshop"]
    done = flowerd_cli("--base-dir", str(shop), "service", "print", "--name", "web shop")
    assert done.returncode == 2 and "--name 'web shop'" in done.stderr


def test_run_as_a_user_that_does_not_exist_is_refused(tmp_path):
    project(tmp_path)
    done = flowerd_cli("--base-dir", str(tmp_path), "service", "print", "--run-as", "nobody_x7")
    assert done.returncode == 2 and done.stdout == ""
    assert "--run-as: no user 'nobody_x7' on this host" in done.stderr


def test_a_dynamic_user_is_warned_about_unreadable_paths(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    project(private)
    result = flowerd_cli("--base-dir", str(private), "service", "print", "--run-as", "dynamic")
    assert result.returncode == 0
    assert f"a DynamicUser cannot read {private}" in result.stderr
