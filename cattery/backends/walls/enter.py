"""Enter an instance's walls, then become its program: run as root, exec as the tenant.

``python -I -m cattery.backends.walls.enter --plan-fd N -- PROGRAM ARGS...`` reads a JSON
plan from descriptor N (never from argv, which every user can read in ``/proc``), then:

1. joins the instance's cgroup, so everything it ever starts is in it;
2. gives it a private mount namespace where each ``cover`` folder is an empty read-only
   tmpfs (the state dir, and folders the tenant could not cross, such as ``/root``) with
   only the ``reveal`` folders bound back (the interpreter, the agent's folder and
   packages, the tenant's home), and ``/proc`` shows only the tenant's own processes;
3. sets a private umask and drops to the tenant's uid and gid, with no supplementary
   groups and ``no_new_privs`` (no setuid program gives root back);
4. executes PROGRAM with the plan's environment, in the plan's folder.

It runs with an empty environment and ``-I``: nothing of the agent's (``LD_PRELOAD``,
``PYTHONPATH``) reaches the part that runs as root. Standard library only.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_NO_NEW_PRIVS = 38
EXIT_WALLS_FAILED = 126

#: the C library this interpreter is linked with (``find_library`` would run ldconfig)
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None):
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def join_cgroup(cgroup: str | None) -> None:
    if cgroup:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
            procs.write("0\n")


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def build_view(covers: list[str], reveals: list[str]) -> None:
    """Cover each folder with an empty tmpfs, then bind back the reveals inside it.

    Covers are taken shallowest first; one inside another cover is already hidden unless
    a reveal brought it back, in which case it is covered again on top of that.
    """
    _check(_libc.unshare(CLONE_NEWNS), "unshare")
    mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    done: list[str] = []
    for cover in sorted(set(covers), key=lambda p: (p.count("/"), p)):
        hidden = any(_inside(cover, c) for c in done) and not any(
            _inside(cover, r) for r in reveals if any(_inside(r, c) for c in done)
        )
        if hidden or not os.path.isdir(cover):
            continue
        inner = [r for r in reveals if _inside(r, cover) and r != cover and os.path.exists(r)]
        handles = {r: os.open(r, os.O_PATH) for r in inner}
        mount("tmpfs", cover, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
        for reveal, fd in handles.items():
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.makedirs(reveal, mode=0o755, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(reveal), mode=0o755, exist_ok=True)
                open(reveal, "a").close()
            mount(f"/proc/self/fd/{fd}", reveal, None, MS_BIND | MS_REC, None)
            os.close(fd)
        mount(None, cover, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
        done.append(cover)
    for options in ("hidepid=invisible", "hidepid=2"):
        try:
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, options)
            break
        except OSError:
            continue


def drop_to(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def enter_walls(plan: dict) -> None:
    """Steps 1 to 3, then the plan's folder: this process is walled in from here on (a
    forking parent formed from a shared one does this itself, then imports its bot)."""
    join_cgroup(plan.get("cgroup"))
    os.umask(0o022)
    if plan.get("covers"):
        build_view(plan["covers"], plan.get("reveals", []))
    os.umask(0o077)
    if plan.get("uid") is not None:
        drop_to(int(plan["uid"]), int(plan["gid"]))
    os.chdir(plan.get("cwd") or "/")


def enter(plan: dict, program: list[str]) -> None:
    enter_walls(plan)
    os.execve(program[0], program, plan.get("env") or {})


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[0] != "--plan-fd" or argv[2] != "--":
        print("usage: enter --plan-fd N -- PROGRAM ARGS...", file=sys.stderr)
        raise SystemExit(2)
    fd = int(argv[1])
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    plan = json.loads(b"".join(chunks))
    if fd != 0:
        os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # the plan came on stdin: the program reads nothing there
    os.close(null)
    try:
        enter(plan, argv[3:])
    except OSError as exc:
        print(f"cattery: could not enter the instance's walls: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_WALLS_FAILED) from None


if __name__ == "__main__":
    main(sys.argv[1:])
