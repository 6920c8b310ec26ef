"""A bot printing 50 MB: the state dir grows by at most the session's log cap and a small
margin, the excess is summarised in one stored line, and private API calls keep answering
while the flood is read."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.control.helpers import logs, running_control, start_session, wait_ended
from tests.support.control import ORG, ControlPlane
from tests.support.processes import AGENT_ROOTS, REPO
from tests.support.waiting import wait_for

FLOOD_MB = 50
CAP_BYTES = 1024 * 1024
#: the bench's flooding bot (one bot for both: the test checks what the bench measures)
FLOOD_BOT = REPO / "bench" / "bots" / "log-flood"
#: the database's own overhead for the cap's lines (indexes, pages), the WAL, the flood's
#: last partly freed megabyte of instance log, and what the warm instance printed
MARGIN_BYTES = 6 * 1024 * 1024


def disk_usage(folder: Path) -> dict[str, int]:
    """Bytes of disk each of the folder's files takes (a sparse file counts what it holds)."""
    usage = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            try:
                usage[os.path.relpath(path, folder)] = os.stat(path).st_blocks * 512
            except FileNotFoundError:
                pass
    return usage


@pytest.fixture
def control(tmp_path: Path) -> Iterator[ControlPlane]:
    env = {
        "CATTERY_LOG_MAX_SESSION_BYTES": str(CAP_BYTES),
        "CATTERY_AGENT_ROOTS": os.pathsep.join((AGENT_ROOTS, str(FLOOD_BOT.parent))),
    }
    with running_control(tmp_path, **env) as control:
        yield control


def test_a_log_flood_is_capped_and_the_api_answers(control: ControlPlane) -> None:
    control.deploy("flood", FLOOD_BOT, autoScaling={"minAgents": 1})
    key = control.public_key()
    before = disk_usage(control.state_dir)
    latencies: list[float] = []
    failures: list[str] = []
    flooding = threading.Event()
    flooding.set()

    def poll() -> None:
        with control.client() as c:
            while flooding.is_set():
                began = time.monotonic()
                resp = c.get(f"/v1/organizations/{ORG}/services/flood")
                latencies.append(time.monotonic() - began)
                if resp.status_code != 200:
                    failures.append(f"{resp.status_code} {resp.text[:200]}")
                time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        session_id = start_session(control, key, "flood", {"mb": FLOOD_MB})
        assert wait_ended(control, "flood", session_id, timeout=120)["endState"] == "completed"

        def summarised() -> list[str]:  # once the whole flood has been read
            lines = logs(control, "flood", session_id)
            return [line["log"] for line in lines if "not stored" in line["log"]]

        summary = wait_for(summarised, timeout=120, what="the flood's summary line")
    finally:
        flooding.clear()
        poller.join()
    assert not failures, failures[:5]
    assert latencies, "no private API call was made during the flood"
    assert len(summary) == 1, summary
    after = disk_usage(control.state_dir)
    grown = sum(after.values()) - sum(before.values())
    biggest = sorted(((after[f] - before.get(f, 0), f) for f in after), reverse=True)[:5]
    assert grown <= CAP_BYTES + MARGIN_BYTES, f"the state dir grew by {grown} bytes: {biggest}"
