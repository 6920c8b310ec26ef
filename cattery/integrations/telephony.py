"""Carriers: the XML of their call webhooks, and what their media streams' first messages say.

A carrier asks a webhook what to do with an incoming call; the answer in its own markup
(Twilio's TwiML, Telnyx's TeXML, Plivo's XML) connects the call to a bidirectional media
stream at a WebSocket URL. Exotel has no such webhook: its Voicebot applet is given the
WebSocket URL directly.

Each carrier's stream opens with a ``start`` message (after a ``connected`` one, except
Plivo's) that names the call with the carrier's own ids, and carries Twilio's custom
parameters, where Pipecat Cloud's ``_pipecatCloudServiceHost`` names the agent.
"""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

SERVICE_HOST_PARAMETER = "_pipecatCloudServiceHost"
#: carriers whose call webhook answers with XML naming the media stream's URL
XML_CARRIERS = ("twilio", "telnyx", "plivo")
#: Plivo's stream attributes: both directions, the call kept up while streaming, and the
#: audio the bot sends back as 8 kHz μ-law, as Pipecat's Plivo serializer sends it
PLIVO_STREAM = {
    "bidirectional": "true",
    "keepCallAlive": "true",
    "contentType": "audio/x-mulaw;rate=8000",
}


def stream_xml(carrier: str, url: str) -> str:
    """The webhook answer that streams the call to ``url`` (``wss://...``), for ``carrier``."""
    response = ElementTree.Element("Response")
    if carrier in ("twilio", "telnyx"):
        connect = ElementTree.SubElement(response, "Connect")
        stream = ElementTree.SubElement(connect, "Stream", url=url)
        if carrier == "telnyx":  # media both ways over the same stream, as RTP payloads
            stream.set("bidirectionalMode", "rtp")
    elif carrier == "plivo":
        stream = ElementTree.SubElement(response, "Stream", PLIVO_STREAM)
        stream.text = url
    else:
        raise ValueError(f"{carrier!r} takes no XML webhook; one of {', '.join(XML_CARRIERS)}")
    body = ElementTree.tostring(response, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body


def carrier_of(message: dict[str, Any]) -> str | None:
    """The carrier whose ``start`` message ``message`` is, by the ids it names its call with."""
    start = message.get("start")
    if message.get("event") != "start" or not isinstance(start, dict):
        return None
    if "streamSid" in message and "callSid" in start:
        return "twilio"
    if "stream_id" in message and "call_control_id" in start:
        return "telnyx"
    if "streamId" in start and "callId" in start:
        return "plivo"
    if "stream_sid" in start and "call_sid" in start:
        return "exotel"
    return None


def named_service_host(message: dict[str, Any]) -> str | None:
    """The ``_pipecatCloudServiceHost`` custom parameter of a ``start`` message, if any."""
    start = message.get("start")
    if not isinstance(start, dict):
        return None
    for key in ("customParameters", "custom_parameters"):
        params = start.get(key)
        if isinstance(params, dict) and isinstance(params.get(SERVICE_HOST_PARAMETER), str):
            return params[SERVICE_HOST_PARAMETER]
    return None
