"""Builds of uploaded contexts: upload grants, the cache by context hash, the background
runs and their stored logs, and the image a deploy of a build runs.

Owned by the control plane's state: every run is an owned task, cancelled on close; a
build a restart interrupted is recorded as failed when the next one starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

from loguru import logger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import Headers

from cattery.control.builds import runner
from cattery.control.builds.uploads import (
    HASH_LENGTH,
    MAX_CONTEXT_BYTES,
    Upload,
    UploadTokens,
    receive_upload,
    upload_path,
)
from cattery.errors import InvalidRequest, NotFound
from cattery.settings import Settings
from cattery.store import repositories as repo
from cattery.store.models import Build, Organization
from cattery.store.types import utcnow
from cattery.tasks import OwnedTasks

PENDING, BUILDING, SUCCESS, FAILED, TIMEOUT = "pending", "building", "success", "failed", "timeout"
STATUSES = (PENDING, BUILDING, SUCCESS, FAILED, TIMEOUT)
LOG_FLUSH_SECONDS = 0.5


class BuildNotFound(InvalidRequest):
    code = "PCC_BUILD_NOT_FOUND"


class BuildNotReady(InvalidRequest):
    code = "PCC_BUILD_NOT_READY"


class BuildService:
    def __init__(
        self, settings: Settings, maker: async_sessionmaker[AsyncSession], engine_url: str | None
    ) -> None:
        self._settings = settings
        self._maker = maker
        self._engine_url = engine_url
        self.tokens = UploadTokens()
        self.max_upload_bytes = MAX_CONTEXT_BYTES
        self._tasks = OwnedTasks("builds")
        state = settings.state_dir
        self.uploads_dir = state / "uploads"
        self.work_dir = state / "builds"
        self.agents_dir = state / "agents"

    async def start(self) -> None:
        """Builds a restart interrupted end as failed: nothing is running them now."""
        async with self._maker() as db:
            for build in await repo.list_unfinished_builds(db, (PENDING, BUILDING)):
                await repo.update_build(
                    db,
                    build,
                    status=FAILED,
                    error_message="The control plane restarted during the build: "
                    "deploy again to rebuild",
                    completed_at=utcnow(),
                )
            await db.commit()

    def upload_url(
        self, org: Organization, base_url: str, context_hash: str | None = None
    ) -> dict[str, Any]:
        if context_hash is not None and len(context_hash) != HASH_LENGTH:
            raise InvalidRequest(f"contextHash must be {HASH_LENGTH} hex digits")
        grant = self.tokens.issue(org.id, context_hash)
        return {
            "uploadId": grant.upload_id,
            "uploadUrl": f"{base_url.rstrip('/')}/v1/builds/uploads/{grant.upload_id}",
            "uploadFields": {
                "key": f"{org.name}/{grant.upload_id}.tar.gz",
                "token": grant.token,
                "Content-Type": "application/gzip",
            },
            "expiresAt": grant.expires_at.isoformat().replace("+00:00", "Z"),
        }

    async def receive(
        self, headers: Headers, stream: AsyncIterator[bytes], upload_id: str
    ) -> Upload:
        return await receive_upload(
            headers,
            stream,
            upload_id=_check_uuid(upload_id, "upload"),
            tokens=self.tokens,
            uploads_dir=self.uploads_dir,
            max_bytes=self.max_upload_bytes,
        )

    async def create(
        self,
        db: AsyncSession,
        org: Organization,
        *,
        upload_id: str,
        dockerfile_path: str,
        region: str,
    ) -> tuple[Build, bool]:
        """A build of the upload, or the successful one with the same context (cached)."""
        try:
            dockerfile = runner.check_dockerfile_path(dockerfile_path)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        archive = upload_path(self.uploads_dir, org.id, _check_uuid(upload_id, "upload"))
        if not archive.is_file() or archive.stat().st_size == 0:
            raise InvalidRequest(
                f"No upload {upload_id!r}: upload the context to the upload URL first",
                code="BUILD_UPLOAD_NOT_FOUND",
            )
        size = archive.stat().st_size
        digest = await asyncio.to_thread(_md5, archive)
        cached, _ = await repo.list_builds(
            db, org.id, context_hash=digest, status=SUCCESS, dockerfile_path=dockerfile, limit=1
        )
        if cached and _image_exists(cached[0].image, self._engine_url):
            archive.write_bytes(b"")  # used: the same id can't start a second build
            return cached[0], True
        build = await repo.create_build(
            db,
            org.id,
            build_id=str(uuid.uuid4()),
            region=region,
            context_hash=digest,
            dockerfile_path=dockerfile,
            context_size_bytes=size,
            status=PENDING,
        )
        running = self.work_dir / f"{build.id}.tar.gz"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        archive.rename(running)
        archive.write_bytes(b"")
        await db.commit()
        self._tasks.spawn(
            self._run(build.id, org.name, running, dockerfile, digest),
            name=f"build-{build.id}_task",
        )
        return build, False

    async def image_for_deploy(self, db: AsyncSession, org: Organization, build_id: str) -> str:
        """What a deploy of ``build_id`` runs; a 400 with a code when it can't."""
        build = await repo.get_build(db, org.id, build_id)
        if build is None:
            raise BuildNotFound(f"Build {build_id!r} not found in organization {org.name!r}")
        if build.status != SUCCESS or not build.image:
            detail = f": {build.error_message}" if build.error_message else ""
            raise BuildNotReady(f"Build {build_id!r} is {build.status}, not success{detail}")
        if not _image_exists(build.image, self._engine_url):
            raise BuildNotReady(f"The result of build {build_id!r} is gone: build again")
        return build.image

    async def get(self, db: AsyncSession, org: Organization, build_id: str) -> Build:
        build = await repo.get_build(db, org.id, _check_uuid(build_id, "build"))
        if build is None:
            raise NotFound(f"Build {build_id!r} not found")
        return build

    async def _run(
        self, build_id: str, org_name: str, archive: Path, dockerfile: str, context_hash: str
    ) -> None:
        log = _BuildLog(self._maker, build_id)
        started = time.monotonic()
        await self._update(build_id, status=BUILDING, started_at=utcnow())
        fields: dict[str, Any]
        try:
            async with asyncio.timeout(self._settings.builds.timeout_seconds):
                result = await self._build(
                    archive, build_id, org_name, dockerfile, context_hash, log
                )
            fields = {
                "status": SUCCESS,
                "image": result.image,
                "image_size_bytes": result.size_bytes,
            }
            log.add("Build complete")
        except TimeoutError:
            message = f"The build ran over {self._settings.builds.timeout_seconds:g} s"
            log.add(f"ERROR: {message}")
            fields = {"status": TIMEOUT, "error_message": message}
        except runner.BuildError as exc:
            fields = {"status": FAILED, "error_message": str(exc)}
            log.add(f"ERROR: build failed: {exc}")
        except Exception as exc:
            logger.opt(exception=exc).error(f"Build {build_id} failed")
            fields = {"status": FAILED, "error_message": f"The build could not run: {exc}"}
            log.add(f"ERROR: the build could not run: {exc}")
        finally:
            await asyncio.to_thread(archive.unlink, missing_ok=True)
        await log.flush()
        await self._update(
            build_id,
            **fields,
            completed_at=utcnow(),
            build_duration_seconds=max(1, math.ceil(time.monotonic() - started)),
        )
        logger.info(f"Build {build_id} ended: {fields['status']}")

    async def _build(
        self,
        archive: Path,
        build_id: str,
        org_name: str,
        dockerfile: str,
        context_hash: str,
        log: _BuildLog,
    ) -> runner.BuildResult:
        loop = asyncio.get_running_loop()

        def on_line(line: str) -> None:
            loop.call_soon_threadsafe(log.add, line)

        work = self.work_dir / build_id
        if self._engine_url:
            call = lambda: runner.build_with_engine(  # noqa: E731
                archive,
                work=work,
                engine_url=self._engine_url or "",
                tag=f"cattery-builds/{org_name}:{context_hash}",
                dockerfile=dockerfile,
                stand_in=self._settings.container.pipecat_base_image,
                timeout=self._settings.builds.timeout_seconds,
                on_line=on_line,
            )
        else:
            call = lambda: runner.build_folder(  # noqa: E731
                archive,
                work=work,
                agents_dir=self.agents_dir,
                context_hash=context_hash,
                dockerfile=dockerfile,
                on_line=on_line,
            )
        job = asyncio.ensure_future(asyncio.to_thread(call))
        while not job.done():
            await asyncio.wait({job}, timeout=LOG_FLUSH_SECONDS)
            await log.flush()
        return job.result()

    async def _update(self, build_id: str, **fields: Any) -> None:
        async with self._maker() as db:
            build = await db.get(Build, build_id)
            if build is not None:
                await repo.update_build(db, build, **fields)
                await db.commit()

    async def aclose(self) -> None:
        await self._tasks.aclose()


class _BuildLog:
    """A build's output lines, written to the store in batches."""

    def __init__(self, maker: async_sessionmaker[AsyncSession], build_id: str) -> None:
        self._maker = maker
        self._build_id = build_id
        self._pending: list[tuple[datetime, str]] = []

    def add(self, line: str) -> None:
        self._pending.append((utcnow(), line))

    async def flush(self) -> None:
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        async with self._maker() as db:
            await repo.append_build_log_lines(db, self._build_id, lines)
            await db.commit()


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()[:HASH_LENGTH]


def _check_uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidRequest(f"Invalid {what} id {value!r}") from None


def _image_exists(image: str | None, engine_url: str | None) -> bool:
    """A folder build's folder must still be there; an engine's image is checked at deploy."""
    if not image:
        return False
    if image.startswith("/"):
        return Path(image).is_dir()
    return True
