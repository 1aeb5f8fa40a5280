"""Live progress and tables on a terminal and off it."""
from __future__ import annotations

import io
import os

import pytest

from federation.cli import render
from federation.cli.progress import CLEAR_LINE, StatusLine, array_line, job_line, training_line
from federation.results import AttemptInfo, JobStatus, RoundInfo, TrainingStatus


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def status(state: str, site: str = "", message: str = "", attempts: int = 0) -> JobStatus:
    return JobStatus("j-1", "x", "t", state, site, message, 0.0, 0.0,
                     tuple(AttemptInfo(n, site, state, "", "") for n in range(1, attempts + 1)))


def test_a_job_goes_pending_and_why_then_placed_running_and_done():
    assert job_line(status("pending", message="waiting: no site can take it now (2 no-free-capacity)")) == \
        "j-1: pending: waiting: no site can take it now (2 no-free-capacity)"
    assert job_line(status("placed", "eu-west", attempts=1)) == "j-1: placed at eu-west"
    assert job_line(status("running", "eu-west", attempts=2)) == "j-1: running at eu-west (attempt 2)"
    assert job_line(status("succeeded", "eu-west", "Job finished", 1)) == "j-1: succeeded at eu-west: Job finished"
    assert array_line([status("running"), status("running"), status("succeeded")]) == "2 running, 1 succeeded"


def test_on_a_terminal_the_line_is_rewritten_in_place_and_cut_to_its_width(monkeypatch):
    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback=None: os.terminal_size((40, 24)))
    out = Terminal()
    line = StatusLine(out)
    line.show("j-1: pending")
    line.show("j-1: pending")   # unchanged: not written again
    line.show("j-1: running at a site with a very long name indeed, longer than the terminal")
    line.end()
    written = out.getvalue()
    assert written.count("\r") == 2 and written.count(CLEAR_LINE) == 2 and written.endswith("\n")
    assert all(len(part.replace(CLEAR_LINE, "")) <= 39 for part in written.strip().split("\r") if part)


def test_off_a_terminal_each_change_is_a_plain_line_and_nothing_drives_the_terminal():
    out = io.StringIO()
    line = StatusLine(out)
    for text in ("j-1: pending", "j-1: pending", "j-1: running at \x1b]0;owned\x07eu", "j-1: failed: a\nb"):
        line.show(text)
    line.end()
    assert out.getvalue().splitlines() == ["j-1: pending", "j-1: running at \\x1b]0;owned\\x07eu", "j-1: failed: a b"]


def test_a_training_line_says_its_round_and_latest_metrics():
    done = RoundInfo(2, 1, "done", ("a", "b"), "a", ("a", "b"), (), 0, {"loss": 0.41234, "accuracy": 0.875}, 0, 1)
    now = RoundInfo(3, 1, "training", ("a", "b", "c"), "", (), (), 0, {}, 0, 0)
    t = TrainingStatus("t-1", "fl", "t", "running", 3, 10, "", (done, now))
    assert training_line(t) == "t-1: running, round 3 of 10; training with 3 sites; loss 0.4123; accuracy 0.875"


@pytest.mark.parametrize("tty, columns", [(True, 60), (False, 0)])
def test_tables_fit_a_terminal_and_keep_everything_in_a_file(monkeypatch, tty, columns):
    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback=None: os.terminal_size((60, 24)))
    out = Terminal() if tty else io.StringIO()
    message = "no site can take it (1 jurisdiction, 1 data-elsewhere, 1 offline, 1 cordoned, 3 price)"
    render.table(["ID", "STATE", "MESSAGE"], [["j-1", "pending", message]], out)
    lines = out.getvalue().splitlines()
    if tty:
        assert all(len(line) <= columns for line in lines) and lines[1].endswith("…")
    else:
        assert lines[1].endswith(message)
