"""``cattery node join``'s ``ray start``: the region's label, and the Ray token in the
environment only (arguments are readable by every user of the machine)."""

from __future__ import annotations

from cattery.node import JoinDetails, ray_start_command, ray_start_env


def test_ray_start_joins_with_the_region_label_and_passes_extra_options() -> None:
    details = JoinDetails("10.0.0.5:6379", "eu-lab", "secret-ray-token")
    command = ray_start_command(details, ["--node-ip-address", "10.0.0.6"], ray="/opt/ray")
    assert command == [
        "/opt/ray",
        "start",
        "--address",
        "10.0.0.5:6379",
        "--labels",
        "cattery-region=eu-lab",
        "--node-ip-address",
        "10.0.0.6",
    ]
    assert not any("secret-ray-token" in part for part in command)
    env = ray_start_env(details, {"PATH": "/usr/bin"})
    assert env == {
        "PATH": "/usr/bin",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": "secret-ray-token",
    }
    assert "secret-ray-token" not in repr(details)


def test_a_cluster_without_a_token_gets_no_auth_mode() -> None:
    env = ray_start_env(JoinDetails("10.0.0.5:6379", "local"), {"PATH": "/usr/bin"})
    assert env == {"PATH": "/usr/bin"}
