"""Test bot: a voice turn over a Twilio media stream, offline.

Silero VAD hears the caller; the bot greets with a short tone when the caller connects and
answers each utterance with one once the caller stops speaking. That is a greeting and a
turn: what Pipecat's latency observers measure (first bot speech, user-to-bot latency).
"""

import numpy as np
from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import (
    Frame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)

SAMPLE_RATE = 8000


def tone(seconds: float = 0.3, freq: float = 660.0) -> list[Frame]:
    """A spoken answer, as a TTS service would send it: started, audio, stopped."""
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    pcm = (6000 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()
    audio = TTSAudioRawFrame(audio=pcm, sample_rate=SAMPLE_RATE, num_channels=1)
    return [TTSStartedFrame(), audio, TTSStoppedFrame()]


class AnswerEachTurn(FrameProcessor):
    """Answers with a tone each time the caller stops speaking."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            logger.info("Caller stopped speaking; answering")
            for answer in tone():
                await self.push_frame(answer)


async def bot(runner_args) -> None:
    _, call = await parse_telephony_websocket(runner_args.websocket)
    serializer = TwilioFrameSerializer(
        stream_sid=call.stream_id,
        call_sid=call.call_id,
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(
        websocket=runner_args.websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
        ),
    )
    task = PipelineTask(
        Pipeline(
            [
                transport.input(),
                VADProcessor(vad_analyzer=SileroVADAnalyzer()),
                AnswerEachTurn(),
                transport.output(),
            ]
        ),
        params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE, audio_out_sample_rate=SAMPLE_RATE),
    )

    @transport.event_handler("on_client_connected")
    async def on_client_connected(transport, client) -> None:
        await task.queue_frames(tone())

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client) -> None:
        await task.cancel()

    await PipelineRunner(handle_sigint=False).run(task)
