"""Carriers' webhook XML and what their media streams' first messages say."""

from __future__ import annotations

import json
from xml.etree import ElementTree

import pytest

from cattery.integrations.telephony import carrier_of, named_service_host, stream_xml
from tests.support.telephony import ExotelCall, PlivoCall, TelnyxCall, TwilioCall

URL = "wss://bot.example.test/ws/a.b?x=1&y=2"


def test_twiml_and_texml_connect_the_call_to_a_stream() -> None:
    for carrier, mode in (("twilio", None), ("telnyx", "rtp")):
        xml = stream_xml(carrier, URL)
        assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
        stream = ElementTree.fromstring(xml).find("./Connect/Stream")
        assert stream is not None and stream.get("url") == URL  # escaped, and read back whole
        assert stream.get("bidirectionalMode") == mode


def test_plivo_xml_names_the_stream_in_its_text() -> None:
    stream = ElementTree.fromstring(stream_xml("plivo", URL)).find("./Stream")
    assert stream is not None and stream.text == URL
    assert stream.get("bidirectional") == "true" and stream.get("keepCallAlive") == "true"
    assert stream.get("contentType") == "audio/x-mulaw;rate=8000"


def test_exotel_and_strangers_have_no_webhook_xml() -> None:
    for carrier in ("exotel", "vonage"):
        with pytest.raises(ValueError):
            stream_xml(carrier, URL)


def test_each_carriers_start_message_names_it() -> None:
    for call, carrier in (
        (TwilioCall(), "twilio"),
        (TelnyxCall(), "telnyx"),
        (PlivoCall(), "plivo"),
        (ExotelCall(), "exotel"),
    ):
        messages = [json.loads(m) for m in call.start_messages()]
        assert [carrier_of(m) for m in messages][-1] == carrier
        assert all(carrier_of(m) is None for m in messages[:-1])  # ``connected`` names none
    assert carrier_of({"event": "start", "start": "nope"}) is None
    assert carrier_of({"event": "media", "streamSid": "MZ", "start": {"callSid": "CA"}}) is None


def test_twilios_custom_parameter_names_the_agent() -> None:
    call = TwilioCall(custom_parameters={"_pipecatCloudServiceHost": "echo.default"})
    start = json.loads(call.start_messages()[-1])
    assert named_service_host(start) == "echo.default"
    assert named_service_host(json.loads(TwilioCall().start_messages()[-1])) is None
    assert named_service_host({"start": {"customParameters": {"x": 1}}}) is None
