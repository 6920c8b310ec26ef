"""A deployment's region keeps its instances on that region's nodes: labelled ones, and
for the default region the unlabelled ones too."""

from __future__ import annotations

import pytest

from cattery.backends.regions import NoNodeInRegion, node_region, nodes_in_region

NODES = [
    {"NodeID": "head", "Labels": {"ray.io/node-id": "head"}},
    {"NodeID": "eu-1", "Labels": {"cattery-region": "eu-lab"}},
    {"NodeID": "eu-2", "Labels": {"cattery-region": "eu-lab"}},
    {"NodeID": "us-1", "Labels": {"cattery-region": "us-lab"}},
]


def ids(region: str | None) -> list[str]:
    fit = nodes_in_region(NODES, region, "local", lambda n: n["Labels"])
    return [n["NodeID"] for n in fit]


def test_a_region_places_on_its_labelled_nodes_only() -> None:
    assert ids("eu-lab") == ["eu-1", "eu-2"]
    assert ids("us-lab") == ["us-1"]


def test_unlabelled_nodes_are_the_default_region() -> None:
    assert ids("local") == ["head"]
    assert node_region(None, "local") == "local"
    assert node_region({"cattery-region": ""}, "local") == "local"


def test_no_region_runs_anywhere() -> None:
    assert ids(None) == ["head", "eu-1", "eu-2", "us-1"]


def test_a_region_without_nodes_is_a_clear_503() -> None:
    with pytest.raises(NoNodeInRegion) as caught:
        ids("ap-lab")
    assert caught.value.status_code == 503
    assert caught.value.to_body()["code"] == "REGION_HAS_NO_NODES"
    assert "ap-lab" in caught.value.message and "enroll-token" in caught.value.message
