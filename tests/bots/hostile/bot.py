"""A bot that tries to get out of its instance. The session body says what to try; what
happened is written to ``report_to`` (JSON) before anything that may not return.

{"read": [PATH, ...]}           read the first bytes of each file
{"list": [PATH, ...]}           list each folder
{"environ": [PID, ...]}         read each process's /proc/PID/environ
{"write": [PATH, ...]}          append a byte to each file
{"join": [PATH, ...]}           move itself into each cgroup (a write to its cgroup.procs)
{"strays": MARKER}              start a child in its group, one in a new session (setsid)
                                and a double-forked one, each with MARKER on its command line
{"allocate_mib": N}             then hold N MiB of touched memory, 64 MiB at a time
{"hold": PATH}                  then return once PATH exists

Every report also says which cgroup the instance is in (``cgroup``) and, for a forked
instance, which one it was in at its very first step (``born_in``, noted by a fork hook
registered at import, in the forking parent).
"""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

SLEEPER = "import time, sys; time.sleep(300)"
DOUBLE_FORK = (
    "import subprocess, sys, os; "
    f"subprocess.Popen([sys.executable, '-c', {SLEEPER!r}, sys.argv[1]], start_new_session=True); "
    "os._exit(0)"
)
CHUNK = 64 << 20


def own_cgroup():
    """This process's group in the unified hierarchy (``0::PATH``), or None."""
    with open("/proc/self/cgroup") as f:
        return next((line[3:].strip() for line in f if line.startswith("0::")), None)


BORN_IN = None


def _note_birth():
    global BORN_IN
    BORN_IN = own_cgroup()


os.register_at_fork(after_in_child=_note_birth)


def attempt(action):
    try:
        return {"ok": True, "value": action()}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def read(path):
    with open(path, "rb") as f:
        return f.read(64).hex()


def append(path):
    with open(path, "ab") as f:
        return f.write(b"x")


def join(path):
    with open(path, "w") as f:
        f.write("0\n")
    return own_cgroup()


def failure(action):
    """As ``attempt``, with the errno of a failure."""
    try:
        return {"ok": True, "value": action()}
    except OSError as exc:
        return {"ok": False, "errno": exc.errno, "error": f"{type(exc).__name__}: {exc}"}


def start_strays(marker):
    python = sys.executable
    subprocess.Popen([python, "-c", SLEEPER, marker])
    subprocess.Popen([python, "-c", SLEEPER, marker], start_new_session=True)
    subprocess.run([python, "-c", DOUBLE_FORK, marker], check=True)
    return True


async def bot(runner_args):
    body = runner_args.body or {}
    report = {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "env": dict(os.environ),
        "read": {p: attempt(lambda p=p: read(p)) for p in body.get("read", [])},
        "list": {p: attempt(lambda p=p: sorted(os.listdir(p))) for p in body.get("list", [])},
        "environ": {
            str(pid): attempt(lambda pid=pid: read(f"/proc/{pid}/environ"))
            for pid in body.get("environ", [])
        },
        "write": {p: attempt(lambda p=p: append(p)) for p in body.get("write", [])},
        "join": {p: failure(lambda p=p: join(p)) for p in body.get("join", [])},
        "cgroup": attempt(own_cgroup),
        "born_in": BORN_IN,
    }
    if body.get("strays"):
        report["strays"] = attempt(lambda: start_strays(body["strays"]))
    if body.get("report_to"):
        Path(body["report_to"]).write_text(json.dumps(report))  # noqa: ASYNC240
    if body.get("allocate_mib"):
        held = [b"\x01" * CHUNK for _ in range(body["allocate_mib"] * (1 << 20) // CHUNK)]
        await asyncio.sleep(0.5)
        del held
    if body.get("hold"):
        while not Path(body["hold"]).exists():  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.05)
