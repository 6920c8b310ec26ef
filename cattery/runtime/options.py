"""The runtime's settings, read from the environment the pipecat-base image defines.

This is the only place in ``runtime/`` that reads the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Self

from cattery.contract import (
    DISABLED_FEATURES_ENV,
    ICE_FALLBACK_URLS_ENV,
    INSTANCE_TOKEN_ENV,
    LEASE_FILE_ENV,
    LEASE_SECONDS_ENV,
    MEMORY_LIMIT_ENV,
    OTLP_ENDPOINT_ENV,
)
from cattery.contract import END_STATE_HEADER as END_STATE_HEADER
from cattery.contract import INSTANCE_TOKEN_HEADER as INSTANCE_TOKEN_HEADER

DEFAULT_PORT = 8080
DEFAULT_SHUTDOWN_TIMEOUT = 7200.0
WEBRTC_OFFER_TIMEOUT = 120.0
PUBLIC_STUN = "stun:stun.l.google.com:19302"


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class WhatsAppOptions:
    token: str
    phone_number_id: str
    app_secret: str = field(repr=False)


@dataclass(frozen=True)
class RuntimeOptions:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    log_level: str = "DEBUG"
    log_features_summary: bool = False
    image_version: str = "unknown"
    ice_config_url: str | None = None
    ice_fallback_urls: tuple[str, ...] = (PUBLIC_STUN,)
    instance_token: str | None = field(default=None, repr=False)
    whatsapp: WhatsAppOptions | None = None
    esp32_host: str | None = None
    disabled_features: frozenset[str] = frozenset()
    #: OpenTelemetry's OTLP/HTTP endpoint; set, sessions are traced
    otlp_endpoint: str | None = None
    #: the memory fallback's budget (``confine.py``), set by the local backend
    memory_limit_bytes: int | None = None
    #: a cluster node's lease file (``server.py``'s ``watch_lease``); unset, no lease
    lease_file: str | None = None
    lease_seconds: float = 5.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Self:
        env = os.environ if environ is None else environ
        whatsapp = None
        wa = [
            env.get(k)
            for k in ("WHATSAPP_TOKEN", "WHATSAPP_PHONE_NUMBER_ID", "WHATSAPP_APP_SECRET")
        ]
        if all(wa):
            whatsapp = WhatsAppOptions(token=wa[0], phone_number_id=wa[1], app_secret=wa[2])  # type: ignore[arg-type]
        fallback = env.get(ICE_FALLBACK_URLS_ENV)
        values: dict[str, object] = {
            "port": int(env.get("PORT", DEFAULT_PORT)),
            "shutdown_timeout": float(env.get("SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT)),
            "log_level": env.get("PIPECAT_LOG_LEVEL", "DEBUG").upper(),
            "log_features_summary": _flag(env.get("PCC_LOG_FEATURES_SUMMARY")),
            "image_version": env.get("IMAGE_VERSION", "unknown"),
            "ice_config_url": env.get("ICE_CONFIG_URL") or None,
            "ice_fallback_urls": (
                (PUBLIC_STUN,)
                if fallback is None
                else tuple(u.strip() for u in fallback.split(",") if u.strip())
            ),
            "instance_token": env.get(INSTANCE_TOKEN_ENV) or None,
            "whatsapp": whatsapp,
            "esp32_host": env.get("ESP32_HOST") if _flag(env.get("ESP32_ENABLED")) else None,
            "otlp_endpoint": env.get(OTLP_ENDPOINT_ENV) or None,
            "disabled_features": frozenset(
                key.strip().upper()
                for key in env.get(DISABLED_FEATURES_ENV, "").split(",")
                if key.strip()
            ),
            "memory_limit_bytes": int(env.get(MEMORY_LIMIT_ENV) or 0) or None,
            "lease_file": env.get(LEASE_FILE_ENV) or None,
            "lease_seconds": float(env.get(LEASE_SECONDS_ENV) or 5.0),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
