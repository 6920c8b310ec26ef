"""The prebuilt Pipecat client UI, served from the installed ``pipecat-ai-prebuilt`` package.

Its static build is mounted as it is; importing the package's own ``frontend`` module is
avoided because it prints while it looks for the build.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter
from fastapi.staticfiles import StaticFiles

from cattery.errors import NotFound

#: (module, folder of the static build inside it), in the order they are tried
PREBUILT_PACKAGES = (
    ("pipecat_ai_prebuilt", Path("client", "dist")),
    ("pipecat_ai_small_webrtc_prebuilt", Path("client", "dist")),
)


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
    """``/client/``: the prebuilt UI (``/client`` redirects there); a 404 saying why if absent."""
    folder = prebuilt_ui_folder()
    if folder is not None:
        router.mount("/client", StaticFiles(directory=folder, html=True), name="client")
        return

    @router.get("/client/{path:path}", include_in_schema=False)
    async def no_client(path: str) -> None:
        raise NotFound("The prebuilt client UI is not installed: pip install pipecat-ai-prebuilt")
