"""``/client/``: a page to talk to the dev agent that works offline, always.

Pipecat's prebuilt UI manages the microphone with Daily's browser library, which loads
Daily's call-machine bundle from Daily's CDN when it connects: offline, or on a machine
that must not reach out, it cannot connect at all. Telling beforehand whether Daily is
reachable would itself be a request off the machine, so ``/client/`` is always cattery's
own client (plain ``RTCPeerConnection``, every asset served from the package); the
installed prebuilt UI stays at ``/client/prebuilt/``. Its static build is mounted as it
is; importing the package's own ``frontend`` module is avoided because it prints while it
looks for the build.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from cattery.control.dashboard.client import offline_client_page
from cattery.control.deps import State
from cattery.errors import NotFound

#: (module, folder of the static build inside it), in the order they are tried
PREBUILT_PACKAGES = (
    ("pipecat_ai_prebuilt", Path("client", "dist")),
    ("pipecat_ai_small_webrtc_prebuilt", Path("client", "dist")),
)
PREBUILT_PATH = "/client/prebuilt"


def prebuilt_ui_folder() -> Path | None:
    """The installed prebuilt UI's folder holding ``index.html``, or None."""
    for module, inner in PREBUILT_PACKAGES:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            folder = Path(location) / inner
            if (folder / "index.html").is_file():
                return folder
    return None


def add_client_routes(router: APIRouter) -> None:
    """``/client/``: the offline talk page; ``/client/prebuilt/``: the prebuilt UI when
    installed (a 404 saying why when not)."""
    folder = prebuilt_ui_folder()

    @router.get("/client", include_in_schema=False)
    async def client_bare() -> RedirectResponse:
        return RedirectResponse("/client/", status_code=307)

    @router.get("/client/", include_in_schema=False)
    async def client(request: Request, state: State) -> Response:
        name = state.settings.dev.agent or ""
        return offline_client_page(request, name, prebuilt=folder is not None)

    if folder is not None:
        router.mount(PREBUILT_PATH, StaticFiles(directory=folder, html=True), name="prebuilt")
        return

    @router.get(PREBUILT_PATH + "/{path:path}", include_in_schema=False)
    async def no_prebuilt(path: str) -> None:
        raise NotFound("The prebuilt client UI is not installed: pip install pipecat-ai-prebuilt")
