"""``cattery dev PATH``: the control plane on the embedded defaults, serving one bot.

PATH (a folder holding ``bot.py``, or that file) is deployed as an agent named after its
folder, with one instance kept warm, and the development runner's routes start its
sessions. State lives in ``./.cattery-dev`` unless ``--state-dir`` says otherwise.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from cattery.settings import DevSettings, Settings

DEFAULT_STATE_DIR = Path(".cattery-dev")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

BANNER = """
cattery dev: {agent!r} from {folder}
  open the client:  {url}/client/
  the dashboard:    {url}/dashboard/  (log in with the admin token)
  start a session:  POST {url}/start   (Pipecat's development runner's routes, no key)
  the API:          {url}/v1/...       (keys as for `cattery serve`){calls}{warning}
"""
CALLS = """
  phone calls:      {carrier}'s call webhook https://{proxy}/ (POST {url}/ here),
                    media stream wss://{proxy}/ws (ws://{local}/ws here)"""
OPEN_WARNING = """
  warning: the dev routes need no key, and {host} is not loopback: anyone who can reach
  this port can start sessions"""


def bot_folder(path: str) -> Path:
    """The folder holding ``bot.py`` that PATH names (the folder itself, or its bot.py)."""
    given = Path(path).expanduser().resolve()
    folder = given.parent if given.is_file() and given.name == "bot.py" else given
    if not (folder / "bot.py").is_file():
        raise SystemExit(f"cattery dev: error: {given} is not bot.py or a folder holding one")
    return folder


def agent_name(folder: Path) -> str:
    """An agent name from the folder's: lowercase letters, digits and '-'; ``dev`` if none."""
    name = re.sub(r"[^a-z0-9-]+", "-", folder.name.lower()).strip("-")[:63].strip("-")
    return name or "dev"


def public_host(proxy: str | None) -> str | None:
    """``--proxy`` as a host: a scheme and trailing slashes given with it are dropped."""
    if not proxy:
        return None
    return re.sub(r"^[a-z]+://", "", proxy.strip(), flags=re.IGNORECASE).rstrip("/") or None


def dev_settings(
    path: str,
    *,
    host: str,
    port: int,
    transport: str | None = None,
    proxy: str | None = None,
    state_dir: Path,
) -> Settings:
    from cattery.control.dev.routes import TRANSPORTS
    from cattery.integrations.telephony import XML_CARRIERS

    folder = bot_folder(path)
    name = agent_name(folder)
    proxy = public_host(proxy)
    if transport is not None and transport not in TRANSPORTS:
        raise SystemExit(f"cattery dev: error: -t {transport}: use one of {', '.join(TRANSPORTS)}")
    if transport in XML_CARRIERS and not proxy:
        raise SystemExit(
            f"cattery dev: error: -t {transport} needs --proxy HOST, the public host "
            "its call webhook points the call's media stream at"
        )
    return Settings(
        host=host,
        port=port,
        state_dir=state_dir,
        agents={name: str(folder)},
        dev=DevSettings(agent=name, proxy=proxy, transport=transport),
    )


def run_dev(
    path: str,
    *,
    host: str,
    port: int,
    transport: str | None,
    proxy: str | None,
    state_dir: Path | None,
    fd: int | None,
) -> None:
    from cattery.control.listen import bind
    from cattery.control.main import serve

    settings = dev_settings(
        path,
        host=host,
        port=port,
        transport=transport,
        proxy=proxy,
        state_dir=state_dir or DEFAULT_STATE_DIR,
    )
    sock = None
    if fd is not None:  # an inherited socket: show where it is bound
        with socket.socket(fileno=os.dup(fd)) as inherited:
            host, port = inherited.getsockname()[:2]
    else:  # bound before the banner: a taken port is the only thing printed
        sock = bind(host, port, "cattery dev")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    warning = "" if host in LOOPBACK_HOSTS else OPEN_WARNING.format(host=host)
    print(
        BANNER.format(
            agent=settings.dev.agent,
            folder=settings.agents[settings.dev.agent or ""],
            url=f"http://{shown}:{port}",
            calls=_calls_banner(settings, f"{shown}:{port}"),
            warning=warning,
        ),
        flush=True,
    )
    serve(settings, fd=fd, sock=sock)


def _calls_banner(settings: Settings, local: str) -> str:
    """Where a carrier's webhook and media stream go, when ``-t`` names a carrier."""
    from cattery.integrations.telephony import XML_CARRIERS

    carrier, proxy = settings.dev.transport, settings.dev.proxy
    if carrier not in XML_CARRIERS or not proxy:
        return ""
    return CALLS.format(
        carrier=carrier.capitalize(), proxy=proxy, url=f"http://{local}", local=local
    )
