"""A text bot you talk to through its own Session API routes.

The routes are added to `pipecatcloud_system.app`, so they answer at
`/v1/public/{agent}/sessions/{session_id}/messages` once the session runs:

    POST /messages {"text": "hi"}   -> {"reply": "You said: hi"}
    GET  /messages                  -> the conversation so far
    POST /end                       -> ends the session

Runs offline (no API keys): the "model" is a Pipecat processor that answers in kind.
"""

import asyncio

from fastapi import HTTPException
from loguru import logger
from pipecat.frames.frames import EndFrame, Frame, TextFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.types import RunnerArguments
from pipecat.workers.runner import WorkerRunner
from pydantic import BaseModel

from pipecatcloud_system import app

REPLY_TIMEOUT_SECONDS = 10


class Message(BaseModel):
    text: str


class Conversation:
    """The running session's pipeline task and what has been said so far."""

    def __init__(self, greeting: str) -> None:
        self.greeting = greeting
        self.history: list[dict[str, str]] = []
        self.replies: asyncio.Queue[str] = asyncio.Queue()
        self.task: PipelineWorker | None = None


current: Conversation | None = None


class Replier(FrameProcessor):
    """Answers every user text with a reply of its own."""

    def __init__(self, conversation: Conversation) -> None:
        super().__init__()
        self._conversation = conversation

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TextFrame):
            frame = TextFrame(f"{self._conversation.greeting}You said: {frame.text}")
        await self.push_frame(frame, direction)


class ReplyCollector(FrameProcessor):
    """Hands replies at the end of the pipeline to the waiting route."""

    def __init__(self, conversation: Conversation) -> None:
        super().__init__()
        self._conversation = conversation

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TextFrame):
            await self._conversation.replies.put(frame.text)
        await self.push_frame(frame, direction)


def _running() -> Conversation:
    if current is None or current.task is None:
        raise HTTPException(status_code=409, detail="No session is running")
    return current


@app.post("/messages")
async def send_message(message: Message) -> dict[str, str]:
    conversation = _running()
    conversation.history.append({"role": "user", "text": message.text})
    await conversation.task.queue_frame(TextFrame(message.text))
    reply = await asyncio.wait_for(conversation.replies.get(), REPLY_TIMEOUT_SECONDS)
    conversation.history.append({"role": "bot", "text": reply})
    return {"reply": reply}


@app.get("/messages")
async def list_messages() -> dict[str, list[dict[str, str]]]:
    return {"messages": _running().history}


@app.post("/end")
async def end_session() -> dict[str, str]:
    await _running().task.queue_frame(EndFrame())
    return {"status": "ending"}


async def bot(runner_args: RunnerArguments) -> None:
    global current
    body = runner_args.body or {}
    name = body.get("name") if isinstance(body, dict) else None
    conversation = Conversation(f"Hello {name}. " if name else "")
    conversation.task = PipelineWorker(
        Pipeline([Replier(conversation), ReplyCollector(conversation)]),
        idle_timeout_secs=None,
    )
    current = conversation
    logger.info("Text session ready for messages")
    try:
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(conversation.task)
        await runner.run()
    finally:
        current = None
