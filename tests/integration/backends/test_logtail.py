"""Following a log file: complete lines only, a resumable offset, nothing lost at the end."""

from __future__ import annotations

from pathlib import Path

from cattery.backends.local.logtail import MAX_LINE_BYTES, LogTail


def tail_of(path: Path, offset: int = 0) -> tuple[LogTail, list[str]]:
    lines: list[str] = []
    return LogTail("inst_t", path, lambda _, line: lines.append(line), offset=offset), lines


def test_partial_lines_wait_for_their_newline(tmp_path: Path) -> None:
    path = tmp_path / "i.log"
    tail, lines = tail_of(path)
    assert tail.read_available() == 0  # no file yet
    path.write_bytes(b"first\r\nsec")
    tail.read_available()
    assert lines == ["first"] and tail.offset == len(b"first\r\n")
    with path.open("ab") as f:
        f.write("ond \u00e9\nthi".encode())
    tail.read_available()
    assert lines == ["first", "second \u00e9"]
    tail.read_available(final=True)  # the writer is gone: the last partial line counts
    assert lines == ["first", "second \u00e9", "thi"]
    assert tail.offset == path.stat().st_size


def test_a_new_tail_resumes_at_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "i.log"
    path.write_bytes(b"one\ntwo\nthr")
    first, _ = tail_of(path)
    first.read_available()
    with path.open("ab") as f:
        f.write(b"ee\nfour\n")
    second, lines = tail_of(path, offset=first.offset)
    second.read_available()
    assert lines == ["three", "four"]


def test_an_endless_line_is_handed_over_in_pieces(tmp_path: Path) -> None:
    path = tmp_path / "i.log"
    path.write_bytes(b"x" * (MAX_LINE_BYTES + 10))
    tail, lines = tail_of(path)
    tail.read_available()
    assert len(lines) == 1 and len(lines[0]) == MAX_LINE_BYTES + 10


def test_a_failing_sink_does_not_stop_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "i.log"
    path.write_bytes(b"a\nb\n")
    seen: list[str] = []

    def sink(_: str, line: str) -> None:
        seen.append(line)
        raise RuntimeError("sink down")

    tail = LogTail("inst_t", path, sink)
    assert tail.read_available() == 2
    assert seen == ["a", "b"] and tail.offset == 4
