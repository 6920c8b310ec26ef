"""The start journal on its own: lines appended, read back, forgotten, kept bounded."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cattery.store import journal as journal_module
from cattery.store.journal import StartJournal, StartRecord


def record(session_id: str, **instance: object) -> StartRecord:
    return StartRecord(
        session_id=session_id,
        organization_id="org",
        agent_id="agent",
        deployment_id="dep",
        instance_id="inst-" + session_id,
        transport="webrtc",
        cold_start=False,
        created_at=datetime(2026, 11, 30, 18, 0, tzinfo=UTC),
        instance=dict(instance) or None,
    )


def test_appended_starts_read_back_whole_and_the_file_is_private(tmp_path: Path) -> None:
    journal = StartJournal(tmp_path / "starts.journal")
    journal.append(record("a", address="127.0.0.1:9000", token_encrypted="gAAA..."))
    journal.append(record("b"))

    assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600
    assert StartJournal(journal.path).records() == [
        record("a", address="127.0.0.1:9000", token_encrypted="gAAA..."),
        record("b"),
    ]


def test_the_file_is_emptied_once_no_start_is_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "TRUNCATE_BYTES", 0)
    journal = StartJournal(tmp_path / "starts.journal")
    journal.append(record("a"))
    journal.append(record("b"))
    journal.forget("a")
    assert journal.pending() == ["b"]
    assert [r.session_id for r in journal.records()] == ["a", "b"]  # b still pending
    journal.forget("b")
    assert journal.path.stat().st_size == 0
    journal.append(record("c"))  # appends go to the new end
    assert [r.session_id for r in journal.records()] == ["c"]


def test_a_file_grown_past_its_bound_keeps_only_the_pending_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "COMPACT_BYTES", 600)
    journal = StartJournal(tmp_path / "starts.journal")
    journal.append(record("held"))  # never committed: stays
    for n in range(10):
        journal.append(record(f"s{n}"))
        journal.forget(f"s{n}")
    assert journal.path.stat().st_size < 1200
    journal.append(record("next"))
    assert [r.session_id for r in journal.records()] == ["held", "next"]
    assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600


def test_a_small_file_is_kept_until_it_is_worth_truncating(tmp_path: Path) -> None:
    journal = StartJournal(tmp_path / "starts.journal")
    journal.append(record("a"))
    journal.forget("a")
    assert journal.pending() == []
    assert [r.session_id for r in journal.records()] == ["a"]  # committed: skipped by replay


def test_an_unreadable_line_is_skipped_and_the_rest_replayed(tmp_path: Path) -> None:
    path = tmp_path / "starts.journal"
    path.write_bytes(record("a").line() + b'{"session_id": "torn\n' + record("b").line())
    assert [r.session_id for r in StartJournal(path).records()] == ["a", "b"]


def test_clear_empties_what_an_earlier_process_left(tmp_path: Path) -> None:
    path = tmp_path / "starts.journal"
    path.write_bytes(record("a").line())
    journal = StartJournal(path)
    assert [r.session_id for r in journal.records()] == ["a"]
    journal.clear()
    journal.close()
    assert path.read_bytes() == b""
