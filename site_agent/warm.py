"""Warm workers: a federated training's local step, and its aggregator, kept alive across rounds.

A round's step is an attempt like any other, on the task path (`site_agent.task`), with the same
ids, fencing, veto and isolation. What it saves is the process: starting an interpreter and
importing NumPy and the step's module costs most of a round on a small machine, so the attempt's
task hands its step to a warm worker, a process that ran the same command for an earlier round of
the same training at this site as the same OS user, and waits for the next. Each round only the
attempt's environment (naming its input and output folders, which hold the global model and take
the update) goes in, with the attempt's output pipe; the exit code comes out.

Who may use a worker: it listens on an abstract Unix socket named by a key the agent derives from
the tenant, the site, the command, its datasets, runtime_env and environment but for what changes
each round (`key`; no spec can set it), and the OS user; it serves only callers of its own OS user,
and callers talk only to a worker of theirs (SO_PEERCRED). That is the boundary: a process of the
same OS user could take the socket's name first, as it could trace the step's process. So sites
that keep tenants apart give each its own user (tenant heads), and steps naming a dataset the site
lets out only through allowed, masked steps always run cold, in a process of their own.

A worker serves one attempt at a time (another is turned away, and runs cold). It ends when a step
failed or left a thread or an open file behind (the next round must not meet it), when it has
waited IDLE_S for the next round, and, killing its own process group, when its caller goes mid-step
(the attempt was stopped, its Ray worker died), so that no step runs on unseen. Each round starts
from the worker's first folder, umask and sys.path. Unlike a process of its own, a step that calls
os._exit ends its worker without an exit code: the attempt fails.
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
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from federation.spec import JobSpec

ENV_KEY = "FEDCTL_WARM_KEY"        # set by the agent, "" where the attempt runs cold
ENV_SOCKET = "FEDCTL_WARM_SOCKET"  # set by the task for the worker it starts
IDLE_S = float(os.environ.get("FEDCTL_WARM_IDLE_S", "120"))
MAX_REQUEST = 32 << 20
READY = b"ready\n"
GREETING_S = 10.0
LEFT_BEHIND = -1   # a step that succeeded but left a thread or an open file: its worker ends
# Only our own runner knows how to serve: `python -m training.runner step MODULE:FUNCTION | aggregate | ...`.
COMMAND = re.compile(r"^python3? -m training\.runner (step [A-Za-z_][\w.]*:[A-Za-z_]\w*|aggregate|keys|reveal)$")
# What the federation sets anew each round; the rest of a step's environment is the same every round.
ROUND_ENV = frozenset({"FEDCTL_ROUND", "FEDCTL_TRAINING_CONFIG", "FEDCTL_GANG_ID", "FEDCTL_GANG_PART",
                       "FEDCTL_GANG_SIZE"})
_CRED = struct.Struct("3i")


def key(spec: JobSpec, site: str, entrypoint: str, runtime_env: dict[str, Any], sealed: Collection[str]) -> str:
    """The warm worker an attempt may use, or '' when it runs cold: not a training's own step or
    aggregator; bound to GPUs, which an idle worker would hold while Ray counts them free; or naming
    a dataset the site lets out only through allowed, masked steps (`veto.secure_training`), whose
    code no worker that another job of its user could have started may run."""
    body = spec.spec
    variables = body.runtime_env.get("env_vars", {})
    training = variables.get("FEDCTL_TRAINING_ID", "")
    gpus = bool(body.resources.gpus) or body.resources.gpu_memory is not None
    if not training or not COMMAND.match(entrypoint) or gpus or set(body.datasets) & set(sealed):
        return ""
    same = {"tenant": spec.metadata.tenant, "site": site, "entrypoint": entrypoint, "datasets": sorted(body.datasets),
            "runtime_env": {k: v for k, v in runtime_env.items() if k != "env_vars"},
            "env_vars": {k: v for k, v in variables.items() if k not in ROUND_ENV}}
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
    cwd, path, mask = os.getcwd(), list(sys.path), os.umask(0o022)
    os.umask(mask)
    while True:
        try:
            conn = handed.get(timeout=IDLE_S)
        except queue.Empty:
            if free.acquire(blocking=False):   # none accepted meanwhile: none will be
                return 0
            continue
        os.chdir(cwd)   # as the step before may have left them
        sys.path[:] = path
        os.umask(mask)
        code = _one(conn, run, null, free)
        if code != 0:
            return max(code, 0)


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
    the exit code sent, free for the next caller first unless it failed or left something behind
    (then this worker ends: whatever it left must not see the next round). Its caller gone
    mid-step, the whole process group goes too."""
    try:
        conn.settimeout(GREETING_S)   # a caller that never sends must not hold the worker
        env, out = _request(conn)
        conn.settimeout(None)
    except (OSError, ValueError, KeyError):
        conn.close()
        free.release()
        return 0
    done = threading.Event()
    watcher = threading.Thread(target=_watch, args=(conn, done), daemon=True)
    watcher.start()
    os.environ.clear()
    os.environ.update(env)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    before = _held()
    code = _run(run) & 0xFF   # as the shell would see it
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(null, 1)
    os.dup2(null, 2)
    _stop_others()
    done.set()
    watcher.join()
    left = _held() - before
    if code == 0 and not left:
        free.release()
    _answer(conn, code)
    return code if code or not left else LEFT_BEHIND


def _run(run: Callable[[], int]) -> int:
    try:
        return run()
    except SystemExit as e:
        if isinstance(e.code, int) or e.code is None:
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1


def _held() -> set[str]:
    """This process's threads and open files: what a step may leave running or open."""
    return {f"thread {t.ident}" for t in threading.enumerate()} | {f"fd {fd}" for fd in os.listdir("/proc/self/fd")}


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
    """Whatever the step started in this group and left running, killed and reaped."""
    from site_agent.guard import others
    for pid in others():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
