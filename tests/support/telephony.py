"""Playing a Twilio media stream over a WebSocket, as the carrier would."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from dataclasses import dataclass, field

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


@dataclass
class TwilioCall:
    stream_sid: str = field(default_factory=lambda: "MZ" + uuid.uuid4().hex)
    call_sid: str = field(default_factory=lambda: "CA" + uuid.uuid4().hex)
    custom_parameters: dict[str, str] = field(default_factory=dict)
    received: list[bytes] = field(default_factory=list)

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

    @property
    def received_seconds(self) -> float:
        return sum(len(p) for p in self.received) / SAMPLE_RATE

    async def play(
        self,
        url: str,
        seconds: float = 2.0,
        *,
        headers: dict[str, str] | None = None,
        tail: float = 1.0,
    ) -> None:
        """Connect, stream ``seconds`` of tone in real time, collect what comes back, stop."""
        async with websockets.connect(url, additional_headers=headers or {}) as ws:
            for message in self.start_messages():
                await ws.send(message)
            reader = asyncio.create_task(self._read(ws))
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for i, frame in enumerate(tone_frames(seconds)):
                await ws.send(self.media_message(i, frame))
                delay = t0 + (i + 1) * FRAME_MS / 1000 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await asyncio.sleep(tail)
            await ws.send(self.stop_message())
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, ws: websockets.ClientConnection) -> None:
        async for message in ws:
            data = json.loads(message)
            if data.get("event") == "media" and data.get("streamSid") == self.stream_sid:
                self.received.append(base64.b64decode(data["media"]["payload"]))
