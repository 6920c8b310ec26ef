"""Instances of the local backend can't touch the platform or each other.

One ``cattery serve`` running as root, with an operator's ``DAILY_API_KEY`` in its
environment, and two organizations: ``default`` runs a victim bot that holds a secret, and
``acme`` runs a hostile bot (``tests/bots/hostile``) that tries to read the key file, the
database, the victim's log and environment, a private host folder, and to leave processes
behind. Every attempt fails. Skipped where cattery can't run bots as other users (not root).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from cattery.backends.walls.cgroups import TREE_NAME, v2_mount
from tests.integration.control.helpers import Tenant, add_organization, running_control
from tests.support.control import ORG, ControlPlane
from tests.support.processes import TEST_BOTS, processes_where, with_marker
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="tenant users need root")

HOSTILE = TEST_BOTS / "hostile"
OPERATOR_DAILY_KEY = "operator-daily-key-bots-must-not-see"
VICTIM_SECRET = "victim-secret-value"


@pytest.fixture(scope="module")
def walled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Tenant]]:
    base = tmp_path_factory.mktemp("walls")
    base.chmod(0o1777)
    with running_control(base, DAILY_API_KEY=OPERATOR_DAILY_KEY) as control:
        yield control, add_organization(control, "acme")


def deploy(control: ControlPlane, org: str, key: str, name: str, **spec: Any) -> None:
    body = {"serviceName": name, "image": f"{HOSTILE}:latest", **spec}
    with control.client(key) as c:
        resp = c.post(f"/v1/organizations/{org}/services", json=body)
        assert resp.status_code == 200, resp.text

        def ready() -> bool:
            status = c.get(f"/v1/organizations/{org}/services/{name}").json()["body"]
            assert not status["errors"], status["errors"]
            return status["ready"]

        wait_for(ready, timeout=60, what=f"agent {name} ready")


def start(control: ControlPlane, public_key: str, agent: str, body: dict) -> str:
    with control.client(public_key) as c:
        resp = c.post(f"/v1/public/{agent}/start", json={"createDailyRoom": False, "body": body})
    assert resp.status_code == 200, resp.text
    return resp.json()["sessionId"]


def session(control: ControlPlane, org: str, key: str, agent: str, session_id: str) -> dict:
    with control.client(key) as c:
        resp = c.get(f"/v1/organizations/{org}/services/{agent}/sessions/{session_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def ended(control: ControlPlane, org: str, key: str, agent: str, session_id: str) -> dict:
    def done() -> dict | None:
        found = session(control, org, key, agent, session_id)
        return found if found["endedAt"] is not None and found["endState"] else None

    return wait_for(done, timeout=60, what=f"session {session_id} to end")


def session_logs(control: ControlPlane, org: str, key: str, agent: str, session_id: str) -> str:
    with control.client(key) as c:
        resp = c.get(
            f"/v1/organizations/{org}/services/{agent}/logs", params={"session_id": session_id}
        )
    assert resp.status_code == 200, resp.text
    return "\n".join(entry["log"] for entry in resp.json()["logs"])


def report(path: Path) -> dict:
    return wait_for(lambda: path.exists() and json.loads(path.read_text()), what=f"{path}")


def running_as(uid: int) -> list[psutil.Process]:
    return processes_where(lambda proc: proc.uids().real == uid)


def failed(attempts: dict[str, dict]) -> None:
    for target, result in attempts.items():
        assert not result["ok"], f"{target}: {result}"


def group_of(pid: int) -> Path | None:
    """Where ``pid``'s cgroup is in the unified hierarchy (None without one)."""
    mount = v2_mount()
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None  # gone meanwhile
    found = next((line[3:] for line in lines if line.startswith("0::")), None)
    return mount / found.lstrip("/") if mount is not None and found else None


def groups_to_join(*pids: int) -> list[str]:
    """The ``cgroup.procs`` of the groups of ``pids``, of the subtrees holding them and of
    the tree holding every instance's group."""
    targets: set[Path] = set()
    for pid in pids:
        group = group_of(pid)
        if group is not None and TREE_NAME in group.parts:
            targets |= {group, group.parent}
            root = group
            while root.name != TREE_NAME:
                root = root.parent
            targets.add(root)
    return sorted(str(t / "cgroup.procs") for t in targets)


def test_a_hostile_bot_reaches_nothing_of_the_platform_or_its_neighbours(
    walled: tuple[ControlPlane, Tenant], tmp_path: Path
) -> None:
    control, acme = walled
    state = control.state_dir
    # the victim: another organization's session, holding a secret, still running
    with control.client() as c:
        resp = c.put(
            f"/v1/organizations/{ORG}/secrets/victim-secrets",
            json={"name": "victim-secrets", "secretKey": "VICTIM", "secretValue": VICTIM_SECRET},
        )
        assert resp.status_code == 200, resp.text
    deploy(control, ORG, control.admin_token, "victim", secretSet="victim-secrets")
    default_public = control.public_key()
    gate = tmp_path / "gate"
    victim_report = tmp_path / "victim.json"
    victim = start(
        control, default_public, "victim", {"hold": str(gate), "report_to": str(victim_report)}
    )
    # the victim's processes: its forking parent and its instance, as its organization's user
    victim_uid = report(victim_report)["uid"]
    victims = wait_for(
        lambda: len(running_as(victim_uid)) >= 2 and running_as(victim_uid),
        what="the victim's forking parent and instance",
    )
    victim_log = next(state.glob("instances/inst_*.log"))
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "notes.txt").write_text("host data")

    # a neighbour of the same organization as the attacker, also running
    deploy(control, "acme", acme.private_key, "attacker")
    neighbour_report = tmp_path / "neighbour.json"
    start(
        control,
        acme.public_key,
        "attacker",
        {"hold": str(gate), "report_to": str(neighbour_report)},
    )
    neighbour = report(neighbour_report)

    attack_report = tmp_path / "attack.json"
    body = {
        "read": [
            str(state / "secret.key"),
            str(state / "cattery.db"),
            str(victim_log),
            str(private / "notes.txt"),
            "/etc/shadow",
        ],
        "list": [str(state), str(state / "instances"), str(private), "/root"],
        "environ": [proc.pid for proc in victims],
        "write": [str(state / "cattery.db"), str(victim_log)],
        "report_to": str(attack_report),
    }
    neighbours = running_as(neighbour["uid"])
    assert neighbours
    body["environ"] += [proc.pid for proc in neighbours]
    # another organization's groups, the neighbour's (the same agent's: its forking
    # parent's and its instance's), the subtrees they are in and the tree over them all
    body["join"] = groups_to_join(*(proc.pid for proc in [*victims, *neighbours]))
    attacker = start(control, acme.public_key, "attacker", body)
    got = report(attack_report)

    failed(got["read"])
    failed(got["environ"])
    failed(got["write"])
    failed(got["join"])
    refusals = (errno.EACCES, errno.EPERM, errno.EBUSY, errno.ENOENT)
    assert all(attempt["errno"] in refusals for attempt in got["join"].values()), got["join"]
    if body["join"]:  # cgroup v2 walls: born in its own group, and still there
        assert got["born_in"] and got["cgroup"]["value"] == got["born_in"], got
        assert got["born_in"].split("/")[-2].startswith("parent-"), got["born_in"]
    listed = got["list"]
    for folder in (str(state), str(state / "instances"), str(private)):
        assert not listed[folder]["ok"] or "cattery.db" not in listed[folder]["value"], listed
        assert not listed[folder]["ok"] or not listed[folder]["value"] or folder == str(state)
    assert listed[str(state)]["value"] == ["homes"], listed  # only the tenants' homes
    assert "cattery.db" not in json.dumps(listed) and "notes.txt" not in json.dumps(listed)

    # its own user, not root, not the victim's; its environment is the allow-list's
    assert (
        got["uid"] != 0 and got["uid"] == neighbour["uid"] and got["groups"] in ([], [got["gid"]])
    )
    env = got["env"]
    assert "DAILY_API_KEY" not in env and OPERATOR_DAILY_KEY not in env.values()
    assert not [
        k
        for k in env
        if k.startswith("CATTERY_")
        and k != "CATTERY_INSTANCE_TOKEN"
        and k != "CATTERY_MEMORY_LIMIT_BYTES"
        and k != "CATTERY_ICE_FALLBACK_URLS"
    ], env
    assert VICTIM_SECRET not in json.dumps(got)
    assert victim_uid not in (0, got["uid"])  # the victim's processes are neither

    assert ended(control, "acme", acme.private_key, "attacker", attacker)["endState"] == "completed"
    gate.touch()
    assert ended(control, ORG, control.admin_token, "victim", victim)["endState"] == "completed"


def test_a_sessions_processes_end_with_it(
    walled: tuple[ControlPlane, Tenant], tmp_path: Path
) -> None:
    control, acme = walled
    deploy(control, "acme", acme.private_key, "strays")
    marker = f"stray-{uuid.uuid4().hex}"
    gate = tmp_path / "gate"
    report_path = tmp_path / "strays.json"
    session_id = start(
        control,
        acme.public_key,
        "strays",
        {"strays": marker, "hold": str(gate), "report_to": str(report_path)},
    )
    assert report(report_path)["strays"]["ok"]
    assert len(wait_for(lambda: len(with_marker(marker)) >= 3 and with_marker(marker))) >= 3
    gate.touch()
    ended(control, "acme", acme.private_key, "strays", session_id)
    wait_for(lambda: not with_marker(marker), timeout=5, what="the session's processes to be gone")


def test_a_bot_over_its_memory_ends_alone_as_out_of_memory(
    walled: tuple[ControlPlane, Tenant], tmp_path: Path
) -> None:
    control, acme = walled
    small = {
        "apiName": "small",
        "displayName": "Small",
        "resources": {"cpu": "250m", "memory": "256Mi"},
    }
    with control.client(acme.private_key) as c:
        resp = c.post("/v1/organizations/acme/agent-profiles", json=small)
        assert resp.status_code == 200, resp.text
    deploy(control, "acme", acme.private_key, "hog", agentProfile="small")
    deploy(control, "acme", acme.private_key, "calm")
    gate = tmp_path / "gate"
    calm_report = tmp_path / "calm.json"
    calm = start(
        control, acme.public_key, "calm", {"hold": str(gate), "report_to": str(calm_report)}
    )
    report(calm_report)
    hog = start(control, acme.public_key, "hog", {"allocate_mib": 1024})

    with control.client(acme.private_key) as c:
        shown = c.get("/v1/organizations/acme/services/hog").json()["body"]["resources"]
    assert shown["enforcement"]["memory"] in ("cgroup2", "rlimit_as"), shown
    assert shown["memory"].startswith("256Mi (") and shown["enforcement"]["tenantUsers"]

    record = ended(control, "acme", acme.private_key, "hog", hog)
    assert record["endState"] == "out_of_memory", record
    assert "ran out of memory" in session_logs(control, "acme", acme.private_key, "hog", hog)
    assert session(control, "acme", acme.private_key, "calm", calm)["endedAt"] is None
    gate.touch()
    assert ended(control, "acme", acme.private_key, "calm", calm)["endState"] == "completed"


def test_folder_agents_come_only_from_the_allowed_roots(
    walled: tuple[ControlPlane, Tenant], tmp_path: Path
) -> None:
    control, acme = walled
    outside = Path(tempfile.mkdtemp(dir="/var/tmp"))  # not in the tests' roots
    (outside / "bot.py").write_text("async def bot(args):\n    pass\n")
    link = tmp_path / "link"  # inside them, leading out
    link.symlink_to(outside)
    climbing = f"{HOSTILE}/../hostile"
    with control.client(acme.private_key) as c:
        for image, code in (
            (f"{outside}:latest", "AGENT_FOLDER_NOT_ALLOWED"),
            (f"{link}:latest", "AGENT_FOLDER_NOT_ALLOWED"),
            (f"{climbing}:latest", "AGENT_PATH_INVALID"),
            (f"/{'x' * 300}:latest", None),  # a name over NAME_MAX: any code
        ):
            resp = c.post(
                "/v1/organizations/acme/services", json={"serviceName": "bad", "image": image}
            )
            assert resp.status_code == 400, resp.text
            assert resp.json()["code"] == (code or resp.json()["code"]), resp.text
            assert resp.json()["code"] and resp.json()["error"], resp.text
    shutil.rmtree(outside)
