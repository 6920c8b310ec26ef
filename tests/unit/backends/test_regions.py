"""A node's region: its label, else the default region; a region without nodes is a clear
503."""

from __future__ import annotations

from cattery.backends.regions import NoNodeInRegion, node_region


def test_a_node_is_in_its_labelled_region_else_the_default_one() -> None:
    assert node_region({"cattery-region": "eu-lab", "ray.io/node-id": "x"}, "local") == "eu-lab"
    assert node_region({"ray.io/node-id": "x"}, "local") == "local"
    assert node_region(None, "local") == "local"
    assert node_region({"cattery-region": ""}, "local") == "local"


def test_a_region_without_nodes_is_a_clear_503() -> None:
    refused = NoNodeInRegion("ap-lab")
    assert refused.status_code == 503
    assert refused.to_body()["code"] == "REGION_HAS_NO_NODES"
    assert "ap-lab" in refused.message and "enroll-token" in refused.message
