"""What a restarted control plane needs to reattach an instance an earlier one started."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cattery.backends.base import InstanceSpec


@dataclass(frozen=True)
class AdoptRecord:
    """A running instance, identified by pid *and* process start time (pids get reused)."""

    instance_id: str
    pid: int
    port: int
    token: str = field(repr=False)
    log_path: Path
    log_offset: int
    spec: InstanceSpec
    create_time: float
    #: the instance's cgroup (a folder of the v2 hierarchy), when it has one
    cgroup: str | None = None

    def to_dict(self, *, include_env: bool = False) -> dict[str, Any]:
        """A JSON-ready form. The spec's env (secrets) is left out unless asked for:
        a running instance does not need it to be adopted."""
        spec = asdict(self.spec)
        spec["env"] = dict(self.spec.env) if include_env else {}
        spec["python"] = str(self.spec.python) if self.spec.python else None
        return {
            "instance_id": self.instance_id,
            "pid": self.pid,
            "port": self.port,
            "token": self.token,
            "log_path": str(self.log_path),
            "log_offset": self.log_offset,
            "spec": spec,
            "create_time": self.create_time,
            "cgroup": self.cgroup,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdoptRecord:
        spec = dict(data["spec"])
        spec["python"] = Path(spec["python"]) if spec.get("python") else None
        spec["env"] = dict(spec.get("env") or {})
        return cls(
            instance_id=data["instance_id"],
            pid=int(data["pid"]),
            port=int(data["port"]),
            token=data["token"],
            log_path=Path(data["log_path"]),
            log_offset=int(data["log_offset"]),
            spec=InstanceSpec(**spec),
            create_time=float(data["create_time"]),
            cgroup=data.get("cgroup"),
        )
