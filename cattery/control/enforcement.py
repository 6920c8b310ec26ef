"""An agent's resources as ``agent status`` shows them: the profile's CPU and memory, and
what enforces each where the deployment runs (the CLI prints ``resources.cpu`` and
``resources.memory``; ``resources.enforcement`` has the same in fields)."""

from __future__ import annotations

from typing import Any

from cattery.backends.profiles import DEFAULT_PROFILE, PROFILES
from cattery.control.images import is_folder_image
from cattery.control.state import ControlState

ENFORCERS = {
    "cgroup2": "cgroup v2",
    "rlimit_as": "RLIMIT_AS",
    "none": "not limited on this machine",
    "container": "container limits",
}


def enforcement(state: ControlState, image: str) -> dict[str, Any]:
    """How instances of ``image`` are limited and walled in, in ``WallsReport``'s words."""
    if not is_folder_image(image) or state.settings.backend == "container":
        return {"processes": "container", "memory": "container", "cpu": "container"}
    walls = state.backend.walls
    if walls is None:
        return {"processes": "none", "memory": "none", "cpu": "none", "tenantUsers": False}
    return walls.report.as_dict()


def enforced_resources(state: ControlState, dep: Any) -> dict[str, Any]:
    """The deployment's resources as given, each with what enforces it here."""
    given = dep.resources
    if not given:
        limits = PROFILES.get(dep.agent_profile, PROFILES[DEFAULT_PROFILE])
        given = {"cpu": f"{limits.cpus:g}", "memory": f"{limits.memory_bytes // 2**20}Mi"}
    how = enforcement(state, dep.image)
    return {
        "cpu": f"{given['cpu']} ({ENFORCERS[how['cpu']]})",
        "memory": f"{given['memory']} ({ENFORCERS[how['memory']]})",
        "enforcement": how,
    }
