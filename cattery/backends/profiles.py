"""Agent profiles: the CPU and memory an instance may use (containers enforce them)."""

from __future__ import annotations

from dataclasses import dataclass

from cattery.errors import InvalidRequest

GIB = 1024**3


@dataclass(frozen=True)
class Limits:
    cpus: float
    memory_bytes: int

    @property
    def nano_cpus(self) -> int:
        return int(self.cpus * 1e9)


DEFAULT_PROFILE = "agent-1x"
PROFILES: dict[str, Limits] = {
    "agent-1x": Limits(cpus=0.5, memory_bytes=1 * GIB),
    "agent-2x": Limits(cpus=1.0, memory_bytes=2 * GIB),
    "agent-3x": Limits(cpus=1.5, memory_bytes=3 * GIB),
}


def limits_for(profile: str) -> Limits:
    try:
        return PROFILES[profile]
    except KeyError:
        known = ", ".join(PROFILES)
        raise InvalidRequest(f"Unknown agentProfile {profile!r}; use one of {known}") from None
