"""A headless Debian Chromium driven by Playwright, for tests that need a real browser.

Only the system's ``/usr/bin/chromium`` is used (Playwright never downloads one). It gets a
fresh profile, a fake microphone that plays a tone, and no network features that would
reach beyond the machine: no sync, no component updates, no QUIC.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.support.waiting import async_wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--allow-loopback-in-peer-connection",
)
# The address WebRTC tests use for the runtime's ICE host candidate (see ./scripts/test).
ICE_LOOPBACK = "127.0.0.2"


def chromium_missing_reason() -> str | None:
    """Why no browser test can run here, or None when one can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is not installed (Debian package chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Python Playwright is not installed"
    return None


def skip_without_chromium() -> None:
    reason = chromium_missing_reason()
    if reason:
        pytest.skip(reason)


def loopback_namespace_missing_reason() -> str | None:
    """Why WebRTC must not run here, or None inside a loopback-only network namespace.

    ICE gathers every address of every interface. Only in a private namespace whose one
    interface is ``lo``, holding ``127.0.0.2`` besides ``127.0.0.1`` (aioice skips the
    latter), do both peers stay on loopback.
    """
    interfaces = [name for _, name in socket.if_nameindex()]
    if interfaces != ["lo"]:
        return (
            f"WebRTC tests run only in a loopback-only network namespace (./scripts/test); "
            f"this one has interfaces {interfaces}"
        )
    import ifaddr  # aioice lists host addresses with it, so ask the same source

    addresses = {ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips}
    if ICE_LOOPBACK not in addresses:
        return f"{ICE_LOOPBACK} is not assigned to lo, so aioice has no host candidate"
    return None


def skip_outside_loopback_namespace() -> None:
    reason = loopback_namespace_missing_reason()
    if reason:
        pytest.skip(reason)


class LoopbackOnly:
    """A Playwright route handler: loopback requests pass, any other is aborted and noted."""

    def __init__(self) -> None:
        self.blocked: list[str] = []

    async def __call__(self, route: Any) -> None:
        if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
            await route.continue_()
            return
        self.blocked.append(route.request.url)
        await route.abort()


def speech_wav(text: str, folder: Path) -> Path:
    """``text`` spoken by espeak-ng as a WAV file in ``folder``: what Chromium's fake
    microphone plays (``--use-file-for-fake-audio-capture``); skips without espeak-ng."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    wav = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
    return wav


def fake_microphone(wav: Path) -> list[str]:
    """Chromium's arguments that make its fake microphone play ``wav``, in a loop."""
    return [f"--use-file-for-fake-audio-capture={wav}"]


@asynccontextmanager
async def chromium_context(
    extra_args: Sequence[str] = (), **context_options: object
) -> AsyncIterator[object]:
    """A fresh headless Chromium (a Playwright ``BrowserContext``); closed on exit."""
    from playwright.async_api import async_playwright

    skip_without_chromium()
    profile = Path(tempfile.mkdtemp(prefix="cattery-chromium-"))
    try:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=[*CHROMIUM_ARGS, *extra_args],
                **context_options,  # type: ignore[arg-type]
            )
            try:
                yield context
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


async def wait_for_talk_echo(page: Any) -> dict[str, Any]:
    """The talk client's stats once the bot's audio, measured by its analyser, has energy."""

    async def heard() -> dict[str, Any] | None:
        stats = await page.evaluate("window.catteryTalk.stats()")
        status = await page.inner_text("#talk-status")
        assert "Could not talk" not in status, status
        return stats if stats["energy"] > 0.01 and stats["peak"] > 0.01 else None

    return await async_wait_for(heard, timeout=30, what="the echo in the talk client")
