"""Agent profiles: the built-in catalog plus an organization's own, and what a deploy's
``agentProfile`` or ``resources`` resolve to.

A deployment keeps the resources it resolved (``Deployment.resources``): editing or
disabling a profile changes later deploys only, as on Pipecat Cloud.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cattery.backends.profiles import BUILT_IN, DEFAULT_PROFILE, Resources, check_resources
from cattery.control.validation import check_name
from cattery.errors import Conflict, InvalidRequest, NotFound
from cattery.store import repositories as repo
from cattery.store.models import AgentProfile, Organization

#: the ``agentProfile`` a deployment with its own ``resources`` records
CUSTOM_RESOURCES = "custom"


def _built_in_item(name: str) -> dict[str, Any]:
    display, resources = BUILT_IN[name]
    return {
        "api_name": name,
        "display_name": display,
        "resources": resources.as_dict(),
        "custom": False,
        "enabled": True,
    }


def profile_item(profile: AgentProfile) -> dict[str, Any]:
    return {
        "api_name": profile.name,
        "display_name": profile.display_name,
        "resources": {"cpu": profile.cpu, "memory": profile.memory},
        "custom": True,
        "enabled": profile.enabled,
    }


async def list_profiles(db: AsyncSession, org: Organization) -> list[dict[str, Any]]:
    own = await repo.list_agent_profiles(db, org.id)
    return [_built_in_item(name) for name in BUILT_IN] + [profile_item(p) for p in own]


async def create_profile(
    db: AsyncSession, org: Organization, *, name: str, display_name: str | None, resources: Any
) -> dict[str, Any]:
    check_name("agent profile name", name)
    checked = _resources(resources)
    if name in BUILT_IN or name == CUSTOM_RESOURCES:
        raise Conflict(f"{name!r} is a built-in profile: choose another name")
    if await repo.get_agent_profile(db, org.id, name) is not None:
        raise Conflict(f"Agent profile {name!r} already exists (disabled ones can be enabled)")
    profile = await repo.create_agent_profile(
        db,
        org.id,
        name=name,
        display_name=display_name or name,
        cpu=checked.cpu,
        memory=checked.memory,
    )
    return profile_item(profile)


async def update_profile(
    db: AsyncSession,
    org: Organization,
    name: str,
    *,
    display_name: str | None = None,
    resources: Any = None,
    enabled: bool | None = None,
) -> dict[str, Any]:
    if name in BUILT_IN:
        raise InvalidRequest(
            f"{name!r} is a built-in profile and can't be changed: create your own instead",
            code="BUILT_IN_PROFILE",
        )
    profile = await repo.get_agent_profile(db, org.id, name)
    if profile is None:
        raise NotFound(f"Agent profile {name!r} not found")
    fields: dict[str, Any] = {}
    if display_name is not None:
        fields["display_name"] = display_name
    if resources is not None:
        checked = _resources(resources)
        fields.update(cpu=checked.cpu, memory=checked.memory)
    if enabled is not None:
        fields["enabled"] = enabled
    await repo.update_agent_profile(db, profile, **fields)
    return profile_item(profile)


async def resolve(
    db: AsyncSession, org: Organization, profile: str | None, resources: Any
) -> tuple[str, Resources]:
    """The ``agentProfile`` to record and the resources a deploy runs with."""
    if resources is not None:
        if profile:
            raise InvalidRequest("Give agentProfile or resources, not both")
        return CUSTOM_RESOURCES, _resources(resources)
    name = profile or DEFAULT_PROFILE
    if name in BUILT_IN:
        return name, BUILT_IN[name][1]
    own = await repo.get_agent_profile(db, org.id, name)
    if own is None:
        known = ", ".join(
            [*BUILT_IN, *(p.name for p in await repo.list_agent_profiles(db, org.id))]
        )
        raise InvalidRequest(f"Unknown agentProfile {name!r}; use one of {known}")
    if not own.enabled:
        raise InvalidRequest(
            f"Agent profile {name!r} is disabled: enable it with "
            f"`pipecat cloud agent profiles enable {name}`, or choose another"
        )
    return name, Resources(cpu=own.cpu, memory=own.memory)


def stored_resources(value: Any, profile: str) -> Resources:
    """What a deployment runs with: its snapshot, else (older rows) its built-in profile's."""
    if isinstance(value, dict) and "cpu" in value and "memory" in value:
        return Resources(cpu=str(value["cpu"]), memory=str(value["memory"]))
    return BUILT_IN.get(profile, BUILT_IN[DEFAULT_PROFILE])[1]


def _resources(value: Any) -> Resources:
    if not isinstance(value, dict) or not value.get("cpu") or not value.get("memory"):
        raise InvalidRequest('resources must be {"cpu": "500m", "memory": "1Gi"}: both are needed')
    return check_resources(str(value["cpu"]), str(value["memory"]))


async def for_deploy(
    db: AsyncSession, org: Organization, profile: str | None, resources: Any, previous: Any
) -> tuple[str, Resources]:
    """A deploy's profile and resources: those it names, else its previous deployment's."""
    if profile or resources is not None or previous is None:
        return await resolve(db, org, profile, resources)
    return previous.agent_profile, stored_resources(previous.resources, previous.agent_profile)
