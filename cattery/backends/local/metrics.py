"""Sampling the instances' CPU and memory for the control plane's metrics.

Reading ``/proc`` (``smaps_rollup`` for USS above all) takes a while per process, and the
control plane's event loop also carries every start, proxied request and bridged call.
So one sampler per backend reads all its instances in one thread-pool call per round and
hands the samples to the sink back on the loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import psutil
from loguru import logger

from cattery.backends.base import MetricsSink
from cattery.backends.local.proc import ProcessRef


def sample(proc: psutil.Process) -> tuple[float, int]:
    """``(cpu millicores since the previous call, memory bytes)``: USS, else RSS."""
    cpu_millicores = proc.cpu_percent(interval=None) * 10.0  # 100 % of one core = 1000 m
    try:
        memory = int(proc.memory_full_info().uss)
    except (psutil.AccessDenied, AttributeError):
        memory = int(proc.memory_info().rss)
    return cpu_millicores, memory


@dataclass(eq=False)
class _Watched:
    ref: ProcessRef
    #: set in the thread on the first round: psutil's view, its CPU window started
    proc: psutil.Process | None = None
    gone: bool = False


class MetricsSampler:
    """Samples every instance of one backend each ``interval`` seconds.

    Owned by a ``LocalBackend``, which adds each instance it owns and removes it when the
    handle is let go; owns its task. The first round after an instance is added starts
    its CPU window; each later round passes a sample to ``sink``.
    """

    def __init__(self, sink: MetricsSink, interval: float) -> None:
        self._sink = sink
        self._interval = interval
        self._watched: dict[str, _Watched] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, instance_id: str, ref: ProcessRef) -> None:
        self._watched[instance_id] = _Watched(ref)
        if self._task is None:
            self._task = asyncio.create_task(self._sample_task(), name="metrics_task")

    def remove(self, instance_id: str) -> None:
        self._watched.pop(instance_id, None)

    async def aclose(self) -> None:
        """Stop sampling. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._watched.clear()

    async def _sample_task(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sample_round()
            except Exception as exc:
                logger.opt(exception=exc).error(f"Sampling instances failed: {exc!r}")

    async def sample_round(self) -> None:
        """One round: the exits checked here, ``/proc`` read in one worker thread."""
        for instance_id, watched in list(self._watched.items()):
            if watched.gone or watched.ref.exited:  # a reused pid is never read
                del self._watched[instance_id]
        batch = list(self._watched.items())
        if not batch:
            return
        samples = await asyncio.to_thread(_read_all, batch)
        for instance_id, cpu, memory in samples:
            if instance_id not in self._watched:
                continue  # let go while its sample was being read
            try:
                self._sink(instance_id, cpu, memory)
            except Exception as exc:
                logger.opt(exception=exc).error(f"Metrics sink failed: {exc!r}")


def _read_all(batch: list[tuple[str, _Watched]]) -> list[tuple[str, float, int]]:
    """In a worker thread: a sample of each instance whose CPU window was started."""
    samples = []
    for instance_id, watched in batch:
        try:
            if watched.proc is None:
                proc = watched.ref.psutil_process()
                if proc is None:
                    watched.gone = True
                else:
                    proc.cpu_percent(interval=None)  # starts the first measuring window
                    watched.proc = proc
                continue
            cpu, memory = sample(watched.proc)
        except psutil.Error:
            watched.gone = True  # gone between the check and the sample
            continue
        samples.append((instance_id, cpu, memory))
    return samples
