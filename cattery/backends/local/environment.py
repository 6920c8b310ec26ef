"""An instance's environment, built from an allow-list: never the server's own environment.

The control plane's environment holds what bots must not see: its ``CATTERY_*`` settings,
an operator's ``DAILY_API_KEY``, cloud credentials. An instance gets only what a Python
runtime needs to start (``PATH``, locale, time zone, CA bundle, proxies, ``PYTHONPATH``),
the runtime's documented settings (``PIPECAT_*``, ``ICE_*``, ``PCC_*``, ``SHUTDOWN_TIMEOUT``,
``IMAGE_VERSION``, ``DISABLED_FEATURES``, ``ESP32_*``), then the agent's own environment
(its secrets, the control plane's per-instance settings), then what the backend sets itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cattery.contract import DISABLED_FEATURES_ENV, INSTANCE_TOKEN_ENV

#: names passed through from the server's environment when set
PASSED_NAMES = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "PYTHONPATH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "SHUTDOWN_TIMEOUT",
        "IMAGE_VERSION",
        DISABLED_FEATURES_ENV,
        "ESP32_ENABLED",
        "ESP32_HOST",
    }
)
#: prefixes passed through: locale, and the runtime's documented settings
PASSED_PREFIXES = ("LC_", "PIPECAT_", "ICE_", "PCC_")


def passed_from(source: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed part of ``source``."""
    return {
        name: value
        for name, value in source.items()
        if name in PASSED_NAMES or name.startswith(PASSED_PREFIXES)
    }


def build_env(
    agent_env: Mapping[str, str],
    *,
    token: str | None,
    home: str | None = None,
    base: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The allow-listed server environment, then the agent's, then the backend's own.

    ``token``: the instance's token, or None for a forking parent (each child gets its
    own). ``home``: the instance user's home folder, else the server's ``HOME``.
    """
    source = os.environ if base is None else base
    env = passed_from(source)
    if home is None and "HOME" in source:
        env["HOME"] = source["HOME"]
    elif home is not None:
        env["HOME"] = home
    env.update(agent_env)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    if token is not None:
        env[INSTANCE_TOKEN_ENV] = token
    return env
