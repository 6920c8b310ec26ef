"""Audio echo on any transport Pipecat's runner knows: WebRTC, Daily, or a phone line.

Runs offline (no API keys). The same file runs under cattery and under Pipecat's own
development runner: `python bot.py` (then open http://localhost:7860/client).
"""

import os

from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.types import RunnerArguments, WebSocketRunnerArguments
from pipecat.runner.utils import create_transport, parse_telephony_websocket
from pipecat.serializers.plivo import PlivoFrameSerializer
from pipecat.serializers.telnyx import TelnyxFrameSerializer
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

try:
    from pipecat.transports.daily.transport import DailyParams
except ImportError:  # Daily's SDK is optional
    DailyParams = None


def _audio(params_class):
    return lambda: params_class(audio_in_enabled=True, audio_out_enabled=True)


TRANSPORT_PARAMS = {
    "webrtc": _audio(TransportParams),
    "twilio": _audio(FastAPIWebsocketParams),
    "telnyx": _audio(FastAPIWebsocketParams),
    "plivo": _audio(FastAPIWebsocketParams),
    "exotel": _audio(FastAPIWebsocketParams),
}
if DailyParams is not None:
    TRANSPORT_PARAMS["daily"] = _audio(DailyParams)


class AudioEcho(FrameProcessor):
    """Turns every input audio frame into an output audio frame."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            frame = OutputAudioRawFrame(
                audio=frame.audio, sample_rate=frame.sample_rate, num_channels=frame.num_channels
            )
        await self.push_frame(frame, direction)


#: a carrier's REST API key: with it, the call is hung up when the bot ends (Pipecat's default)
CARRIER_KEYS = {
    "twilio": "TWILIO_ACCOUNT_SID",
    "telnyx": "TELNYX_API_KEY",
    "plivo": "PLIVO_AUTH_ID",
}


async def _transport(runner_args: RunnerArguments):
    """``create_transport``'s, except a phone call whose carrier's API key is not set: its
    serializer does not hang up (that calls the carrier's REST API), so this runs offline."""
    websocket = getattr(runner_args, "websocket", None)
    if (
        isinstance(runner_args, WebSocketRunnerArguments)
        and runner_args.transport_type != "websocket"
    ):
        carrier, call = await parse_telephony_websocket(websocket)  # cached for create_transport
        if carrier in CARRIER_KEYS and not os.getenv(CARRIER_KEYS[carrier]):
            return _offline_call(websocket, carrier, call)
    return await create_transport(runner_args, TRANSPORT_PARAMS)


def _offline_call(websocket, carrier: str, call) -> FastAPIWebsocketTransport:
    if carrier == "twilio":
        params = TwilioFrameSerializer.InputParams(auto_hang_up=False)
        serializer = TwilioFrameSerializer(call["stream_id"], call["call_id"], params=params)
    elif carrier == "telnyx":
        serializer = TelnyxFrameSerializer(
            call["stream_id"],
            outbound_encoding=call["outbound_encoding"],
            inbound_encoding="PCMU",
            params=TelnyxFrameSerializer.InputParams(auto_hang_up=False),
        )
    else:
        params = PlivoFrameSerializer.InputParams(auto_hang_up=False)
        serializer = PlivoFrameSerializer(call["stream_id"], call["call_id"], params=params)
    params = TRANSPORT_PARAMS[carrier]()
    params.serializer = serializer
    return FastAPIWebsocketTransport(websocket=websocket, params=params)


async def bot(runner_args: RunnerArguments) -> None:
    transport = await _transport(runner_args)
    task = PipelineWorker(Pipeline([transport.input(), AudioEcho(), transport.output()]))

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client) -> None:
        logger.info("Client disconnected")
        await task.cancel()

    runner = WorkerRunner(handle_sigint=runner_args.handle_sigint)
    await runner.add_workers(task)
    await runner.run()


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
