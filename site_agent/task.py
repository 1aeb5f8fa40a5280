"""One attempt on the task path, as the Ray task that runs it (`site_agent.runner` submits it).

The task starts the attempt's command in a process group of its own and is its guard: it stops the
group (SIGTERM, then SIGKILL after a grace) when Ray cancels the task, and, like `site_agent.guard`
on the Ray-job path, when the agent's lease has lapsed past GUARD_AT (exit FENCED_EXIT, with a
`fenced:` line in the log). Each job also gets a watcher, a small process outside Ray's reach, that
stops the group if the task's worker dies: Ray kills the workers of a runner that died, and a job
left running unseen would run again elsewhere beside itself.
What is left of the group when the command ends is stopped too: it would hold nothing Ray counts.
A training's step or aggregator is handed to a warm worker instead (`site_agent.warm`), which the
task guards the same way: cancelled or fenced, the worker's whole group is stopped.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from site_agent import warm
from site_agent.guard import FENCED, FENCED_EXIT, due

CHECK_S = 0.1
FLUSH_S, FLUSH_BYTES = 0.2, 64 << 10
TAIL = 2000
# The watcher, in sh (a millisecond to start, where Python takes ten): backgrounded out of the shell
# Ray would kill with the worker (Ray kills a worker's direct children on its way out), it stops the
# group once the worker (pid and start time, field 22 of /proc/PID/stat) is gone, and ends with it.
WATCHER = """
W=$1 S=$2 G=$3 T=$4
alive() { read -r st < /proc/$W/stat || return 1; set -- ${st##*) }; [ "${20}" = "$S" ]; }
( trap '' HUP INT
  while kill -s 0 -- -$G 2>/dev/null; do
    if ! alive 2>/dev/null; then kill -s TERM -- -$G; sleep $T; kill -s KILL -- -$G; exit; fi
    sleep 0.25
  done ) </dev/null >/dev/null 2>&1 &
"""


def starttime(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


def grace_s() -> float:
    return float(os.environ.get("RAY_JOB_STOP_WAIT_TIME_S", "3"))   # the site's stop_grace_s, as for Ray jobs


def run_attempt(sid: str, command: str, env: dict[str, str], sink: Any, gcs: str) -> tuple[int, bytes]:
    """Run the attempt's command, its output streamed to `sink` in order: (exit code, log tail)."""
    sink.started.remote(sid)
    lease_file, owner = env.pop("FEDCTL_LEASE_FILE", None), int(env.pop("FEDCTL_LEASE_OWNER", "-1"))
    warm_key = env.pop(warm.ENV_KEY, "")
    env = {**os.environ, **env, "RAY_ADDRESS": gcs}
    fence = Fence(Path(lease_file) if lease_file else None, owner)
    read, write = os.pipe()
    tail = bytearray()
    pump = threading.Thread(target=_pump, args=(sid, read, sink, tail), daemon=True)
    pump.start()
    try:
        code = _warm(warm_key, command, env, write, fence) if warm_key else None
        if code is None:
            code = _cold(command, env, write, fence)
    finally:
        os.close(write)
    pump.join(timeout=5)
    return code, bytes(tail)


class Fence:
    """The agent's lease, read while an attempt runs: when it has lapsed, why and the grace left."""

    def __init__(self, lease: Path | None, owner: int) -> None:
        self.lease, self.owner = lease, owner

    def due(self) -> tuple[str, float] | None:
        return due(self.lease, self.owner) if self.lease is not None else None


class Process:
    """A command in a process group of its own, as the task waits on it."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.group = proc, proc.pid

    def poll(self, timeout: float) -> int | None:
        try:
            code = self.proc.wait(timeout=timeout)
            return code if code >= 0 else 128 - code
        except subprocess.TimeoutExpired:
            return None

    def reap(self) -> None:
        self.proc.poll()


class WarmStep(Process):
    """A step handed to a warm worker (`site_agent.warm`): it ends with the worker's answer."""

    def __init__(self, conn: Any, group: int, out: int) -> None:
        self.conn, self.group, self.out = conn, group, out

    def poll(self, timeout: float) -> int | None:
        try:
            return warm.reply(self.conn, timeout)
        except (EOFError, OSError, ValueError) as e:
            os.write(self.out, f"fedctl: {e}\n".encode())
            return 1

    def reap(self) -> None:
        pass


def _cold(command: str, env: dict[str, str], write: int, fence: Fence) -> int:
    proc = subprocess.Popen(["/bin/sh", "-c", command], env=env, stdin=subprocess.DEVNULL, stdout=write,
                            stderr=write, start_new_session=True)
    watcher = None
    try:
        watcher = watch(proc.pid)
        return _wait(Process(proc), write, fence)
    finally:
        _signal(proc.pid, signal.SIGKILL)   # what is left of the group
        if watcher is not None:
            watcher.wait()   # its first fork ended at once; the second goes on alone until the group has gone


def _warm(key: str, command: str, env: dict[str, str], write: int, fence: Fence) -> int | None:
    """The exit code of the step as a warm worker ran it, starting one where this user has none for
    `key`; None where none could take it (it runs cold)."""
    found = warm.connect(key)
    if found is None:
        # The worker starts as the command would, and ends this process once it listens.
        proc = subprocess.Popen(["/bin/sh", "-c", "exec " + command], env={**env, warm.ENV_SOCKET: key},
                                stdin=subprocess.DEVNULL, stdout=write, stderr=write, start_new_session=True)
        code = _wait(Process(proc), write, fence)
        if code:
            return code
        found = warm.connect(key)
    if found is None:
        return None
    conn = warm.begin(found, env, write)
    return None if conn is None else _wait(WarmStep(conn, found[1], write), write, fence)


def watch(group: int) -> subprocess.Popen:
    """The watcher of `group`, started at once: a worker may die at any moment, and the job with it
    escapes every other guard."""
    me = os.getpid()
    return subprocess.Popen(["/bin/sh", "-c", WATCHER, "fedctl-watcher", str(me), starttime(me), str(group),
                             str(grace_s())], start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(running: Process, write: int, fence: Fence) -> int:
    """The exit code; stopped on ray.cancel (KeyboardInterrupt) or when the agent's lease lapses."""
    try:
        while True:
            code = running.poll(CHECK_S)
            if code is not None:
                return code
            lapsed = fence.due()
            if lapsed is not None:
                os.write(write, f"{FENCED} {lapsed[0]}\n".encode())
                stop_group(running, lapsed[1])
                return FENCED_EXIT
    except KeyboardInterrupt:   # ray.cancel: the attempt is stopped
        stop_group(running, grace_s())
        raise


def _pump(sid: str, fd: int, sink: Any, tail: bytearray) -> None:
    """Output to the sink in chunks every FLUSH_S or FLUSH_BYTES, each waited on at the end, so an
    attempt's logs are whole when its task ends."""
    offset, pending, last = 0, bytearray(), time.monotonic()
    sent: list[Any] = []   # every chunk's call, waited on at the end
    try:
        while chunk := os.read(fd, FLUSH_BYTES):
            pending += chunk
            if len(pending) >= FLUSH_BYTES or time.monotonic() - last >= FLUSH_S:
                offset, last = _flush(sid, sink, offset, pending, tail, sent), time.monotonic()
        _flush(sid, sink, offset, pending, tail, sent)
        if sent:
            settle(sent)
    finally:
        os.close(fd)


def settle(calls: list[Any]) -> None:
    """Wait until the sink has taken every chunk."""
    import ray
    ray.get(calls)


def _flush(sid: str, sink: Any, offset: int, pending: bytearray, tail: bytearray, sent: list) -> int:
    if not pending:
        return offset
    sent.append(sink.append.remote(sid, offset, bytes(pending)))
    tail[:] = (tail + pending)[-TAIL:]
    offset += len(pending)
    pending.clear()
    return offset


def stop_group(running: Process, grace: float) -> None:
    """SIGTERM to the command's group, then SIGKILL after `grace` unless it has gone by then."""
    if not _signal(running.group, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        running.reap()
        if not _signal(running.group, 0):
            return
        time.sleep(0.05)
    _signal(running.group, signal.SIGKILL)


def _signal(group: int, sig: int) -> bool:
    try:
        os.killpg(group, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
