"""The container engine, through the Docker Engine API (Docker, or podman's compatible socket).

The ``docker`` SDK is blocking: every call here runs in a worker thread. Engine failures
become the platform's errors, so a deploy says exactly what is wrong with its image.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import BinaryIO, TypeVar

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.images import Image
from loguru import logger

from cattery.backends.base import PullAuth
from cattery.errors import CatteryError, InvalidRequest, ServiceUnavailable

T = TypeVar("T")

#: the reference grammar of the distribution spec: [host[:port]/]path[:tag][@digest]
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?)"
REFERENCE = re.compile(
    rf"^(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)


class ImageNotFoundError(CatteryError):
    status_code = 400
    code = "PCC_IMAGE_NOT_FOUND"
    default_message = "Image not found"


class ImageReferenceInvalid(InvalidRequest):
    code = "PCC_IMAGE_REFERENCE_INVALID"


class ImagePullUnauthorized(CatteryError):
    status_code = 400
    code = "PCC_IMAGE_PULL_UNAUTHORIZED"
    default_message = "The registry refused the image pull secret"


class EngineUnavailable(ServiceUnavailable):
    code = "PCC_CONTAINER_ENGINE_UNAVAILABLE"


def check_reference(ref: str) -> str:
    """``ref`` if it is a well-formed image reference, else a 400 that says so."""
    if not REFERENCE.match(ref):
        raise ImageReferenceInvalid(f"{ref!r} is not a valid image reference")
    return ref


def split_reference(ref: str) -> tuple[str, str | None]:
    """Repository and tag (or digest) of a reference; ``None`` when it names neither."""
    if "@" in ref:
        repository, digest = ref.split("@", 1)
        return repository, digest
    head, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return head, tag
    return ref, None


class Engine:
    """One engine connection, shared by the container backend and deploy-time checks."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.url = url
        self._timeout = timeout
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.DockerClient(base_url=self.url, timeout=int(self._timeout))
            except DockerException as exc:
                raise EngineUnavailable(f"Container engine at {self.url}: {exc}") from exc
        return self._client

    async def call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run a blocking SDK call in a thread; an unreachable engine is a 503."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except DockerException as exc:
            if _is_connection_error(exc):
                raise EngineUnavailable(
                    f"The container engine at {self.url} is not reachable: {exc}"
                ) from exc
            raise

    async def ping(self) -> None:
        await self.call(lambda: self.client.ping())

    async def ensure_image(self, ref: str, auth: PullAuth | None = None) -> Image:
        """The image ``ref`` names, pulled (with ``auth``) if the engine lacks it."""
        check_reference(ref)
        try:
            return await self.call(lambda: self.client.images.get(ref))
        except ImageNotFound:
            pass
        except APIError as exc:
            if not _is_not_found(exc):
                raise _image_error(ref, exc) from exc
        repository, tag = split_reference(ref)
        auth_config = (
            {"username": auth.username, "password": auth.password} if auth is not None else None
        )
        logger.info(f"Pulling image {ref}")
        try:
            return await self.call(
                lambda: self.client.images.pull(repository, tag=tag, auth_config=auth_config)
            )
        except (APIError, NotFound) as exc:
            raise _image_error(ref, exc) from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _is_connection_error(exc: DockerException) -> bool:
    if isinstance(exc, APIError):
        return False
    text = str(exc).lower()
    return any(word in text for word in ("connection", "connect", "no such file", "refused"))


def _is_not_found(exc: APIError) -> bool:
    return exc.status_code == 404 or "no such image" in str(exc).lower()


def _image_error(ref: str, exc: DockerException) -> CatteryError:
    text = str(getattr(exc, "explanation", None) or exc)
    lowered = text.lower()
    if any(word in lowered for word in ("unauthorized", "authentication required", "denied")):
        return ImagePullUnauthorized(f"Pulling {ref} was refused by its registry: {text}")
    if "invalid reference" in lowered or "invalid reference format" in lowered:
        return ImageReferenceInvalid(f"{ref!r} is not a valid image reference: {text}")
    return ImageNotFoundError(f"Image {ref} was not found locally or in its registry: {text}")


def build_image(
    url: str,
    context: BinaryIO,
    *,
    tag: str,
    dockerfile: str,
    on_line: Callable[[str], None],
    timeout: float,
) -> int:
    """Build ``context`` (a gzip tar) into ``tag`` through the Engine API, passing each
    output line to ``on_line``; returns the image's size in bytes. Blocking: run it in a
    thread. A failed step raises ``BuildFailed`` with the engine's message."""
    client = docker.APIClient(base_url=url, timeout=int(timeout))
    try:
        stream = client.build(
            fileobj=context,
            custom_context=True,
            encoding="gzip",
            tag=tag,
            dockerfile=dockerfile,
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in stream:
            if "error" in chunk:
                message = str(chunk.get("error") or "").strip()
                for line in message.splitlines():
                    on_line(line)
                raise BuildFailed(message or "The image build failed")
            text = chunk.get("stream") or chunk.get("status") or ""
            for line in str(text).splitlines():
                if line.strip():
                    on_line(line.rstrip())
        return int(client.inspect_image(tag).get("Size") or 0)
    finally:
        client.close()


class BuildFailed(Exception):
    """The engine ran the Dockerfile and a step failed; the message is the engine's."""
