"""Build cattery-base for the Python versions in images/base/versions.yaml.

    python images/build.py                      # the default version, tagged :latest too
    python images/build.py --python 3.13        # one version
    python images/build.py --all                # every version
    python images/build.py --base IMAGE         # any Debian-based image with python3-venv
    python images/build.py --ca-bundle FILE     # trust a TLS-intercepting proxy in the build

Tags: ``cattery-base:<version>-py<python>`` and, for the default, ``cattery-base:latest``.
Works with ``podman`` or ``docker`` (``--engine``); the context is the repository root.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ROOT / "images" / "base" / "versions.yaml"
DOCKERFILE = ROOT / "images" / "base" / "Dockerfile"


def cattery_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def build(
    engine: str,
    python: str,
    *,
    repository: str,
    base: str | None,
    ca_bundle: Path | None,
    latest: bool,
) -> list[str]:
    version = cattery_version()
    tags = [f"{repository}:{version}-py{python}", f"{repository}:latest-py{python}"]
    if latest:
        tags.append(f"{repository}:latest")
    cmd = [engine, "build", "-f", str(DOCKERFILE), "--build-arg", f"PYTHON_VERSION={python}"]
    cmd += ["--build-arg", f"IMAGE_VERSION={version}"]
    if base:
        cmd += ["--build-arg", f"BASE_IMAGE={base}"]
    if ca_bundle:
        cmd += ["--secret", f"id=ca-bundle,src={ca_bundle}"]
    for tag in tags:
        cmd += ["-t", tag]
    cmd.append(str(ROOT))
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return tags


def main(argv: list[str] | None = None) -> int:
    config = yaml.safe_load(VERSIONS.read_text())
    known = [str(v["python"]) for v in config["versions"]]
    default = str(config["default"])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", choices=known, help=f"default {default}")
    parser.add_argument("--all", action="store_true", help="every version in versions.yaml")
    parser.add_argument("--engine", default="podman" if shutil.which("podman") else "docker")
    parser.add_argument("--repository", default="localhost/cattery-base")
    parser.add_argument("--base", help="base image (default python:<version>-slim-bookworm)")
    parser.add_argument("--ca-bundle", type=Path, help="CA bundle trusted during the build")
    args = parser.parse_args(argv)
    pythons = known if args.all else [args.python or default]
    for python in pythons:
        tags = build(
            args.engine,
            python,
            repository=args.repository,
            base=args.base,
            ca_bundle=args.ca_bundle,
            latest=python == default,
        )
        print("built", " ".join(tags), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
