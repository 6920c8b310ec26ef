"""Test bot: one short pipeline with Pipecat's tracing on (``enable_tracing=True``).

The pipeline starts and ends at once; its ``conversation`` span is what Pipecat traces.
"""

from pipecat.frames.frames import EndFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineTask
from pipecat.processors.frame_processor import FrameProcessor


async def bot(runner_args) -> None:
    task = PipelineTask(
        Pipeline([FrameProcessor()]),
        enable_tracing=True,
        conversation_id=runner_args.session_id,
    )
    await task.queue_frame(EndFrame())
    await PipelineRunner(handle_sigint=False).run(task)
