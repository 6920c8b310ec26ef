"""``cattery dev``'s settings from its command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cattery.control.dev.main import dev_settings, public_host
from tests.support.processes import EXAMPLES

BOT = str(EXAMPLES / "multi-transport")


def test_proxy_is_a_bare_host() -> None:
    for given in ("abc.ngrok.app", "https://abc.ngrok.app/", "HTTP://abc.ngrok.app//"):
        assert public_host(given) == "abc.ngrok.app"
    assert public_host(None) is None and public_host("https://") is None


def test_transport_and_proxy(tmp_path: Path) -> None:
    settings = dev_settings(
        BOT, host="127.0.0.1", port=0, transport="plivo", proxy="https://h.test", state_dir=tmp_path
    )
    assert (settings.dev.agent, settings.dev.transport) == ("multi-transport", "plivo")
    assert settings.dev.proxy == "h.test"
    exotel = dev_settings(BOT, host="127.0.0.1", port=0, transport="exotel", state_dir=tmp_path)
    assert exotel.dev.proxy is None  # Exotel calls no webhook: no proxy needed
    with pytest.raises(SystemExit, match="needs --proxy"):
        dev_settings(BOT, host="127.0.0.1", port=0, transport="twilio", state_dir=tmp_path)
    with pytest.raises(SystemExit, match="use one of"):
        dev_settings(BOT, host="127.0.0.1", port=0, transport="livekit", state_dir=tmp_path)
