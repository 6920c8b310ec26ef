"""Sampling an instance's CPU and memory for the control plane's metrics."""

from __future__ import annotations

import asyncio

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


async def sample_metrics(
    instance_id: str, ref: ProcessRef, sink: MetricsSink, interval: float
) -> None:
    """Pass a sample to ``sink`` every ``interval`` seconds until the process is gone."""
    proc = ref.psutil_process()
    if proc is None:
        return
    try:
        proc.cpu_percent(interval=None)  # starts the first measuring window
    except psutil.Error:
        return
    while True:
        await asyncio.sleep(interval)
        if ref.exited:
            return
        try:
            cpu, memory = sample(proc)
        except psutil.Error:
            return  # gone between the check and the sample
        try:
            sink(instance_id, cpu, memory)
        except Exception as exc:
            logger.opt(exception=exc).error(f"Metrics sink failed: {exc!r}")
