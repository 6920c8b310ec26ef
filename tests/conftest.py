"""Fixtures shared by every test: a guard against leaked processes and threads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.processes import ServerProcess, runtime_process
from tests.support.waiting import wait_for


@pytest.fixture(autouse=True)
def no_leaked_children() -> Iterator[None]:
    """Fail a test that leaves child processes or non-daemon threads behind."""
    me = psutil.Process()
    before_threads = {t.ident for t in threading.enumerate()}
    yield

    def settled() -> bool:
        return not [c for c in me.children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE]

    try:
        wait_for(settled, timeout=15, what="child processes to exit")
    except AssertionError:
        leaked = me.children(recursive=True)
        for child in leaked:
            child.kill()
        pytest.fail(f"test leaked child processes: {[c.cmdline() for c in leaked]}")
    threads = [
        t
        for t in threading.enumerate()
        if t.ident not in before_threads and not t.daemon and t.is_alive()
    ]
    assert not threads, f"test leaked threads: {threads}"


@pytest.fixture
def start_runtime(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``cattery runtime BOT`` processes; all are stopped after the test."""
    started: list[ServerProcess] = []

    def start(bot: Path | str, ready: bool = True, **env: str) -> ServerProcess:
        proc = runtime_process(bot, tmp_path / f"runtime-{len(started)}.log", **env).start()
        started.append(proc)
        return proc.wait_ready() if ready else proc

    yield start
    for proc in started:
        proc.stop()
