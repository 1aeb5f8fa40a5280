"""`fedctl jobs --watch` as a user's shell runs it, against a real federation over mutual TLS: a line
for each job when it appears and whenever it changes (JSON lines with --format json), the table
redrawn on a terminal, and Ctrl-C ends it with status 0."""
from __future__ import annotations

import itertools
import json
import os
import pty
import queue
import signal
import subprocess
import sys
import threading

from federation.cli.jobs import STATES
from federation.v1 import federation_pb2 as pb
from tests.conftest import make_spec
from tests.integration.harness import run_on
from tests.waiting import wait_for


class Watcher:
    """`fedctl jobs --watch` in a process of its own; its output read line by line as it comes."""

    def __init__(self, federation, *extra: str, tty: bool = False):
        pki = federation.pki
        argv = [sys.executable, "-m", "federation.cli.main", "jobs", "--watch", "--interval", "0.1",
                "--address", federation.address, "--ca", str(pki["ca"].cert), "--cert", str(pki["admin"].cert),
                "--key", str(pki["admin"].key), *extra]
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        if tty:
            main, child = pty.openpty()
            self.proc = subprocess.Popen(argv, stdout=child, stderr=subprocess.STDOUT)
            os.close(child)
            stream = os.fdopen(main, "r", errors="replace")
        else:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            stream = self.proc.stdout
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        try:
            for line in stream:
                self.lines.put(line)
        except OSError:   # a pty reads EIO once the child has gone
            pass

    def until(self, found, what: str) -> str:
        def look() -> str | None:
            while not self.lines.empty():
                line = self.lines.get()
                self.seen.append(line)
                if found(line):
                    return line
            return None
        return wait_for(look, 15, f"{what} in {self.seen[-5:]}")

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=15)


def test_watch_prints_a_line_per_change_and_ends_cleanly_on_ctrl_c(federation, client, eu_agent):
    first = client.submit(make_spec("watched-1", resources={"cpus": 1}))
    watcher = Watcher(federation)
    try:
        watcher.until(lambda line: first.id in line, "the job there before the watch")
        run_on(eu_agent, first)
        watcher.until(lambda line: first.id in line and "running" in line and "eu-west" in line, "its start")
        second = client.submit(make_spec("watched-2", resources={"cpus": 1}))
        watcher.until(lambda line: second.id in line, "a job submitted during the watch")
        eu_agent.report([pb.AttemptStatus(job_id=first.id, attempt=1, state=pb.ATTEMPT_STATE_SUCCEEDED)])
        watcher.until(lambda line: first.id in line and "succeeded" in line, "its end")
        assert watcher.interrupt() == 0
    finally:
        watcher.proc.kill()
    mine = [line for line in watcher.seen if first.id in line]
    states = [line.split("  ")[3] for line in mine]   # ID  NAME  TENANT  STATE  SITE  MESSAGE
    assert states[-1] == "succeeded" and "running" in states, mine
    assert states == sorted(states, key=STATES.index), f"in the order they happened: {mine}"
    assert all(a != b for a, b in itertools.pairwise(mine)), f"a line only when the job changes: {mine}"


def test_watch_in_json_gives_one_object_a_line(federation, client, eu_agent):
    job = client.submit(make_spec("watched-json", resources={"cpus": 1}))
    watcher = Watcher(federation, "--format", "json")
    try:
        line = watcher.until(lambda line: job.id in line, "the job")
        run_on(eu_agent, job)
        running = watcher.until(lambda line: job.id in line and '"running"' in line, "its start")
        assert watcher.interrupt() == 0
    finally:
        watcher.proc.kill()
    assert json.loads(line)["id"] == job.id
    assert (json.loads(running)["state"], json.loads(running)["site"]) == ("running", "eu-west")


def test_watch_on_a_terminal_redraws_the_table(federation, client):
    job = client.submit(make_spec("watched-tty", resources={"cpus": 1}))
    watcher = Watcher(federation, tty=True)
    try:
        watcher.until(lambda line: "\x1b[H\x1b[2J" in line, "the screen cleared")
        watcher.until(lambda line: job.id in line, "the job's row")
        watcher.until(lambda line: "\x1b[H\x1b[2J" in line, "the screen cleared again")
        assert watcher.interrupt() == 0
    finally:
        watcher.proc.kill()
