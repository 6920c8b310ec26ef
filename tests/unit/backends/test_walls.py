"""The walls' logic without processes: the instance environment's allow-list, tenants'
uids, who may run bots where tenants can't have users, and what a private view covers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cattery.backends.local.environment import build_env
from cattery.backends.walls.policy import SharedTenancyRefused, Walls, blocked_ancestor
from cattery.backends.walls.tenants import TenantIds

SERVER_ENV = {
    "PATH": "/usr/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "DAILY_API_KEY": "operator-key",
    "AWS_SECRET_ACCESS_KEY": "cloud-key",
    "CATTERY_DATABASE_URL": "postgresql://u:pw@db/cattery",
    "CATTERY_INSTANCE_TOKEN": "stale",
    "PIPECAT_LOG_LEVEL": "INFO",
    "ICE_CONFIG_URL": "http://ice.example/config",
    "PCC_LOG_FEATURES_SUMMARY": "true",
    "SSL_CERT_FILE": "/etc/ssl/cert.pem",
}


def test_an_instance_gets_the_allow_list_the_agents_env_and_its_own() -> None:
    env = build_env(
        {"OPENAI_API_KEY": "agent-key", "PIPECAT_LOG_LEVEL": "DEBUG"},
        token="tok",
        home="/state/homes/7",
        base=SERVER_ENV,
        extra={"CATTERY_MEMORY_LIMIT_BYTES": "1024"},
    )
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/state/homes/7",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PIPECAT_LOG_LEVEL": "DEBUG",
        "ICE_CONFIG_URL": "http://ice.example/config",
        "PCC_LOG_FEATURES_SUMMARY": "true",
        "SSL_CERT_FILE": "/etc/ssl/cert.pem",
        "OPENAI_API_KEY": "agent-key",
        "PYTHONUNBUFFERED": "1",
        "CATTERY_MEMORY_LIMIT_BYTES": "1024",
        "CATTERY_INSTANCE_TOKEN": "tok",
    }


def test_a_forking_parent_gets_no_token_and_the_servers_home_without_tenants() -> None:
    env = build_env({}, token=None, base=SERVER_ENV)
    assert "CATTERY_INSTANCE_TOKEN" not in env and env["HOME"] == "/root"
    assert "DAILY_API_KEY" not in env and "AWS_SECRET_ACCESS_KEY" not in env


def test_organizations_keep_their_uids(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a tenant's home is given to its uid (chown)")
    ids = TenantIds(tmp_path, base=5_000_000, count=10)
    acme, other = ids.tenant("acme"), ids.tenant("other")
    assert (acme.uid, other.uid) == (5_000_000, 5_000_001)
    assert acme.home.stat().st_uid == acme.uid and acme.home.stat().st_mode & 0o777 == 0o700
    again = TenantIds(tmp_path, base=5_000_000, count=10)
    assert again.tenant("other").uid == 5_000_001 and again.tenant("new").uid == 5_000_002
    assert (tmp_path / "tenants.json").stat().st_mode & 0o777 == 0o600


def test_without_tenant_users_one_organization_runs_bots(tmp_path: Path) -> None:
    walls = Walls(tmp_path, tenants=None, tree=None, reason="cattery is not running as root")
    assert walls.report.as_dict() == {
        "tenantUsers": False,
        "processes": "subreaper",
        "memory": "rlimit_as",
        "cpu": "none",
    }
    assert walls.tenant("default") is None and walls.tenant("default") is None
    with pytest.raises(SharedTenancyRefused) as refused:
        walls.tenant("acme")
    assert refused.value.code == "SHARED_TENANCY_REFUSED"
    assert "CATTERY_ALLOW_SHARED_TENANCY=1" in refused.value.message
    shared = Walls(tmp_path, tenants=None, tree=None, allow_shared=True)
    assert shared.tenant("default") is None and shared.tenant("acme") is None


def test_a_folder_a_tenant_cant_cross_is_found(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    inner = closed / "inner"
    inner.mkdir(parents=True)
    closed.chmod(0o700)
    tmp_path.chmod(0o755)
    uid = 5_000_123 if os.geteuid() == 0 else os.geteuid() + 1
    assert blocked_ancestor(inner / "bot.py", uid, uid) == closed
    closed.chmod(0o711)
    assert blocked_ancestor(inner / "bot.py", uid, uid) in (None, *tmp_path.parents)
