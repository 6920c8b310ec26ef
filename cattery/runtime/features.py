"""``PCC_LOG_FEATURES_SUMMARY``: which optional features this instance can serve."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import StrEnum

from loguru import logger

from cattery.runtime.options import RuntimeOptions


class FeatureKey(StrEnum):
    """Features an agent can turn off by naming them in ``DISABLED_FEATURES``."""

    OBSERVABILITY_OBSERVERS = "OBSERVABILITY_OBSERVERS"


def enabled(options: RuntimeOptions, key: FeatureKey) -> bool:
    return key.value not in options.disabled_features


@dataclass(frozen=True)
class Feature:
    name: str
    enabled: bool
    detail: str = ""


def _importable(module: str, attr: str | None = None) -> bool:
    try:
        mod = importlib.import_module(module)
    except Exception:
        return False
    return attr is None or hasattr(mod, attr)


def detect_features(options: RuntimeOptions) -> list[Feature]:
    whatsapp_code = _importable("pipecat.transports.whatsapp.client")
    observers_code = _importable("pipecat.observers.startup_timing_observer")
    observers_on = observers_code and enabled(options, FeatureKey.OBSERVABILITY_OBSERVERS)
    return [
        Feature(
            "Daily session arguments", _importable("pipecatcloud.agent", "DailySessionArguments")
        ),
        Feature("Daily transport", _importable("daily")),
        Feature(
            "WebSocket session arguments",
            _importable("pipecatcloud.agent", "WebSocketSessionArguments"),
        ),
        Feature(
            "SmallWebRTC session arguments",
            _importable("pipecatcloud.agent", "SmallWebRTCSessionArguments"),
        ),
        Feature("SmallWebRTC transport", _importable("aiortc")),
        Feature(
            "ICE candidates (PATCH /api/offer)",
            _importable(
                "pipecat.transports.smallwebrtc.request_handler", "SmallWebRTCPatchRequest"
            ),
        ),
        Feature(
            "WhatsApp",
            whatsapp_code and options.whatsapp is not None,
            ""
            if options.whatsapp
            else "set WHATSAPP_TOKEN, WHATSAPP_PHONE_NUMBER_ID, WHATSAPP_APP_SECRET",
        ),
        Feature(
            "Observability observers",
            observers_on,
            ""
            if observers_on
            else f"{FeatureKey.OBSERVABILITY_OBSERVERS} is in DISABLED_FEATURES"
            if observers_code
            else "this Pipecat has no StartupTimingObserver",
        ),
        Feature("ICE config URL", options.ice_config_url is not None, options.ice_config_url or ""),
    ]


def log_features_summary(options: RuntimeOptions) -> None:
    lines = [
        f"  {'enabled ' if f.enabled else 'disabled'}  {f.name}"
        + (f" ({f.detail})" if f.detail else "")
        for f in detect_features(options)
    ]
    logger.info("Features summary:\n" + "\n".join(lines))
