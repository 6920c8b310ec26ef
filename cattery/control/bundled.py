"""Agents named in the settings (``cattery serve --agent NAME=PATH``) are deployed at start.

They go through the same deploy path as the API; an agent already running that image is
left alone, so restarts don't pile up deployments.
"""

from __future__ import annotations

from loguru import logger

from cattery.control.api.private.services import AutoScaling, DeployRequest, deploy_agent
from cattery.control.state import ControlState
from cattery.store import repositories as repo


async def deploy_bundled_agents(state: ControlState) -> None:
    agents = state.settings.agents
    if not agents:
        return
    async with state.sessionmaker() as db:
        org = await repo.get_organization_by_name(db, state.settings.organization)
        assert org is not None, "bootstrap creates the organization"
        for name, folder in agents.items():
            image = f"{folder}:latest"
            agent = await repo.get_agent(db, org.id, name)
            if agent is not None and agent.active_deployment_id:
                current = await repo.get_deployment(db, agent.active_deployment_id)
                if current is not None and current.image == image:
                    continue
            req = DeployRequest(image=image)
            if name == state.settings.dev.agent:  # cattery dev: the first session is warm
                req.autoScaling = AutoScaling(minAgents=1)
            await deploy_agent(state, db, org, name, req, create=None)
            logger.info(f"Deployed bundled agent {name!r} from {folder}")
        await db.commit()
