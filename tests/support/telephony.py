"""Playing carriers' media streams over a WebSocket, as Twilio, Telnyx, Plivo and Exotel would.

Each call sends its carrier's first messages, then audio in 20 ms frames in real time
(μ-law 8 kHz; Exotel: 16-bit PCM 8 kHz), and collects the audio the bot sends back.
``speech`` makes the audio with espeak-ng and sox.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import websockets

FRAME_MS = 20
SAMPLE_RATE = 8000
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000  # 8-bit mu-law, mono


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """G.711 mu-law of 16-bit PCM samples."""
    bias, clip = 0x84, 32635
    x = np.clip(pcm.astype(np.int32), -clip, clip)
    sign = np.where(x < 0, 0x80, 0)
    x = np.abs(x) + bias
    exponent = np.floor(np.log2(x)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (x >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def tone_frames(seconds: float, freq: float = 440.0) -> list[bytes]:
    n = int(SAMPLE_RATE * seconds)
    t = np.arange(n) / SAMPLE_RATE
    audio = ulaw_encode(8000 * np.sin(2 * np.pi * freq * t))
    return [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]


SPEECH_TOOLS = ("espeak-ng", "sox")


def missing_speech_tools() -> list[str]:
    return [tool for tool in SPEECH_TOOLS if shutil.which(tool) is None]


def speech(text: str, encoding: str = "mu-law") -> bytes:
    """``text`` spoken by espeak-ng, as raw 8 kHz mono audio: ``mu-law`` or ``pcm16`` (LE)."""
    sox_encoding = {"mu-law": ["-e", "mu-law"], "pcm16": ["-e", "signed-integer", "-b", "16"]}
    with tempfile.TemporaryDirectory() as tmp:
        wav, raw = Path(tmp) / "speech.wav", Path(tmp) / "speech.raw"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
        subprocess.run(
            [
                "sox",
                str(wav),
                "-r",
                "8000",
                "-c",
                "1",
                *sox_encoding[encoding],
                "-t",
                "raw",
                str(raw),
            ],
            check=True,
            capture_output=True,
        )
        return raw.read_bytes()


def frames_of(audio: bytes, sample_bytes: int = 1) -> list[bytes]:
    """``audio`` cut in 20 ms frames."""
    size = FRAME_BYTES * sample_bytes
    return [audio[i : i + size] for i in range(0, len(audio), size)]


SPEECH = "Hello, this is a test call to cattery. Can you hear me?"
#: the echo is at most a few frames short of what was sent, and as loud as speech
MIN_ECHO_SHARE = 0.6
MIN_SPEECH_RMS = 300.0


def speech_audio() -> dict[str, bytes]:
    """``SPEECH`` as μ-law and as 16-bit PCM, both 8 kHz, keyed by encoding."""
    return {"mu-law": speech(SPEECH), "pcm16": speech(SPEECH, "pcm16")}


def ulaw_decode(data: bytes) -> np.ndarray:
    """16-bit PCM samples of G.711 mu-law bytes."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


@dataclass
class MediaStreamCall:
    """One call's media stream, as its carrier speaks it; subclasses name the messages."""

    received: list[bytes] = field(default_factory=list)
    #: set whenever audio comes back
    _more: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    #: the audio encoding both ways: ``mu-law`` (1 byte a sample) or ``pcm16`` (2)
    encoding: ClassVar[str] = "mu-law"

    def start_messages(self) -> list[str]:
        raise NotImplementedError

    def media_message(self, seq: int, payload: bytes) -> str:
        raise NotImplementedError

    def stop_message(self) -> str:
        raise NotImplementedError

    def audio_in(self, data: dict) -> bytes | None:
        """The audio of a message the bot sent, if it is one."""
        raise NotImplementedError

    @property
    def sample_bytes(self) -> int:
        return 2 if self.encoding == "pcm16" else 1

    @property
    def received_seconds(self) -> float:
        return sum(len(p) for p in self.received) / SAMPLE_RATE / self.sample_bytes

    def received_rms(self) -> float:
        """Loudness of what came back (16-bit scale): speech is loud, silence is not."""
        audio = b"".join(self.received)
        if self.encoding == "pcm16":
            samples = np.frombuffer(audio[: len(audio) // 2 * 2], dtype="<i2")
        else:
            samples = ulaw_decode(audio)
        if samples.size == 0:
            return 0.0
        return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))

    async def play(
        self,
        url: str,
        seconds: float = 2.0,
        *,
        headers: dict[str, str] | None = None,
        tail: float = 1.0,
        frames: list[bytes] | None = None,
        until_echo: float | None = None,
    ) -> None:
        """Connect, stream ``frames`` (else ``seconds`` of tone) in real time, collect what
        comes back for ``tail`` seconds more (or, with ``until_echo``, until that share of
        what was sent is back, ``tail`` at most: a loaded machine echoes late), stop."""
        if frames is None:
            frames = tone_frames(seconds)
            if self.sample_bytes == 2:
                raise ValueError("give a pcm16 call its frames")
        async with websockets.connect(url, additional_headers=headers or {}) as ws:
            for message in self.start_messages():
                await ws.send(message)
            reader = asyncio.create_task(self._read(ws))
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for i, frame in enumerate(frames):
                await ws.send(self.media_message(i, frame))
                delay = t0 + (i + 1) * FRAME_MS / 1000 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if until_echo is None:
                await asyncio.sleep(tail)
            else:
                wanted = until_echo * len(frames) * FRAME_MS / 1000
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(tail):
                        await self._echoed(wanted)
            await ws.send(self.stop_message())
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def refused(
        self, url: str, *, headers: dict[str, str] | None = None, timeout: float = 30
    ) -> tuple[int, str]:
        """Call ``url`` and expect to be hung up on before any audio: the close code and reason."""
        async with websockets.connect(url, additional_headers=headers or {}) as ws:
            try:
                for message in self.start_messages():
                    await ws.send(message)
            except websockets.ConnectionClosed:
                pass
            async with asyncio.timeout(timeout):
                try:
                    async for message in ws:
                        data = json.loads(message)
                        assert self.audio_in(data) is None, "a refused call got audio"
                except websockets.ConnectionClosed:
                    pass
        assert ws.close_code is not None
        return ws.close_code, ws.close_reason or ""

    async def _read(self, ws: websockets.ClientConnection) -> None:
        async for message in ws:
            audio = self.audio_in(json.loads(message))
            if audio is not None:
                self.received.append(audio)
                self._more.set()

    async def _echoed(self, seconds: float) -> None:
        """Until ``seconds`` of audio have come back."""
        while self.received_seconds < seconds:
            self._more.clear()
            await self._more.wait()


@dataclass
class TwilioCall(MediaStreamCall):
    stream_sid: str = field(default_factory=lambda: "MZ" + uuid.uuid4().hex)
    call_sid: str = field(default_factory=lambda: "CA" + uuid.uuid4().hex)
    custom_parameters: dict[str, str] = field(default_factory=dict)

    def start_messages(self) -> list[str]:
        connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": self.stream_sid,
            "start": {
                "streamSid": self.stream_sid,
                "accountSid": "AC" + uuid.uuid4().hex,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": self.custom_parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
        return [json.dumps(connected), json.dumps(start)]

    def media_message(self, seq: int, payload: bytes) -> str:
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": str(seq + 2),
                "streamSid": self.stream_sid,
                "media": {
                    "track": "inbound",
                    "chunk": str(seq + 1),
                    "timestamp": str(seq * FRAME_MS),
                    "payload": base64.b64encode(payload).decode(),
                },
            }
        )

    def stop_message(self) -> str:
        return json.dumps(
            {"event": "stop", "streamSid": self.stream_sid, "stop": {"callSid": self.call_sid}}
        )

    def audio_in(self, data: dict) -> bytes | None:
        if data.get("event") == "media" and data.get("streamSid") == self.stream_sid:
            return base64.b64decode(data["media"]["payload"])
        return None


@dataclass
class TelnyxCall(MediaStreamCall):
    """Telnyx media streaming (TeXML ``<Stream bidirectionalMode="rtp">``), PCMU both ways."""

    stream_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    call_control_id: str = field(default_factory=lambda: "v3:" + uuid.uuid4().hex)

    def start_messages(self) -> list[str]:
        connected = {"event": "connected", "version": "1.0.0"}
        start = {
            "event": "start",
            "sequence_number": "1",
            "start": {
                "user_id": str(uuid.uuid4()),
                "call_control_id": self.call_control_id,
                "call_session_id": str(uuid.uuid4()),
                "from": "+15550100",
                "to": "+15550199",
                "client_state": "",
                "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
            },
            "stream_id": self.stream_id,
        }
        return [json.dumps(connected), json.dumps(start)]

    def media_message(self, seq: int, payload: bytes) -> str:
        return json.dumps(
            {
                "event": "media",
                "sequence_number": str(seq + 2),
                "media": {
                    "track": "inbound",
                    "chunk": str(seq + 1),
                    "timestamp": str(seq * FRAME_MS),
                    "payload": base64.b64encode(payload).decode(),
                },
                "stream_id": self.stream_id,
            }
        )

    def stop_message(self) -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequence_number": "0",
                "stop": {"call_control_id": self.call_control_id},
                "stream_id": self.stream_id,
            }
        )

    def audio_in(self, data: dict) -> bytes | None:
        if data.get("event") == "media":
            return base64.b64decode(data["media"]["payload"])
        return None


@dataclass
class PlivoCall(MediaStreamCall):
    """Plivo audio streams (``<Stream bidirectional="true">``), μ-law 8 kHz; no ``connected``."""

    stream_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    call_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def start_messages(self) -> list[str]:
        start = {
            "event": "start",
            "sequenceNumber": 0,
            "start": {
                "callId": self.call_id,
                "streamId": self.stream_id,
                "accountId": "MA" + uuid.uuid4().hex[:18].upper(),
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
            },
            "extra_headers": "{}",
        }
        return [json.dumps(start)]

    def media_message(self, seq: int, payload: bytes) -> str:
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": seq + 1,
                "streamId": self.stream_id,
                "media": {
                    "track": "inbound",
                    "timestamp": str(seq * FRAME_MS),
                    "chunk": seq + 1,
                    "payload": base64.b64encode(payload).decode(),
                },
            }
        )

    def stop_message(self) -> str:
        return json.dumps({"event": "stop", "streamId": self.stream_id})

    def audio_in(self, data: dict) -> bytes | None:
        if data.get("event") == "playAudio":
            return base64.b64decode(data["media"]["payload"])
        return None


@dataclass
class ExotelCall(MediaStreamCall):
    """Exotel's Voicebot applet stream: 16-bit little-endian PCM at 8 kHz, base64."""

    stream_sid: str = field(default_factory=lambda: uuid.uuid4().hex)
    call_sid: str = field(default_factory=lambda: uuid.uuid4().hex)
    encoding: ClassVar[str] = "pcm16"

    def start_messages(self) -> list[str]:
        connected = {"event": "connected"}
        start = {
            "event": "start",
            "sequence_number": 1,
            "stream_sid": self.stream_sid,
            "start": {
                "stream_sid": self.stream_sid,
                "call_sid": self.call_sid,
                "account_sid": "exotel-account",
                "from": "09999900000",
                "to": "08888800000",
                "custom_parameters": {},
                "media_format": {
                    "encoding": "base64",
                    "sample_rate": "8000",
                    "bit_rate": "128kbps",
                },
            },
        }
        return [json.dumps(connected), json.dumps(start)]

    def media_message(self, seq: int, payload: bytes) -> str:
        return json.dumps(
            {
                "event": "media",
                "sequence_number": seq + 2,
                "stream_sid": self.stream_sid,
                "media": {
                    "chunk": seq + 1,
                    "timestamp": str(seq * FRAME_MS),
                    "payload": base64.b64encode(payload).decode(),
                },
            }
        )

    def stop_message(self) -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequence_number": 0,
                "stream_sid": self.stream_sid,
                "stop": {"call_sid": self.call_sid, "reason": "callended"},
            }
        )

    def audio_in(self, data: dict) -> bytes | None:
        if data.get("event") == "media" and data.get("stream_sid") == self.stream_sid:
            return base64.b64decode(data["media"]["payload"])
        return None


def frames_for(call: MediaStreamCall, audio: dict[str, bytes]) -> list[bytes]:
    """``audio`` (as ``speech_audio`` makes it) in ``call``'s encoding, cut in frames."""
    return frames_of(audio[call.encoding], call.sample_bytes)


def assert_heard_back(call: MediaStreamCall, sent_seconds: float) -> None:
    """The call got its audio back: nearly as long as it sent, and as loud as speech."""
    name = type(call).__name__
    assert call.received_seconds >= MIN_ECHO_SHARE * sent_seconds, (
        f"{name}: {call.received_seconds:.2f} s back of {sent_seconds:.2f} s"
    )
    assert call.received_rms() >= MIN_SPEECH_RMS, f"{name}: the echo is silent"
