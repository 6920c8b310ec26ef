"""Build context uploads: a signed, single-use, expiring token, and the checks an upload
passes before a build may use it.

Pipecat Cloud hands the CLI a presigned S3 POST; cattery hands it its own URL with form
fields that carry the token, so the upload itself needs no API key (the CLI sends none).
An upload is kept as ``<uploads>/<org id>/<upload id>.tar.gz``: the file is created
exclusively, so a token can fill it once; a restart voids every earlier token.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import tarfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from cattery.errors import Forbidden, InvalidRequest, PayloadTooLarge

#: Pipecat Cloud's cap on a build context
MAX_CONTEXT_BYTES = 500 * 1024 * 1024
#: room for the form's other fields and the multipart framing
FORM_OVERHEAD_BYTES = 64 * 1024
UPLOAD_TTL_SECONDS = 15 * 60
TOKEN_FIELD = "token"
#: the CLI's own hash: the first 16 hex digits of the gzip file's MD5
HASH_LENGTH = 16


@dataclass(frozen=True)
class UploadGrant:
    upload_id: str
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class Upload:
    path: Path
    context_hash: str
    size_bytes: int


def context_hash(data_hash: hashlib._Hash) -> str:
    return data_hash.hexdigest()[:HASH_LENGTH]


class UploadTokenRefused(Forbidden):
    code = "BUILD_UPLOAD_TOKEN_INVALID"


class UploadTokens:
    """Issues and checks upload tokens; the key is random per control-plane process."""

    def __init__(self, ttl: int = UPLOAD_TTL_SECONDS, key: str | None = None) -> None:
        self._ttl = ttl
        self._signer = URLSafeTimedSerializer(key or secrets.token_hex(32), salt="build-upload")

    def issue(self, organization_id: str, context_hash: str | None = None) -> UploadGrant:
        upload_id = str(uuid.uuid4())
        claims = {"u": upload_id, "o": organization_id, "h": context_hash}
        token = self._signer.dumps(claims)
        expires = datetime.now(UTC) + timedelta(seconds=self._ttl)
        return UploadGrant(upload_id, token, expires)

    def check(self, token: str | None, upload_id: str) -> dict[str, str | None]:
        """The claims of a valid, unexpired token for ``upload_id``; 403 otherwise."""
        if not token:
            raise UploadTokenRefused(
                "The upload has no token: use the fields the upload URL came with"
            )
        try:
            claims = self._signer.loads(token, max_age=self._ttl)
        except SignatureExpired:
            raise UploadTokenRefused(
                "The upload token has expired: ask for a new upload URL"
            ) from None
        except BadSignature:
            raise UploadTokenRefused("The upload token is not valid for this upload URL") from None
        if claims.get("u") != upload_id:
            raise UploadTokenRefused("The upload token is not valid for this upload URL")
        return claims


def upload_path(uploads_dir: Path, organization_id: str, upload_id: str) -> Path:
    str(uuid.UUID(upload_id))  # a malformed id never becomes a path
    return uploads_dir / organization_id / f"{upload_id}.tar.gz"


async def _capped(stream: AsyncIterator[bytes], cap: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > cap:
            raise PayloadTooLarge(
                f"The build context is over {MAX_CONTEXT_BYTES // (1024 * 1024)} MB"
            )
        yield chunk


async def receive_upload(
    headers: Headers,
    stream: AsyncIterator[bytes],
    *,
    upload_id: str,
    tokens: UploadTokens,
    uploads_dir: Path,
    max_bytes: int = MAX_CONTEXT_BYTES,
) -> Upload:
    """Read the form, check its token, keep its ``file`` once and check the archive."""
    length = headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes + FORM_OVERHEAD_BYTES:
        raise PayloadTooLarge(f"The build context is over {max_bytes // (1024 * 1024)} MB")
    parser = MultiPartParser(
        headers, _capped(stream, max_bytes + FORM_OVERHEAD_BYTES), max_files=1, max_fields=32
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidRequest(f"The upload is not a valid multipart form: {exc.message}") from None
    try:
        token = form.get(TOKEN_FIELD)
        claims = tokens.check(token if isinstance(token, str) else None, upload_id)
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise InvalidRequest("The upload has no file field holding the context archive")
        target = upload_path(uploads_dir, str(claims["o"]), upload_id)
        await file.seek(0)
        upload = await asyncio.to_thread(_keep_once, file.file, target, max_bytes)
    finally:
        await form.close()
    try:
        expected = claims.get("h") or _field(form.get("contextHash"))
        if expected and expected != upload.context_hash:
            raise InvalidRequest(
                f"The context's hash is {upload.context_hash}, not {expected}: "
                "the archive changed on its way",
                code="BUILD_CONTEXT_HASH_MISMATCH",
            )
        await asyncio.to_thread(check_archive, upload.path, max_bytes)
    except BaseException:
        upload.path.write_bytes(b"")  # refused, and its token used
        raise
    return upload


def _field(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _keep_once(source: BinaryIO, target: Path, max_bytes: int) -> Upload:
    """Copy the uploaded file to ``target``, which must not exist yet (single use)."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UploadTokenRefused("This upload URL has been used: ask for a new one") from None
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    with os.fdopen(fd, "wb") as out:
        try:
            while chunk := source.read(1024 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(
                        f"The build context is over {max_bytes // (1024 * 1024)} MB"
                    )
                digest.update(chunk)
                out.write(chunk)
        except BaseException:
            out.truncate(0)  # an empty file: the token stays used
            raise
    return Upload(target, context_hash(digest), size)


def check_archive(path: Path, max_bytes: int = MAX_CONTEXT_BYTES) -> int:
    """Refuse an archive that is not a gzip tar, would unpack past ``max_bytes``, or holds
    a member that would land outside its folder (``..``, an absolute path, a link leaving
    it, a device): the rules of ``tarfile``'s ``data`` filter. Returns the unpacked size."""
    dest = str(path.parent / "check")
    total = 0
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            for member in archive:
                parts = PurePosixPath(member.name).parts
                if member.name.startswith("/") or ".." in parts:
                    raise tarfile.FilterError(f"{member.name!r} is outside the context")
                tarfile.data_filter(member, dest)
                total += member.size
                if total > max_bytes:
                    raise PayloadTooLarge(
                        f"The build context unpacks to over {max_bytes // (1024 * 1024)} MB"
                    )
    except tarfile.FilterError as exc:
        raise InvalidRequest(
            f"The build context holds an unsafe entry: {exc}", code="BUILD_CONTEXT_UNSAFE"
        ) from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidRequest(
            f"The build context is not a gzip tar archive: {exc}", code="BUILD_CONTEXT_INVALID"
        ) from None
    return total


def extract_archive(path: Path, dest: Path) -> None:
    """Unpack a checked archive into ``dest`` with the ``data`` filter: nothing lands
    outside it, whatever the archive says."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode="r:gz") as archive:
        archive.extractall(dest, filter="data")
