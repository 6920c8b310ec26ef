"""The deployer on the in-memory backend: a deployment is ready once an instance started."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cattery.control.deployer import DEPLOY_FAILED, Deployer, DeployPlan
from cattery.pools import PoolManager
from cattery.settings import Settings
from tests.support.fake_backend import FakeBackend


@pytest.fixture
def bot_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "bot"
    folder.mkdir()
    (folder / "bot.py").write_text("async def bot(runner_args):\n    pass\n")
    return folder


@pytest.fixture
async def deployer(tmp_path: Path) -> AsyncIterator[tuple[Deployer, FakeBackend, PoolManager]]:
    backend = FakeBackend()
    pools = PoolManager(backend)  # type: ignore[arg-type]
    settings = Settings(state_dir=tmp_path / "state", agent_roots=str(tmp_path))
    deployer = Deployer(settings, pools)
    yield deployer, backend, pools
    await deployer.aclose()
    await pools.aclose()
    assert not backend.open, "instances left open"


def plan(folder: Path, deployment_id: str, *, min_agents: int = 0) -> DeployPlan:
    return DeployPlan(
        agent_key="org/agent",
        deployment_id=deployment_id,
        image=str(folder),
        min_agents=min_agents,
        max_agents=2,
        profile="agent-1x",
        secrets={},
    )


async def test_a_deployment_is_ready_once_its_probe_started(deployer, bot_folder) -> None:
    deploy, backend, _ = deployer
    deploy.activate(plan(bot_folder, "d1"))

    status = await deploy.wait("d1")

    assert status.ready and not status.errors
    assert len(backend.handles) == 1 and not backend.open  # minAgents 0: the probe is gone


async def test_the_probe_is_the_first_warm_instance(deployer, bot_folder) -> None:
    deploy, backend, pools = deployer
    deploy.activate(plan(bot_folder, "d1", min_agents=1))

    assert (await deploy.wait("d1")).ready
    pool = pools.get("org/agent")
    assert pool is not None and pool.stats().idle == 1
    assert len(backend.handles) == 1  # no second instance started for the warm target


async def test_a_failed_probe_fails_the_deploy_and_the_previous_one_serves(
    deployer, bot_folder
) -> None:
    deploy, backend, pools = deployer
    deploy.activate(plan(bot_folder, "d1", min_agents=1))
    assert (await deploy.wait("d1")).ready

    backend.fail_starts = True
    deploy.activate(plan(bot_folder, "d2", min_agents=1))
    status = await deploy.wait("d2")

    assert not status.ready
    assert status.errors[0]["code"] == DEPLOY_FAILED, status.errors
    assert "failed on purpose" in status.errors[0]["message"]
    pool = pools.get("org/agent")
    assert pool is not None and pool.spec.deployment_id == "d1"
    assert pool.stats().idle == 1
