"""Signals, --since and the json-file log writer, without root."""

from __future__ import annotations

import json
import signal

import pytest

from pyctr.errors import UserError
from pyctr.lifecycle import parse_signal, parse_since, parse_time
from pyctr.shim import LOG_LINE_MAX, LogWriter


@pytest.mark.parametrize("text, num", [
    ("9", 9), ("KILL", signal.SIGKILL), ("sigterm", signal.SIGTERM), ("SIGUSR1", signal.SIGUSR1),
    ("RTMIN", signal.SIGRTMIN), ("SIGRTMIN+3", signal.SIGRTMIN + 3), (15, 15)])
def test_signals_as_docker_spells_them(text, num):
    assert parse_signal(text) == num


@pytest.mark.parametrize("text", ["NOPE", "0", "SIGRTMAX+1", "-1", "SIG_IGN", "RTMIN+x", ""])
def test_bad_signals_are_clear_errors(text):
    with pytest.raises(UserError, match="invalid signal"):
        parse_signal(text)


def test_since_accepts_durations_dates_and_unix_times():
    now = 1_800_000_000.0
    assert parse_since("10m", now) == now - 600
    assert parse_since("1h30m", now) == now - 5400
    assert parse_since("1.5s", now) == now - 1.5
    assert parse_since("1700000000", now) == 1_700_000_000
    assert parse_since("2026-11-25T10:00:00Z", now) == parse_time("2026-11-25T10:00:00Z")
    assert parse_since("2026-11-25", now) == parse_time("2026-11-25T00:00:00Z")
    with pytest.raises(UserError, match="--since"):
        parse_since("yesterday", now)


def test_parse_time_keeps_the_fraction():
    assert parse_time("1970-01-01T00:00:01.500000000Z") == pytest.approx(1.5)


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_log_writer_makes_one_record_per_line_as_docker(tmp_path):
    log = LogWriter(tmp_path / "c-json.log")
    log.write("stdout", b"hel")
    log.write("stdout", b"lo\nsecond\nthi")
    log.write("stderr", b"oops\n")
    log.close()  # the end of the streams: the partial line is written too
    recs = _records(tmp_path / "c-json.log")
    assert [(r["stream"], r["log"]) for r in recs] == [
        ("stdout", "hello\n"), ("stdout", "second\n"), ("stderr", "oops\n"), ("stdout", "thi")]
    assert all(r["time"].endswith("Z") and "T" in r["time"] for r in recs)


def test_log_writer_splits_long_lines_and_survives_bad_utf8(tmp_path):
    log = LogWriter(tmp_path / "c-json.log")
    log.write("stdout", b"x" * (LOG_LINE_MAX + 10) + b"\n\xff\xfe\n")
    log.close()
    recs = _records(tmp_path / "c-json.log")
    assert [len(r["log"]) for r in recs[:2]] == [LOG_LINE_MAX, 11]
    assert recs[2]["log"] == "\ufffd\ufffd\n"
