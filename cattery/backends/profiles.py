"""Agent profiles: the CPU and memory an instance may use.

A profile's resources are Kubernetes quantities, as Pipecat Cloud's API takes them
(``cpu: "500m"``, ``memory: "1Gi"``); ``Limits`` is what they mean, carried by every
``InstanceSpec`` so each backend enforces them its own way (containers: NanoCpus and
Memory).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cattery.errors import InvalidRequest

GIB = 1024**3
MIB = 1024**2
#: below this a Python process with Pipecat can't even start
MIN_MEMORY_BYTES = 32 * MIB

_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$")
_UNITS = {
    None: 1,
    "Ki": 1024,
    "Mi": MIB,
    "Gi": GIB,
    "Ti": 1024**4,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
}


@dataclass(frozen=True)
class Limits:
    cpus: float
    memory_bytes: int

    @property
    def nano_cpus(self) -> int:
        return int(self.cpus * 1e9)


@dataclass(frozen=True)
class Resources:
    """A profile's resources as given (quantities) and what they mean."""

    cpu: str
    memory: str

    @property
    def limits(self) -> Limits:
        return Limits(cpus=parse_cpu(self.cpu), memory_bytes=parse_memory(self.memory))

    def as_dict(self) -> dict[str, str]:
        return {"cpu": self.cpu, "memory": self.memory}


def parse_cpu(value: str) -> float:
    match = _CPU.match(str(value).strip())
    if not match or float(match.group(1)) <= 0:
        raise InvalidRequest(f"Invalid cpu quantity {value!r}: use e.g. '500m' or '2'")
    number = float(match.group(1))
    return number / 1000 if match.group(2) else number


def parse_memory(value: str) -> int:
    match = _MEMORY.match(str(value).strip())
    if not match:
        raise InvalidRequest(f"Invalid memory quantity {value!r}: use e.g. '512Mi' or '4Gi'")
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size < MIN_MEMORY_BYTES:
        raise InvalidRequest(f"Memory {value!r} is below the minimum of 32Mi")
    return size


def check_resources(cpu: str, memory: str) -> Resources:
    """``Resources`` if both quantities parse; a 400 naming the bad one otherwise."""
    resources = Resources(cpu=str(cpu).strip(), memory=str(memory).strip())
    resources.limits  # noqa: B018 (parsing is the check)
    return resources


DEFAULT_PROFILE = "agent-1x"
#: Pipecat Cloud's catalog: name -> (display name, resources)
BUILT_IN: dict[str, tuple[str, Resources]] = {
    "agent-1x": ("Agent 1x", Resources(cpu="500m", memory="1Gi")),
    "agent-2x": ("Agent 2x", Resources(cpu="1", memory="2Gi")),
    "agent-3x": ("Agent 3x", Resources(cpu="1500m", memory="3Gi")),
}
PROFILES: dict[str, Limits] = {name: res.limits for name, (_, res) in BUILT_IN.items()}


def limits_for(profile: str) -> Limits:
    """A built-in profile's limits (an organization's own are resolved by the control
    plane and reach backends as ``InstanceSpec.limits``)."""
    try:
        return PROFILES[profile]
    except KeyError:
        known = ", ".join(PROFILES)
        raise InvalidRequest(f"Unknown agentProfile {profile!r}; use one of {known}") from None
