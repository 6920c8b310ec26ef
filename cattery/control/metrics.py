"""What the control plane counts and times, in Prometheus' terms, for ``GET /metrics``.

Each app has its own ``CollectorRegistry`` (nothing global: tests run several apps in one
process). Events the control plane sees are counted as they happen (sessions started and
ended, start latency, Session API proxy latency, user-to-bot latency); pool sizes, live
sessions, capacity refusals and failed instances are read from the pools and the
supervisor at scrape time, so they are never out of step with them.

Every series has an ``agent`` label, the agent's key ``ORG/NAME``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from cattery.pools import PoolManager

START_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PROXY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
USER_BOT_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
#: how a session's instance came to be: taken warm, forked on demand, started cold
START_KINDS = ("warm", "forked", "cold")
#: where an instance failed: while starting, idle in the pool, serving a session
CRASH_PHASES = ("start", "idle", "session")


class ControlMetrics:
    """The control plane's metrics. Owned by its ``ControlState``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.sessions_started = Counter(
            "cattery_sessions_started",
            "Sessions dispatched to an instance.",
            ["agent"],
            registry=self.registry,
        )
        self.sessions_ended = Counter(
            "cattery_sessions_ended",
            "Sessions that ended, by end state.",
            ["agent", "end_state"],
            registry=self.registry,
        )
        self.start_seconds = Histogram(
            "cattery_session_start_seconds",
            "From the start request to the bot being called (botStartSeconds), by how the "
            "instance came to be: warm, forked or cold.",
            ["agent", "kind"],
            buckets=START_BUCKETS,
            registry=self.registry,
        )
        self.proxy_seconds = Histogram(
            "cattery_session_api_proxy_seconds",
            "Session API requests: from the request to the instance's response headers.",
            ["agent"],
            buckets=PROXY_BUCKETS,
            registry=self.registry,
        )
        self.user_bot_seconds = Histogram(
            "cattery_user_bot_latency_seconds",
            "From the user stopping speaking to the bot starting to speak, as instances "
            "log it ([pcc-observability] User-bot latency).",
            ["agent"],
            buckets=USER_BOT_BUCKETS,
            registry=self.registry,
        )
        self._session_crashes: dict[str, int] = {}
        self._agent_keys: dict[str, str] = {}  # agent id -> key, for lines that carry ids

    def watch(self, pools: PoolManager, active: Callable[[], Iterable[str]]) -> None:
        """Read pools and live sessions (``active()``: one agent key per live session) at
        every scrape."""
        self.registry.register(_LiveCollector(self, pools, active))

    def session_started(self, agent_id: str, agent_key: str) -> None:
        self._agent_keys[agent_id] = agent_key
        self.sessions_started.labels(agent_key).inc()

    def session_ended(self, agent_key: str, end_state: str) -> None:
        self.sessions_ended.labels(agent_key, end_state).inc()

    def bot_started(self, agent_key: str, kind: str, seconds: float) -> None:
        self.start_seconds.labels(agent_key, kind).observe(seconds)

    def proxied(self, agent_key: str, seconds: float) -> None:
        self.proxy_seconds.labels(agent_key).observe(seconds)

    def session_instance_died(self, agent_key: str) -> None:
        self._session_crashes[agent_key] = self._session_crashes.get(agent_key, 0) + 1

    def user_bot_latencies(self, agent_id: str, values: Iterable[float]) -> None:
        agent_key = self._agent_keys.get(agent_id)
        if agent_key is None:
            return
        for value in values:
            self.user_bot_seconds.labels(agent_key).observe(value)

    def render(self, organization: str | None = None) -> bytes:
        """The text exposition: every agent's series, or only ``organization``'s."""
        if organization is None:
            return generate_latest(self.registry)
        return generate_latest(_OrganizationView(self.registry, f"{organization}/"))


class _LiveCollector(Collector):
    """What the pools and the supervisor hold right now."""

    def __init__(
        self, metrics: ControlMetrics, pools: PoolManager, active: Callable[[], Iterable[str]]
    ) -> None:
        self._metrics = metrics
        self._pools = pools
        self._active = active

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        instances = GaugeMetricFamily(
            "cattery_instances",
            "Instances of an agent, by state: warm (idle, ready), starting, busy.",
            labels=["agent", "state"],
        )
        maximum = GaugeMetricFamily(
            "cattery_instances_max", "An agent's maxAgents.", labels=["agent"]
        )
        refusals = CounterMetricFamily(
            "cattery_capacity_refusals",
            "Starts and calls refused because the agent was at maxAgents (HTTP 429 "
            "PCC-AGENT-AT-CAPACITY, a carrier's WebSocket closed with 1013).",
            labels=["agent"],
        )
        crashes = CounterMetricFamily(
            "cattery_instance_crashes",
            "Instances that failed: while starting, idle in the pool, or serving a session.",
            labels=["agent", "phase"],
        )
        active = GaugeMetricFamily(
            "cattery_sessions_active", "Sessions running now.", labels=["agent"]
        )
        keys = set(self._pools.keys())
        for key in sorted(keys):
            pool = self._pools.get(key)
            if pool is None:
                continue
            stats = pool.stats()
            instances.add_metric([key, "warm"], stats.idle)
            instances.add_metric([key, "starting"], stats.starting)
            instances.add_metric([key, "busy"], stats.busy)
            maximum.add_metric([key], pool.options.max_agents)
            refusals.add_metric([key], pool.counts.capacity_refusals)
            crashes.add_metric([key, "start"], pool.counts.start_failures)
            crashes.add_metric([key, "idle"], pool.counts.idle_deaths)
        session_crashes = dict(self._metrics._session_crashes)
        for key in sorted(keys | set(session_crashes)):
            crashes.add_metric([key, "session"], session_crashes.get(key, 0))
        live: dict[str, int] = dict.fromkeys(keys, 0)
        for key in self._active():
            live[key] = live.get(key, 0) + 1
        for key in sorted(live):
            active.add_metric([key], live[key])
        yield from (instances, maximum, refusals, crashes, active)


class _OrganizationView:
    """A registry's series whose ``agent`` label is one organization's."""

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        self._registry = registry
        self._prefix = prefix

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            kept = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            kept.samples = [s for s in metric.samples if self._mine(s.labels)]
            yield kept

    def _mine(self, labels: dict[str, Any]) -> bool:
        agent = labels.get("agent")
        return agent is None or str(agent).startswith(self._prefix)
