"""The build upload URL and what it refuses, and a build of an uploaded context, on the
control plane in-process."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cattery.control.builds.uploads import UploadTokens
from cattery.control.state import ControlState
from tests.support.control import ORG, refused
from tests.support.inprocess import admin_client, running_app, settings_for
from tests.support.waiting import async_wait_for

DOCKERFILE = b"FROM dailyco/pipecat-base:latest\nCOPY ./bot.py bot.py\n"
BOT = b"async def bot(runner_args):\n    pass\n"


def tarball(*members: tarfile.TarInfo | tuple[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def project() -> bytes:
    return tarball(("Dockerfile", DOCKERFILE), ("bot.py", BOT))


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def files_outside_uploads(root: Path) -> list[Path]:
    """Everything under ``root`` but the uploads folder (``root`` itself if it's a file)."""
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if "uploads" not in p.parts)


@dataclass
class InProcess:
    state: ControlState
    client: httpx.AsyncClient

    def org_url(self, path: str) -> str:
        return f"/v1/organizations/{ORG}{path}"


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[InProcess]:
    async with (
        running_app(settings_for(tmp_path / "state")) as app,
        admin_client(app, timeout=30) as client,
    ):
        yield InProcess(app.state.control, client)


async def grant(cp: InProcess, **body: str) -> dict:
    resp = await cp.client.post(cp.org_url("/builds/upload-url"), json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def upload(cp: InProcess, granted: dict, data: bytes, **fields: str):
    form = {**granted["uploadFields"], **fields}
    return await cp.client.post(
        granted["uploadUrl"],
        data=form,
        files={"file": ("context.tar.gz", data, "application/gzip")},
        headers={"Authorization": ""},
    )


async def test_an_upload_builds_once_and_its_hash_is_the_cache_key(cp: InProcess) -> None:
    data = project()
    granted = await grant(cp)
    assert granted["uploadUrl"].startswith("http://cattery.test/")
    assert (await upload(cp, granted, data)).status_code == 204
    created = await cp.client.post(cp.org_url("/builds"), json={"uploadId": granted["uploadId"]})
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["cached"] is False
    assert body["contextHash"] == hashlib.md5(data).hexdigest()[:16]
    build_id = body["build"]["id"]

    async def done() -> dict | None:
        build = (await cp.client.get(cp.org_url(f"/builds/{build_id}"))).json()["build"]
        return build if build["status"] not in ("pending", "building") else None

    build = await async_wait_for(done, timeout=30, what="the build")
    assert build["status"] == "success", build
    assert build["imageSizeBytes"] == len(DOCKERFILE) + len(BOT)
    logs = (await cp.client.get(cp.org_url(f"/builds/{build_id}/logs"))).json()["logs"]
    assert "Build complete" in logs

    found = await cp.client.get(
        cp.org_url("/builds"), params={"contextHash": body["contextHash"], "status": "success"}
    )
    assert [b["id"] for b in found.json()["builds"]] == [build_id]

    again = await grant(cp)
    assert (await upload(cp, again, data)).status_code == 204
    cached = await cp.client.post(cp.org_url("/builds"), json={"uploadId": again["uploadId"]})
    assert cached.json()["cached"] is True and cached.json()["build"]["id"] == build_id


async def test_the_upload_token_is_required_single_use_and_expiring(cp: InProcess) -> None:
    granted = await grant(cp)
    no_token = {k: v for k, v in granted["uploadFields"].items() if k != "token"}
    resp = await cp.client.post(
        granted["uploadUrl"], data=no_token, files={"file": ("c.tar.gz", project())}
    )
    refused(resp, 403, "BUILD_UPLOAD_TOKEN_INVALID")
    refused(await upload(cp, granted, project(), token="forged"), 403, "BUILD_UPLOAD_TOKEN_INVALID")
    other = await grant(cp)
    refused(await upload(cp, granted, project(), token=other["uploadFields"]["token"]), 403)

    assert (await upload(cp, granted, project())).status_code == 204
    refused(await upload(cp, granted, project()), 403, "BUILD_UPLOAD_TOKEN_INVALID")

    cp.state.builds.tokens = UploadTokens(ttl=-1)  # every token it issues is already over
    expired = await grant(cp)
    body = refused(await upload(cp, expired, project()), 403, "BUILD_UPLOAD_TOKEN_INVALID")
    assert "expired" in body["error"]


async def test_an_upload_over_the_cap_is_refused(cp: InProcess) -> None:
    cp.state.builds.max_upload_bytes = 4096
    granted = await grant(cp)
    big = tarball(("Dockerfile", DOCKERFILE), ("blob", bytes(range(256)) * 64))
    refused(await upload(cp, granted, big + b"\0" * 8192), 413, "PAYLOAD_TOO_LARGE")
    unpacked = tarball(("Dockerfile", DOCKERFILE), ("zeros", b"\0" * 100_000))
    assert len(unpacked) < 4096
    refused(await upload(cp, await grant(cp), unpacked), 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(
    "member",
    [
        ("../escaped", b"x"),
        ("/tmp/absolute-from-upload", b"x"),
        link("passwd", "/etc/passwd"),
        link("up", "../../outside"),
        link("hard", "../outside", tarfile.LNKTYPE),
    ],
    ids=["dotdot", "absolute", "symlink-absolute", "symlink-up", "hardlink-up"],
)
async def test_an_archive_reaching_outside_its_folder_is_refused(
    cp: InProcess, tmp_path: Path, member: tarfile.TarInfo | tuple[str, bytes]
) -> None:
    before = files_outside_uploads(tmp_path)
    granted = await grant(cp)
    data = tarball(("Dockerfile", DOCKERFILE), ("bot.py", BOT), member)
    refused(await upload(cp, granted, data), 400, "BUILD_CONTEXT_UNSAFE")
    assert files_outside_uploads(tmp_path) == before
    assert not files_outside_uploads(Path("/tmp/absolute-from-upload"))
    resp = await cp.client.post(cp.org_url("/builds"), json={"uploadId": granted["uploadId"]})
    refused(resp, 400, "BUILD_UPLOAD_NOT_FOUND")


async def test_a_context_whose_hash_differs_is_refused(cp: InProcess) -> None:
    granted = await grant(cp, contextHash="0123456789abcdef")
    refused(await upload(cp, granted, project()), 400, "BUILD_CONTEXT_HASH_MISMATCH")
    plain = await grant(cp)
    resp = await upload(cp, plain, project(), contextHash="fedcba9876543210")
    refused(resp, 400, "BUILD_CONTEXT_HASH_MISMATCH")
    refused(await upload(cp, await grant(cp), b"not a tarball"), 400, "BUILD_CONTEXT_INVALID")


async def test_builds_and_deploys_of_unknown_builds_answer_with_codes(cp: InProcess) -> None:
    refused(await cp.client.get(cp.org_url("/builds/not-a-uuid")), 400)
    refused(await cp.client.get(cp.org_url("/builds/0e7d5f44-0d1a-4b89-9d4c-3f1a2b3c4d5e")), 404)
    refused(await cp.client.get(cp.org_url("/builds"), params={"status": "bogus"}), 400)
    resp = await cp.client.post(
        cp.org_url("/services"),
        json={"serviceName": "ghost", "buildId": "0e7d5f44-0d1a-4b89-9d4c-3f1a2b3c4d5e"},
    )
    refused(resp, 400, "PCC_BUILD_NOT_FOUND")
    assert (await cp.client.get(cp.org_url("/services/ghost"))).status_code == 404
