"""deploy/kubernetes/ holds together: every YAML document parses, the kustomization lists
every file, and the names, ports, Secrets, env vars and region labels that one document
takes from another all exist there and are what cattery's settings accept."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from cattery.contract import REGION_LABEL
from cattery.settings import Settings, setting_names

KUBE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
NAMESPACE = "cattery"


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(KUBE.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def the(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in documents() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload["spec"]["template"]["spec"]["containers"]


def port(container: dict[str, Any], name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def secret_value(name: str, key: str) -> str:
    return the("Secret", name)["stringData"][key]


def env_values(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the process sees it, Secrets' values filled in."""
    values = {}
    for item in container.get("env", []):
        if "value" in item:
            values[item["name"]] = item["value"]
        elif "fieldRef" in item["valueFrom"]:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", item
            values[item["name"]] = "10.0.0.7"  # the Pod's address
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            values[item["name"]] = secret_value(ref["name"], ref["key"])
    return values


def control_container() -> dict[str, Any]:
    return containers(the("Deployment", "cattery-control"))[0]


def ray_containers() -> list[dict[str, Any]]:
    spec = the("RayCluster")["spec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


@pytest.fixture
def control_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """The settings the control plane's Pod gets from its environment."""
    monkeypatch.chdir(tmp_path)  # no cattery.toml of this checkout's
    for name in [n for n in os.environ if n.startswith("CATTERY_")]:
        monkeypatch.delenv(name)
    for name, value in env_values(control_container()).items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_every_document_parses_and_is_listed() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert kustomization["namespace"] == NAMESPACE
    for doc in documents():
        if doc["kind"] == "Kustomization":
            continue
        assert doc["apiVersion"] and doc["metadata"]["name"], doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
    assert the("Namespace")["metadata"]["name"] == NAMESPACE


def test_secrets_referenced_exist_with_their_keys() -> None:
    for doc in documents():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for container in containers(doc):
                env_values(container)  # raises on a missing Secret or key
    auth = the("RayCluster")["spec"]["authOptions"]
    assert auth["mode"] == "token"
    assert secret_value(auth["secretName"], "auth_token")


def test_the_control_plane_env_is_cattery_settings(control_settings: Settings) -> None:
    env = env_values(control_container())
    known = set(setting_names())
    assert {n for n in env if n.startswith("CATTERY_")} <= known
    assert control_settings.port == port(control_container(), "http")
    assert control_settings.host == "0.0.0.0"
    assert control_settings.default_region in control_settings.regions
    ray_token = control_settings.ray.auth_token
    assert ray_token is not None
    assert ray_token.get_secret_value() == env["RAY_AUTH_TOKEN"]
    assert env["RAY_AUTH_MODE"] == "token"
    secret = the("RayCluster")["spec"]["authOptions"]["secretName"]
    assert ray_token.get_secret_value() == secret_value(secret, "auth_token")


def test_the_ray_addresses_are_the_head_service(control_settings: Settings) -> None:
    cluster = the("RayCluster")
    head_service = f"{cluster['metadata']['name']}-head-svc"  # KubeRay's name for it
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    gcs = (head_service, port(head, "gcs-server"))
    for address in (control_settings.ray.address, control_settings.ray.join_address):
        parts = urlsplit("//" + (address or ""))
        assert (parts.hostname, parts.port) == gcs
    # the driver runs on a Ray node of its own, one that takes no instances
    assert control_settings.ray.node_ip == "10.0.0.7"
    script = " ".join(control_container()["args"])
    assert script.startswith("ray start --address=") and "--num-cpus=0" in script
    assert script.endswith("exec cattery serve")


def test_worker_groups_are_the_regions(control_settings: Settings) -> None:
    groups = the("RayCluster")["spec"]["workerGroupSpecs"]
    labelled = [g["labels"][REGION_LABEL] for g in groups]
    assert sorted(labelled) == sorted(control_settings.regions)
    for group in groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_one_image_and_ray_version_everywhere() -> None:
    images = {c["image"] for c in ray_containers()} | {control_container()["image"]}
    assert len(images) == 1, images
    version = the("RayCluster")["spec"]["rayVersion"]
    requirement = Path(KUBE.parents[1] / "pyproject.toml").read_text()
    major_minor = ".".join(version.split(".")[:2])
    assert f"ray>={major_minor}" in requirement


def test_the_services_reach_their_pods(control_settings: Settings) -> None:
    service = the("Service", "cattery")
    deployment = the("Deployment", "cattery-control")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    assert service["spec"]["selector"] == labels
    target = service["spec"]["ports"][0]["targetPort"]
    assert port(control_container(), target) == control_settings.port

    database = urlsplit(control_settings.database_url or "")
    postgres = the("Service", database.hostname)
    assert database.port == postgres["spec"]["ports"][0]["port"]
    statefulset = the("StatefulSet", database.hostname)
    pg_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert postgres["spec"]["selector"] == pg_labels
    pg_env = env_values(containers(statefulset)[0])
    assert database.username == pg_env["POSTGRES_USER"]
    assert database.password == pg_env["POSTGRES_PASSWORD"]
    assert database.path.lstrip("/") == pg_env["POSTGRES_DB"]
    assert control_settings.database_url.startswith("postgresql+asyncpg://")


def test_the_probe_path_is_served(control_settings: Settings) -> None:
    from cattery.control.app import create_app

    paths = {getattr(r, "path", None) for r in create_app(control_settings).routes}
    probe = control_container()["readinessProbe"]["httpGet"]
    assert probe["path"] in paths
    assert port(control_container(), probe["port"]) == control_settings.port
