"""Warm workers: a federated training's local step, and its aggregator, kept alive across rounds.

A round's step is an attempt like any other, on the task path (`site_agent.task`), with the same
ids, fencing, veto and isolation. What it saves is the process: starting an interpreter and
importing NumPy and the step's module costs most of a round on a small machine, so the attempt's
task hands its step to a warm worker, a process that ran the same command for an earlier round of
the same training at this site as the same OS user, and waits for the next. Each round only the
attempt's environment (naming its input and output folders, which hold the global model and take
the update) goes in, with the attempt's output pipe; the exit code comes out.

Who may use a worker: it listens on an abstract Unix socket named by a key the agent derives from
the tenant, the training, the command, its runtime_env and GPUs (`key`; no spec can set it); it
serves only callers of its own OS user and its callers talk only to a worker of theirs
(SO_PEERCRED). It serves one attempt at a time (another is turned away, and runs cold); one
whose step failed, or that waited IDLE_S for the next, exits; one whose caller goes mid-step (the
attempt was stopped, its Ray worker died) kills its own process group, so no step runs on unseen.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import queue
import re
import select
import signal
import socket
import struct
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

ENV_KEY = "FEDCTL_WARM_KEY"        # set by the agent, "" where the attempt runs cold
ENV_SOCKET = "FEDCTL_WARM_SOCKET"  # set by the task for the worker it starts
IDLE_S = float(os.environ.get("FEDCTL_WARM_IDLE_S", "120"))
MAX_REQUEST = 32 << 20
READY = b"ready\n"
GREETING_S = 10.0
# Only our own runner knows how to serve: `python -m training.runner step MODULE:FUNCTION | aggregate | ...`.
COMMAND = re.compile(r"^python3? -m training\.runner (step [A-Za-z_][\w.]*:[A-Za-z_]\w*|aggregate|keys|reveal)$")
_CRED = struct.Struct("3i")


def key(*, tenant: str, site: str, entrypoint: str, runtime_env: dict[str, Any], env: dict[str, str]) -> str:
    """The warm worker an attempt may use, or '' when it runs cold: not a training's own step or
    aggregator, or one bound to a placement group of its own."""
    training = env.get("FEDCTL_TRAINING_ID", "")
    if not training or not COMMAND.match(entrypoint) or "FEDCTL_BINDING" in env:
        return ""
    same = {"tenant": tenant, "site": site, "training": training, "entrypoint": entrypoint,
            "runtime_env": {k: v for k, v in runtime_env.items() if k != "env_vars"},
            "gpus": env.get("CUDA_VISIBLE_DEVICES")}
    return hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()[:40]


def address(warm_key: str) -> bytes:
    return b"\0fedctl-warm-" + warm_key.encode() + b"-" + str(os.getuid()).encode()


def peer(conn: socket.socket) -> tuple[int, int]:
    """The other end's (pid, uid)."""
    pid, uid, _ = _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    return pid, uid


# ---------------------------------------------------------------- the caller's side (the attempt's task)

def connect(warm_key: str) -> tuple[socket.socket, int] | None:
    """A connection to the worker for `warm_key` and its process group, or None when none of this
    user's listens."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(address(warm_key))
        pid, uid = peer(conn)
        if uid == os.getuid():
            return conn, os.getpgid(pid)
    except OSError:
        pass
    conn.close()
    return None


def begin(found: tuple[socket.socket, int], env: dict[str, str], out_fd: int) -> socket.socket | None:
    """Hand the worker the attempt's environment and its output pipe (the step's stdout and
    stderr); None, the connection closed, when it has another attempt or does not answer."""
    conn = found[0]
    try:
        ready, _, _ = select.select([conn], [], [], GREETING_S)
        if not ready or conn.recv(len(READY)) != READY:
            raise ConnectionError("busy")
        body = json.dumps(env).encode()
        data = struct.pack("!I", len(body)) + body
        sent = socket.send_fds(conn, [data[:1 << 16]], [out_fd])
        conn.sendall(data[sent:])
        return conn
    except OSError:
        conn.close()
        return None


def reply(conn: socket.socket, timeout: float) -> int | None:
    """The step's exit code, None while it runs; EOFError when the worker went without one."""
    ready, _, _ = select.select([conn], [], [], timeout)
    if not ready:
        return None
    line = conn.makefile("rb").readline()
    if not line:
        raise EOFError("the warm worker ended without an exit code")
    return int(json.loads(line)["code"])


# ---------------------------------------------------------------- the worker's side (`training.runner`)

def serve(warm_key: str, run: Callable[[], int]) -> int:
    """Take the socket, leave the process that started us (so that Ray, which stops a worker's
    children with it, lets us be), and run `run` once per attempt handed over, in its environment."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(address(warm_key))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return 0   # another worker took it first: the caller finds that one
        raise
    sys.stdout.flush()
    sys.stderr.flush()
    listening, told = os.pipe()
    if os.fork():   # the child listens, so that callers see its pid (SO_PEERCRED is the listener's)
        os.close(told)
        os._exit(0 if os.read(listening, 1) else 1)
    os.close(listening)
    listener.listen(8)
    os.write(told, b"y")
    os.close(told)
    null = os.open(os.devnull, os.O_RDWR)
    handed: queue.Queue[socket.socket] = queue.Queue()
    free = threading.Semaphore()   # held from a caller's acceptance until its answer
    threading.Thread(target=_accept, args=(listener, handed, free), daemon=True).start()
    while True:
        try:
            conn = handed.get(timeout=IDLE_S)
        except queue.Empty:
            if free.acquire(blocking=False):   # none accepted meanwhile: none will be
                return 0
            continue
        code = _one(conn, run, null, free)
        if code != 0:
            return code


def _accept(listener: socket.socket, handed: queue.Queue, free: threading.Semaphore) -> None:
    while True:
        conn, _ = listener.accept()
        if peer(conn)[1] != os.getuid() or not free.acquire(blocking=False):
            conn.close()   # not ours, or busy: the caller runs its attempt cold
            continue
        handed.put(conn)
        try:
            conn.sendall(READY)
        except OSError:
            pass   # the caller has gone: the request fails to read, and the worker waits for the next


def _one(conn: socket.socket, run: Callable[[], int], null: int, free: threading.Semaphore) -> int:
    """One attempt: its environment and output, `run`, then what the step left behind stopped and
    the exit code sent, free for the next caller first unless it failed (then this worker ends).
    Its caller gone mid-step, the whole process group goes too."""
    try:
        env, out = _request(conn)
    except (OSError, ValueError, KeyError):
        conn.close()
        free.release()
        return 0
    done = threading.Event()
    threading.Thread(target=_watch, args=(conn, done), daemon=True).start()
    os.environ.clear()
    os.environ.update(env)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    try:
        code = run()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(null, 1)
    os.dup2(null, 2)
    _stop_others()
    done.set()
    if code == 0:
        free.release()
    _answer(conn, code)
    return code


def _request(conn: socket.socket) -> tuple[dict[str, str], int]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 1)
    if len(fds) != 1 or len(data) < 4:
        for fd in fds:
            os.close(fd)
        raise ValueError("a request without its output pipe")
    (size,) = struct.unpack("!I", data[:4])
    if size > MAX_REQUEST:
        os.close(fds[0])
        raise ValueError(f"a request of {size} bytes")
    body = bytearray(data[4:])
    while len(body) < size:
        chunk = conn.recv(min(1 << 20, size - len(body)))
        if not chunk:
            os.close(fds[0])
            raise ValueError("a request cut short")
        body += chunk
    env = json.loads(body)
    return {str(k): str(v) for k, v in env.items()}, fds[0]


def _answer(conn: socket.socket, code: int) -> None:
    try:
        conn.sendall(json.dumps({"code": code}).encode() + b"\n")
    except OSError:
        pass
    conn.close()


def _watch(conn: socket.socket, done: threading.Event) -> None:
    """The caller sends nothing after its request: anything readable is its end closing."""
    poller = select.poll()
    poller.register(conn, select.POLLIN | select.POLLHUP | select.POLLERR)
    while not done.is_set():
        if poller.poll(100) and not done.is_set():
            os.killpg(os.getpgrp(), signal.SIGKILL)


def _stop_others() -> None:
    """Whatever the step started in this group and left running."""
    from site_agent.guard import others
    for pid in others():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
