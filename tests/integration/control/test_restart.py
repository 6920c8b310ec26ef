"""A control plane killed with SIGKILL during live sessions, then started again on its state.

Instances run in their own sessions, so they outlive ``cattery serve``; the next one adopts
them: their sessions keep running, stay reachable and get their end state recorded, a
session whose instance died meanwhile is recorded as ended, and no instance is orphaned.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import httpx
import psutil

from tests.integration.control.helpers import ON_POSTGRESQL
from tests.support.control import ORG, ControlPlane, control_plane_process
from tests.support.processes import EXAMPLES, TEST_BOTS, gone
from tests.support.waiting import wait_for

#: long enough to outlive a restart of the control plane, which the test waits on anyway


#: a bot that reports its process id, so the test can kill the instance serving it
VICTIM_BOT = """
import asyncio
import json
import os


async def bot(runner_args):
    with open(runner_args.body["report_to"], "w") as f:
        json.dump({"pid": os.getpid(), "session_id": runner_args.session_id}, f)
    await asyncio.Event().wait()
"""


def instance_processes(root: Path) -> list[psutil.Process]:
    """Processes serving a bot copied under ``root``: instances, and any parent they were
    forked from (zombies left out)."""
    found, prefix = [], str(root.resolve())
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(arg.startswith(prefix) for arg in cmdline):
            found.append(proc)
    return found


def copy_bot(source: Path, bots: Path, name: str) -> Path:
    """A copy of a bot folder, so its instances' command lines name this test's folder."""
    return Path(shutil.copytree(source, bots / name))


class Sessions:
    """Starts and inspects sessions on one control plane with a public key."""

    def __init__(self, control: ControlPlane, public_key: str) -> None:
        self.control = control
        self.public_key = public_key

    def public(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.control.url,
            headers={"Authorization": f"Bearer {self.public_key}"},
            timeout=60,
        )

    def start(self, agent: str, body: dict) -> str:
        with self.public() as c:
            resp = c.post(f"/v1/public/{agent}/start", json={"body": body})
        assert resp.status_code == 200, resp.text
        return resp.json()["sessionId"]

    def session(self, agent: str, session_id: str) -> dict:
        with self.control.client() as c:
            resp = c.get(f"/v1/organizations/{ORG}/services/{agent}/sessions/{session_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def wait_end_state(self, agent: str, session_id: str, timeout: float = 60) -> str:
        def ended() -> str | None:
            return self.session(agent, session_id)["endState"]

        return wait_for(ended, timeout=timeout, what=f"the end of session {session_id}")

    def say(self, agent: str, session_id: str, text: str) -> str:
        with self.public() as c:
            resp = c.post(f"/v1/public/{agent}/sessions/{session_id}/messages", json={"text": text})
        assert resp.status_code == 200, resp.text
        return resp.json()["reply"]

    def logs(self, agent: str, session_id: str) -> str:
        with self.control.client() as c:
            resp = c.get(
                f"/v1/organizations/{ORG}/services/{agent}/logs",
                params={"sessionId": session_id, "limit": 1000},
            )
        assert resp.status_code == 200, resp.text
        return json.dumps(resp.json())


def logged_end(state_dir: Path, session_id: str) -> bool:
    """Whether an instance's log holds the session's last line (its end state)."""
    return any(
        session_id in line and "Session ended with end state" in line
        for log in (state_dir / "instances").glob("inst_*.log")
        for line in log.read_text(errors="replace").splitlines()
    )


def read_report(path: Path) -> dict:
    return json.loads(wait_for(lambda: path.exists() and path.read_text(), what=str(path)))


@ON_POSTGRESQL
def test_sessions_survive_a_killed_control_plane(
    control: ControlPlane, control_env: dict[str, str], tmp_path: Path
) -> None:
    bots = tmp_path / "bots"
    probe = copy_bot(TEST_BOTS / "probe", bots, "probe")
    victim = bots / "victim"
    victim.mkdir()
    (victim / "bot.py").write_text(VICTIM_BOT)
    routes = copy_bot(EXAMPLES / "session-routes", bots, "routes")
    for name, folder in (("probe", probe), ("victim", victim), ("routes", routes)):
        control.deploy(name, folder, autoScaling={"minAgents": 0, "maxAgents": 5})
    first = Sessions(control, control.public_key())

    chat = first.start("routes", {"name": "Ada"})
    assert first.say("routes", chat, "before") == "Hello Ada. You said: before"
    stopped = first.start("probe", {"action": "forever", "report_to": str(tmp_path / "d.json")})
    killed = first.start("victim", {"report_to": str(tmp_path / "c.json")})
    release = tmp_path / "release-sleeper"
    sleeper = first.start(
        "probe",
        # returns only when the test says so: it must outlive the restart however slow the machine
        {"action": "until", "path": str(release), "report_to": str(tmp_path / "a.json")},
    )
    brief = first.start(
        "probe", {"action": "sleep", "seconds": 2, "report_to": str(tmp_path / "f.json")}
    )
    for name in ("a", "d", "f"):  # every bot is running before the control plane dies
        read_report(tmp_path / f"{name}.json")
    victim_pid = read_report(tmp_path / "c.json")["pid"]

    second_proc = None
    try:
        control.process.signal(signal.SIGKILL)  # the serve process only, not the instances
        control.process.wait()
        os.kill(victim_pid, signal.SIGKILL)  # an instance dies while nobody watches
        wait_for(lambda: gone(victim_pid), what="the killed instance to exit")
        # and one session ends on its own meanwhile (or, at worst, just before the kill)
        wait_for(lambda: logged_end(control.state_dir, brief), what="the brief session's end")

        second_proc = control_plane_process(
            control.state_dir, tmp_path / "serve-2.log", **control_env
        ).start()
        second_proc.wait_ready("/healthz", timeout=60)
        second = ControlPlane(second_proc, control.state_dir)
        again = Sessions(second, first.public_key)

        # Recovery happens before the control plane serves: sessions whose instance is gone
        # are settled, with the end state the instance logged if it did.
        assert again.session("victim", killed)["endState"] == "terminated"
        assert again.session("probe", brief)["endState"] == "completed"
        for agent, session_id in (("routes", chat), ("probe", stopped), ("probe", sleeper)):
            assert again.session(agent, session_id)["endState"] is None

        # The Session API reaches the same bot process, with its conversation so far.
        assert again.say("routes", chat, "after") == "Hello Ada. You said: after"
        with again.public() as c:
            history = c.get(f"/v1/public/routes/sessions/{chat}/messages").json()["messages"]
        assert [m["text"] for m in history if m["role"] == "user"] == ["before", "after"]

        # Stopping a reattached session terminates its instance.
        with second.client() as c:
            resp = c.delete(f"/v1/organizations/{ORG}/services/probe/sessions/{stopped}")
        assert resp.status_code == 200, resp.text
        assert again.wait_end_state("probe", stopped) == "terminated"

        # Sessions that finish on their own record how they ended, from the runtime's log.
        with again.public() as c:
            assert c.post(f"/v1/public/routes/sessions/{chat}/end").status_code == 200
        assert again.wait_end_state("routes", chat) == "completed"
        release.touch()
        assert again.wait_end_state("probe", sleeper, timeout=60) == "completed"
        assert "probe bot done" in again.logs("probe", sleeper)

        # New sessions start as before.
        fresh = again.start("probe", {"action": "report", "report_to": str(tmp_path / "e.json")})
        assert read_report(tmp_path / "e.json")["session_id"] == fresh
        assert again.wait_end_state("probe", fresh) == "completed"
    finally:
        if second_proc is not None:
            second_proc.stop()  # graceful: closes every instance it owns
        left = leftover_instances(tmp_path)
    assert not left, f"instances left without an owner: {left}"


def leftover_instances(root: Path) -> list[list[str]]:
    """Wait for the instances under ``root`` to exit; kill and name any that do not."""
    try:
        wait_for(lambda: not instance_processes(root), timeout=30, what="no instance left")
        return []
    except AssertionError:
        left = instance_processes(root)
        for proc in left:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        return [proc.info["cmdline"] for proc in left]
