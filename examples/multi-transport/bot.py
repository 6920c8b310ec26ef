"""Audio echo on any transport Pipecat's runner knows: WebRTC, Daily, or a phone line.

Runs offline (no API keys). The same file runs under cattery and under Pipecat's own
development runner: `python bot.py` (then open http://localhost:7860/client).
"""

from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineTask
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.types import RunnerArguments
from pipecat.runner.utils import create_transport
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams

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


async def bot(runner_args: RunnerArguments) -> None:
    transport = await create_transport(runner_args, TRANSPORT_PARAMS)
    task = PipelineTask(Pipeline([transport.input(), AudioEcho(), transport.output()]))

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client) -> None:
        logger.info("Client disconnected")
        await task.cancel()

    await PipelineRunner(handle_sigint=runner_args.handle_sigint).run(task)


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
