"""What a Dockerfile means when there is no container engine to build it.

A project made for Pipecat Cloud's base image (``FROM dailyco/pipecat-base``) only adds
its requirements and its ``bot.py`` to that image, and that is what a folder agent is:
the local backend runs ``bot.py`` with the packages ``requirements.txt`` or
``pyproject.toml`` name. So such a Dockerfile is understood without building it. Any
instruction that does something else (a system package, a command of its own, another
base) needs a real build, and the answer names the setting that enables one.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

#: the base images whose projects run as folder agents
PIPECAT_BASES = ("dailyco/pipecat-base", "docker.io/dailyco/pipecat-base")
#: instructions that change nothing a folder agent needs
IGNORED = {"ARG", "ENV", "LABEL", "EXPOSE", "WORKDIR", "USER", "STOPSIGNAL", "SHELL"}
NEEDS_ENGINE = (
    "a real image build: set CATTERY_CONTAINER__ENGINE_URL to a Docker Engine API socket "
    "(Docker's, or podman's) so cattery builds the Dockerfile"
)
#: the commands that install a project's Python dependencies
_INSTALL = re.compile(
    r"^(python3? -m )?(pip3?|uv pip) install\b|^uv (sync|pip sync)\b|^(apt-get|apk) update$"
)


class DockerfileNotUnderstood(Exception):
    """The Dockerfile needs a real build; the message says which line and why."""


@dataclass
class FolderPlan:
    """What a Dockerfile asks of a folder agent, and the log of reading it."""

    base: str
    steps: list[str] = field(default_factory=list)


def instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, with continuation lines joined and comments
    dropped."""
    joined: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    if current.strip():
        joined.append(current)
    out = []
    for line in joined:
        word, _, rest = line.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def is_pipecat_base(image: str) -> bool:
    name = image.split("@", 1)[0]
    head, sep, tag = name.rpartition(":")
    if sep and "/" not in tag:
        name = head
    return name in PIPECAT_BASES


def _run_command(args: str) -> str:
    """The shell command of a RUN, without its ``--mount``/``--network`` flags."""
    words = args.split()
    while words and words[0].startswith("--"):
        words.pop(0)
    return " ".join(words)


def _understood_run(command: str) -> bool:
    parts = [p.strip() for p in re.split(r"&&|;", command) if p.strip()]
    return bool(parts) and all(_INSTALL.search(p) for p in parts)


def plan_folder(text: str) -> FolderPlan:
    """Read a Dockerfile as a folder agent; ``DockerfileNotUnderstood`` says what needs a
    real build."""
    steps = instructions(text)
    if not steps:
        raise DockerfileNotUnderstood("The Dockerfile is empty")
    base = ""
    log: list[str] = []
    for n, (word, args) in enumerate(steps, start=1):
        log.append(f"Step {n}/{len(steps)} : {word} {args}")
        if word == "FROM":
            if base:
                raise DockerfileNotUnderstood(
                    f"Step {n} ({word} {args}): a multi-stage build needs {NEEDS_ENGINE}"
                )
            image = shlex.split(args)[0] if args else ""
            if not is_pipecat_base(image):
                raise DockerfileNotUnderstood(
                    f"Step {n} (FROM {image}): only dailyco/pipecat-base projects run "
                    f"without an image; another base needs {NEEDS_ENGINE}"
                )
            base = image
        elif word in IGNORED:
            continue
        elif word in ("COPY", "ADD"):
            if "--from" in args:
                raise DockerfileNotUnderstood(f"Step {n} ({word} {args}) needs {NEEDS_ENGINE}")
        elif word == "RUN":
            if not _understood_run(_run_command(args)):
                raise DockerfileNotUnderstood(
                    f"Step {n} (RUN {_run_command(args)}) runs a command of its own, which "
                    f"needs {NEEDS_ENGINE}"
                )
        else:
            raise DockerfileNotUnderstood(f"Step {n} ({word} {args}) needs {NEEDS_ENGINE}")
    if not base:
        raise DockerfileNotUnderstood("The Dockerfile has no FROM")
    return FolderPlan(base=base, steps=log)
