"""The results file: machine, versions, plan, the table."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import psutil

from bench.stats import Results

PACKAGES = ("pipecat-ai", "pipecatcloud", "fastapi", "uvicorn", "httpx", "onnxruntime")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cattery_version() -> str:
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> list[str]:
    found = [f"cattery {cattery_version()}", f"Python {platform.python_version()}"]
    for name in PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def markdown(
    table: Results,
    *,
    plan: dict,
    argv: list[str],
    elapsed: float,
    load: tuple[float, ...],
    loads_during: list[float] | None = None,
) -> str:
    cores = os.cpu_count() or 0
    memory = psutil.virtual_memory().total / 2**30
    lines = [
        f"# cattery benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {cores} cores ({cpu_model()}), {memory:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}",
        f"- versions: {', '.join(versions())}",
        f"- command: `{' '.join(['python -m bench', *argv])}`",
        f"- plan: {', '.join(f'{k}={v}' for k, v in plan.items())}",
        f"- took {elapsed:.0f} s; everything on 127.0.0.1; load average before the run "
        f"{' '.join(f'{x:.2f}' for x in load)} (other work on the machine skews the figures)",
        *([f"- {load_during(loads_during)}"] if loads_during else []),
        "",
        table.table(),
        "",
    ]
    if table.notes:
        lines += ["## Notes", "", *[f"- {note}" for note in table.notes], ""]
    return "\n".join(lines)


def load_during(samples: list[float]) -> str:
    ordered = sorted(samples)
    median = ordered[len(ordered) // 2]
    return (
        f"load average (1 min) during the run, sampled every 5 s: min {ordered[0]:.1f}, "
        f"median {median:.1f}, max {ordered[-1]:.1f} on {os.cpu_count()} cores"
    )


def write(folder: Path, text: str, kind: str | None = None) -> Path:
    """The results file of today, or of this minute when today's exists: runs never
    overwrite each other. A ``kind`` of run (``cluster``) is always named by its minute."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    if kind is not None:
        path = folder / f"{now:%Y-%m-%d-%H%M}-{kind}-{os.cpu_count()}c.md"
        path.write_text(text)
        return path
    path = folder / f"{now:%Y-%m-%d}-{os.cpu_count()}c.md"
    if path.exists():
        path = folder / f"{now:%Y-%m-%d-%H%M}-{os.cpu_count()}c.md"
    path.write_text(text)
    return path
