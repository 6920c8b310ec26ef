"""``cattery node join``: a new machine trades a region's one-time enroll token for the
cluster's join details at the control plane, then joins Ray as a node of that region.

The Ray token travels in the environment of ``ray start`` only (never its arguments, which
other users of the machine can read).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cattery.contract import CLUSTER_JOIN_PATH, REGION_LABEL


class JoinRefused(Exception):
    """The control plane would not give the join details; the message says why."""


@dataclass(frozen=True)
class JoinDetails:
    ray_address: str
    region: str
    ray_auth_token: str | None = field(default=None, repr=False)


def fetch_join_details(control_url: str, token: str, *, timeout: float = 30.0) -> JoinDetails:
    """Spend ``token`` at the control plane for the cluster's address, token and region."""
    url = control_url.rstrip("/") + CLUSTER_JOIN_PATH
    try:
        resp = httpx.post(url, json={"token": token}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise JoinRefused(f"Could not reach the control plane at {control_url}: {exc}") from exc
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code != 200:
        reason = body.get("error") or resp.text[:200] or resp.reason_phrase
        raise JoinRefused(f"The control plane refused the token ({resp.status_code}): {reason}")
    return JoinDetails(
        ray_address=body["rayAddress"],
        region=body["region"],
        ray_auth_token=body.get("rayAuthToken"),
    )


def ray_executable() -> str:
    """The ``ray`` beside this interpreter (the same install), else the one on PATH."""
    beside = Path(sys.executable).with_name("ray")
    if beside.exists():
        return str(beside)
    found = shutil.which("ray")
    if found is None:
        raise JoinRefused("Ray is not installed here: pip install 'cattery[cluster]'")
    return found


def ray_start_command(
    details: JoinDetails, extra: Sequence[str] = (), ray: str = "ray"
) -> list[str]:
    """``ray start`` joining the cluster with the region's label; ``extra`` passed on."""
    return [
        ray,
        "start",
        "--address",
        details.ray_address,
        "--labels",
        f"{REGION_LABEL}={details.region}",
        *extra,
    ]


def ray_start_env(details: JoinDetails, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment ``ray start`` runs in: token auth when the cluster has a token."""
    env = dict(os.environ if base is None else base)
    if details.ray_auth_token:
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN"] = details.ray_auth_token
    return env
