"""The dashboard in a real Chromium against a real ``cattery serve`` with an echo agent.

One walk through every page, as an operator would: a page opened without a login goes to
the login form, a wrong token is refused, the admin token logs in; the agent shows its
pool; Talk (the fake microphone playing espeak speech) hears the echo; the session's page
shows its log lines arriving live and its charts; a key is created and revoked; a secret
is set. Every page is screenshot at 1280x800 and at a phone's 390x844 (under
``$CATTERY_TEST_ARTIFACTS``, default ``.artifacts/``), and any request that would leave
loopback fails the test. Runs only in the loopback-only network namespace (WebRTC).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.control.helpers import running_control, wait_ended, wait_pool
from tests.support.browser import (
    LoopbackOnly,
    chromium_context,
    fake_microphone,
    skip_outside_loopback_namespace,
    skip_without_chromium,
    speech_wav,
    wait_for_talk_echo,
)
from tests.support.control import ADMIN_TOKEN, ControlPlane
from tests.support.processes import EXAMPLES, REPO
from tests.support.waiting import async_wait_for

AGENT = "echo"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def control(tmp_path: Path) -> Iterator[ControlPlane]:
    skip_without_chromium()
    skip_outside_loopback_namespace()
    with running_control(tmp_path) as control:
        yield control


@pytest.fixture
def artifacts() -> Path:
    folder = Path(os.environ.get("CATTERY_TEST_ARTIFACTS", REPO / ".artifacts")) / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Shots:
    """Screenshots of each page at both sizes; the page is left at the desktop size."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.taken: list[Path] = []

    async def __call__(self, page: Any, name: str) -> None:
        for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
            await page.set_viewport_size(size)
            path = self.folder / f"{name}-{label}.png"
            await page.screenshot(path=str(path), full_page=True)
            self.taken.append(path)
            # nothing may stick out sideways on a phone: tables scroll inside their box
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= size["width"], f"{name} is {width}px wide at {label} size"
        await page.set_viewport_size(DESKTOP)


@pytest.mark.browser
async def test_dashboard_walkthrough(control: ControlPlane, artifacts: Path, tmp_path) -> None:
    assert "Dashboard: http://" in control.process.logs()  # beside the CLI's lines
    control.deploy(AGENT, EXAMPLES / "multi-transport", autoScaling={"minAgents": 1})
    wait_pool(control, AGENT, idle=1)
    wav = speech_wav("Hello cattery, this is the dashboard speaking.", tmp_path)
    shots = Shots(artifacts)
    base = control.url + "/dashboard"
    async with chromium_context(extra_args=fake_microphone(wav), viewport=DESKTOP) as context:
        outside = LoopbackOnly()
        await context.route("**/*", outside)
        page = context.pages[0] if context.pages else await context.new_page()
        failed: list[str] = []
        page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
        complaints: list[str] = []  # script errors, and anything the page's policy blocked
        context.on("console", lambda m: complaints.append(m.text) if m.type == "error" else None)
        context.on("weberror", lambda e: complaints.append(str(e.error)))

        # No login: the login form, which refuses a wrong token.
        await page.goto(base + "/sessions")
        assert page.url.startswith(base + "/login?next=")
        await shots(page, "login")
        await page.fill("input[name=token]", "sk_not_the_token")
        await page.click("button[type=submit]")
        assert "not the admin token" in await page.inner_text(".error")
        failed.clear()  # that 401 was the point
        await page.fill("input[name=token]", ADMIN_TOKEN)
        await page.click("button[type=submit]")
        assert page.url == base + "/sessions"
        (cookie,) = [c for c in await context.cookies() if c["name"] == "cattery_dashboard"]
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Lax"

        # The agent and its pool.
        await page.goto(base + "/")
        card = page.locator(f"article.agent[data-agent={AGENT}]")
        assert "ready" in await card.locator(".badge").inner_text()
        pool = await card.locator("dl.pool").inner_text()
        assert "WARM\n1" in pool.upper() and "MAX\n" in pool.upper(), pool
        await shots(page, "agents")
        await page.click(f"article.agent[data-agent={AGENT}] h2 a")
        assert "multi-transport" in await page.inner_text("table")
        await shots(page, "agent")

        # Talk, and hear the echo.
        await page.goto(f"{base}/agents/{AGENT}/talk")
        await page.click("#talk-start")
        talk = await wait_for_talk_echo(page)
        print(f"the echo as the talk page heard it: {talk}")
        session_id = talk["sessionId"]
        await shots(page, "talk")

        # The session's page while it runs: charts now, log lines as they come.
        watcher = await context.new_page()
        watcher.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)

        async def sampled() -> bool | None:
            await watcher.goto(f"{base}/sessions/{session_id}")
            return await watcher.locator("svg.chart polyline").count() >= 2 or None

        await async_wait_for(sampled, timeout=30, what="the session's CPU and memory charts")
        assert "bot() running" in await watcher.inner_text("ol.timeline")
        await page.click("#talk-stop")  # the bot logs the hang-up and its end, live

        async def live_lines() -> int | None:
            count = await watcher.locator("#log .line.new").count()
            ended = "ended" in await watcher.inner_text("#log-state")
            return count if count and ended else None

        arrived = await async_wait_for(live_lines, timeout=30, what="log lines over SSE")
        assert arrived > 0
        assert "completed" in await watcher.inner_text("#log-state")
        await shots(watcher, "session")
        await watcher.close()
        assert wait_ended(control, AGENT, session_id)["endState"] == "completed"

        # Sessions, filtered.
        await page.goto(base + "/sessions?state=completed&window=1h")
        assert session_id[:8] in await page.inner_text("table.sessions")
        await shots(page, "sessions")
        await page.goto(base + "/sessions?state=agent_error")
        assert session_id[:8] not in await page.inner_text("table.sessions")

        await page.goto(base + "/builds")
        assert "No builds yet" in await page.inner_text("main")
        await shots(page, "builds")

        # A key, created and revoked.
        await page.goto(base + "/keys")
        await page.fill("input[name=name]", "phone-app")
        await page.click("form.row button[type=submit]")
        new_key = await page.inner_text("#new-key")
        assert new_key.startswith("pk_"), new_key
        await shots(page, "keys")
        row = page.locator("tr", has_text="phone-app")
        await row.locator("button", has_text="Revoke").click()
        await page.wait_for_url(base + "/keys")
        assert "revoked" in await page.locator("tr", has_text="phone-app").inner_text()
        with control.client(new_key) as c:
            assert c.post(f"/v1/public/{AGENT}/start", json={}).status_code == 401

        # A secret, set; its value never shown.
        await page.goto(base + "/secrets")
        await page.fill("input[name=set]", "voice")
        await page.fill("input[name=key]", "TTS_API_KEY")
        await page.fill("input[name=value]", "never-shown-value")
        await page.click("form.row button[type=submit]")
        await page.wait_for_url(base + "/secrets")
        text = await page.inner_text("main")
        assert "TTS_API_KEY" in text and "never-shown-value" not in text
        await shots(page, "secrets")

        # Logged out: back to the login form.
        await page.click("header .who button")
        await page.goto(base + "/")
        assert page.url.startswith(base + "/login")

        assert failed == [], failed
        assert [c for c in complaints if "401" not in c] == [], complaints
        assert outside.blocked == [], f"the dashboard tried to leave loopback: {outside.blocked}"
    assert len(shots.taken) == 18 and all(p.stat().st_size > 0 for p in shots.taken)
