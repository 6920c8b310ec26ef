"""A bot that crashes: its session records agent_error, its traceback is in its logs, and the
agent's other sessions carry on."""

from __future__ import annotations

from pathlib import Path

from tests.integration.control.helpers import (
    ON_POSTGRESQL,
    get_session,
    logs,
    start_session,
    wait_ended,
)
from tests.support.control import CloudCLI, ControlPlane
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

PROBE = TEST_BOTS / "probe"
CRASH_MESSAGE = "probe bot crashed on purpose"


@ON_POSTGRESQL
def test_crash_is_recorded_and_isolated(
    control: ControlPlane, cli: CloudCLI, tmp_path: Path
) -> None:
    control.deploy("probe", PROBE, autoScaling={"minAgents": 1, "maxAgents": 3})
    key = control.public_key()
    gate = tmp_path / "gate"
    other = start_session(control, key, "probe", {"action": "until", "path": str(gate)})
    crashed = start_session(control, key, "probe", {"action": "crash"})

    assert wait_ended(control, "probe", crashed)["endState"] == "agent_error"
    assert get_session(control, "probe", other)["endedAt"] is None

    # The end state is recorded after the instance's last lines: they are there already.
    mine = logs(control, "probe", crashed)
    text = "\n".join(entry["log"] for entry in mine)
    assert "Traceback" in text and CRASH_MESSAGE in text, text
    assert {entry["sessionId"] for entry in mine} == {crashed}
    for entry in logs(control, "probe"):
        if "Traceback" in entry["log"] or CRASH_MESSAGE in entry["log"]:
            assert entry["sessionId"] == crashed, entry
    shown = cli.run("agent", "logs", "probe", "-s", crashed, "-n", "1000").stdout
    assert "Traceback" in shown and CRASH_MESSAGE in shown and crashed in shown, shown

    # The running session's CPU and memory are sampled; times are epoch seconds, as the CLI
    # subtracts them.
    def sampled() -> dict | None:
        metrics = get_session(control, "probe", other)["resourceMetrics"]
        return metrics if metrics["sampleCount"] >= 2 else None

    metrics = wait_for(sampled, what="two resource samples of the running session")
    times = [point["t"] for point in metrics["timeseries"]]
    assert all(isinstance(t, int) for t in times) and times == sorted(times), times

    gate.touch()
    assert wait_ended(control, "probe", other)["endState"] == "completed"
    assert CRASH_MESSAGE not in "\n".join(entry["log"] for entry in logs(control, "probe", other))
