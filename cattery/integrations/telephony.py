"""Carriers' call webhooks: the XML that tells a carrier to stream a call's audio to a URL.

A carrier asks a webhook what to do with an incoming call; the answer in its own markup
(Twilio's TwiML, Telnyx's TeXML, Plivo's XML) connects the call to a bidirectional media
stream at a WebSocket URL. Exotel has no such webhook: its Voicebot applet is given the
WebSocket URL directly.
"""

from __future__ import annotations

from xml.etree import ElementTree

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
