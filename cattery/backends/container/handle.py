"""One instance of the container backend: a container serving the ``/bot`` contract.

A thread follows the container's log stream (lines go to the sink as they come) and, when
the stream ends, reads the exit code: the SDK blocks, so no event-loop task waits on it.
``aclose`` stops and removes the container; nothing is left on the engine.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

from docker.errors import DockerException, NotFound
from docker.models.containers import Container
from loguru import logger

from cattery.backends.base import (
    InstanceFailed,
    InstanceSpec,
    InstanceStartTimeout,
    InstanceStatus,
    LineSink,
    MetricsSink,
)
from cattery.backends.container.engine import Engine
from cattery.backends.handles import TERMINAL, ExitEventHandle, Probe, probe_livez
from cattery.tasks import OwnedTasks

LAST_LINES = 20


class ContainerInstanceHandle(ExitEventHandle):
    """A container on the engine. Owned by one pool (or the backend)."""

    def __init__(
        self,
        *,
        instance_id: str,
        spec: InstanceSpec,
        engine: Engine,
        container: Container,
        port: int,
        host: str,
        token: str,
        line_sink: LineSink,
        metrics_sink: MetricsSink,
        sample_interval: float,
        on_closed: Any = None,
    ) -> None:
        super().__init__(instance_id=instance_id, spec=spec, token=token, on_closed=on_closed)
        self.container = container
        self._engine = engine
        self._port = port
        self._host = host
        self._line_sink = line_sink
        self._last_lines: deque[str] = deque(maxlen=LAST_LINES)
        self._loop = asyncio.get_running_loop()
        self._tasks = OwnedTasks(f"instance {instance_id}")
        self._tasks.spawn(self._sample(metrics_sink, sample_interval), "metrics_task")
        self._follower = threading.Thread(
            target=self._follow, name=f"logs-{instance_id}", daemon=True
        )
        self._follower.start()

    # -- the InstanceHandle protocol ---------------------------------------------------

    @property
    def address(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def pid(self) -> int | None:
        return None  # in the container's own pid namespace; the engine owns the process

    def _placement(self) -> dict[str, str]:
        return {"container": self.container.id[:12]}

    async def _until_ready(self, timeout: float) -> None:
        """Poll ``/livez`` until it answers; the container exiting or ``timeout`` fails it.

        A pipecat-base image has no ``/livez``: any HTTP answer from its server below 500
        means it is up, as Pipecat Cloud's own probe of the port does.
        """
        probe = await probe_livez(
            self.address, timeout, exited=self._exited.is_set, accept=lambda code: code < 500
        )
        if probe is Probe.EXITED:
            self._fail_start(f"exited with code {self._exit_code} before it was ready")
        if probe is Probe.TIMED_OUT:
            self.kill()
            self._fail_start(f"did not answer /livez within {timeout:g} s", InstanceStartTimeout)

    async def drain(self, timeout: float) -> None:
        """SIGTERM to the container; wait up to ``timeout`` s for it to finish its session."""
        if self._exited.is_set():
            return
        self._stop_requested = True
        await self._signal("SIGTERM")
        self._mark_draining()
        await self._wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL the container, without grace (the kill runs in the background)."""
        self._stop_requested = True
        if not self._exited.is_set() and not self._tasks.closed:
            self._tasks.spawn(self._signal("SIGKILL"), "kill_task")

    # -- internals -------------------------------------------------------------------

    async def _close(self, grace: float) -> None:
        with logger.contextualize(**self.log_context()):
            try:
                if not self._exited.is_set():
                    self._stop_requested = True
                    self._mark_draining()
                    try:
                        await self._engine.call(self.container.stop, timeout=max(1, int(grace)))
                    except DockerException as exc:
                        logger.warning(f"Stopping the container failed: {exc}")
                    if not await self._wait_exit(grace + 10.0):
                        logger.error("Container still running after stop; removing it by force")
                await self._remove()
                await asyncio.to_thread(self._follower.join, 10.0)
            finally:
                await self._tasks.aclose()
                self._closed()

    async def _remove(self) -> None:
        try:
            await self._engine.call(self.container.remove, force=True)
        except NotFound:
            pass
        except DockerException as exc:
            logger.error(f"Removing container {self.container.id[:12]} failed: {exc}")

    async def _signal(self, name: str) -> None:
        try:
            await self._engine.call(self.container.kill, signal=name)
        except DockerException as exc:  # already gone, most likely
            logger.debug(f"{name} to the container: {exc}")

    def _follow(self) -> None:
        """Thread: hand each log line to the sink, then record the exit code."""
        pending = b""
        try:
            for chunk in self.container.logs(stream=True, follow=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self._emit(raw)
            if pending:
                self._emit(pending)
        except DockerException as exc:
            logger.debug(f"Log stream of {self.id} ended: {exc}")
        code: int | None
        try:
            code = int(self.container.wait(timeout=30).get("StatusCode", -1))
        except Exception:
            code = None
        self._to_loop(self._on_exit, code)

    def _emit(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        self._last_lines.append(line)
        self._to_loop(self._line_sink, self.id, line)

    def _to_loop(self, fn: Any, *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the control plane has gone
            pass

    def _on_exit(self, code: int | None) -> None:
        self._exit_code = code
        self._exited.set()
        self._settle_exit(clean=code in (None, 0))
        logger.bind(**self.log_context()).debug(f"Container exited with code {code}")

    async def _sample(self, sink: MetricsSink, interval: float) -> None:
        """CPU (millicores, from the engine's counters between two samples) and memory."""
        previous: tuple[float, float] | None = None
        while not self._exited.is_set():
            await asyncio.sleep(interval)
            try:
                stats = await self._engine.call(self.container.stats, stream=False)
            except Exception:
                continue
            usage = float(stats.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage", 0))
            now = self._loop.time()
            memory = int(stats.get("memory_stats", {}).get("usage", 0) or 0)
            if previous is not None and now > previous[1]:
                millicores = max(0.0, (usage - previous[0]) / 1e9 / (now - previous[1]) * 1000)
                sink(self.id, millicores, memory)
            previous = (usage, now)

    def _fail_start(self, reason: str, error: type[InstanceFailed] = InstanceFailed) -> None:
        if self._status not in TERMINAL:
            self._set_status(InstanceStatus.FAILED)
        lines = "\n".join(self._last_lines)
        message = f"instance {self.id} of {self.spec.agent_key} {reason}"
        raise error(
            f"{message}; last log lines:\n{lines}" if lines else message,
            instance_id=self.id,
            output=lines,
        )

    def __repr__(self) -> str:
        return f"<ContainerInstanceHandle {self.id} {self._status} {self.container.id[:12]}>"
