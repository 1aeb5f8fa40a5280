"""The site's long-lived Ray driver for short jobs: the task path (`spec.execution: task`).

A Ray job costs seconds of CPU to start (a supervisor actor, a driver process, a runtime_env set up
for it). The agent therefore keeps one Ray job of its own on its cluster, this one, and hands it the
attempts that need no driver of their own; each runs as a Ray task (`site_agent.task`) with the
attempt's resources and runtime_env, in pooled workers, and starts in milliseconds. Their output
goes to a sink actor, from which the agent reads it.

The runner owns its tasks: when it dies, Ray kills their workers, each task's watcher stops its job,
the agent finds the attempts gone and the federation calls them lost. The agent reaches the runner
over HTTP on the head node with the token the runner prints, beside its address, as its first line
(READY): whoever may read this Ray job's logs holds Ray's token already, and may start and stop
the site's Ray jobs anyway.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import secrets
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from site_agent.task import run_attempt

READY = "fedctl-runner listening on"
MAX_LOG_BYTES = 64 << 20          # per attempt, kept in the sink until the agent has taken them
MAX_GONE = 200_000                # ended attempts remembered, so that none starts twice under one id
MAX_BODY = 32 << 20               # an attempt's spec may carry 8 MiB of environment; its JSON more
EXIT_LINE = "Job entrypoint command failed with exit code {code}"   # Ray's own words, as plan.RAY_EXIT reads them
NODE_DIED = "Ray node died: "   # before a task's NodeDiedError, as plan.node_died reads it


class Sink:
    """A Ray actor (asyncio): each attempt's output, which attempts have started, and a version that
    moves when one starts or ends, for the agent's long poll. Calls may run out of order, so output
    is put together by offset."""

    def __init__(self) -> None:
        self.logs: dict[str, bytearray] = {}
        self.early: dict[str, dict[int, bytes]] = {}   # chunks that came before those ahead of them
        self.began: set[str] = set()
        self.version = 0
        self.moved: asyncio.Event | None = None

    def _bump(self) -> None:
        self.version += 1
        if self.moved is not None:
            self.moved.set()
            self.moved = None

    async def started(self, sid: str) -> None:
        self.began.add(sid)
        self._bump()

    async def ended(self) -> None:
        self._bump()

    async def changes(self, since: int, wait_s: float) -> int:
        if self.version <= since:
            self.moved = self.moved or asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.moved.wait(), timeout=min(wait_s, 30.0))
        return self.version

    async def append(self, sid: str, offset: int, data: bytes) -> None:
        """Past MAX_LOG_BYTES an attempt's output is dropped: a job printing without end must not
        take the head node's memory."""
        log, early = self.logs.setdefault(sid, bytearray()), self.early.setdefault(sid, {})
        if offset >= MAX_LOG_BYTES or offset < len(log):
            return
        early[offset] = data
        while len(log) in early:
            log += early.pop(len(log))
        if len(log) >= MAX_LOG_BYTES:
            del log[MAX_LOG_BYTES:]
            early.clear()

    async def sizes(self) -> dict[str, int]:
        """Started attempts and their log sizes (output may come before the word that it started)."""
        return dict.fromkeys(self.began, 0) | {sid: len(log) for sid, log in self.logs.items()}

    async def read(self, sid: str, offset: int, limit: int) -> bytes:
        return bytes(self.logs.get(sid, b"")[offset:offset + limit])

    async def drop(self, sids: list[str]) -> None:
        for sid in sids:
            self.logs.pop(sid, None)
            self.early.pop(sid, None)
            self.began.discard(sid)


class Runner:
    """The attempts this runner holds, by submission id. Thread-safe: the HTTP server calls it."""

    def __init__(self, ray: Any, sink: Any) -> None:
        self.ray, self.sink = ray, sink
        self.task = ray.remote(run_attempt)
        self.gcs = ray.get_runtime_context().gcs_address
        self.attempts: dict[str, dict[str, Any]] = {}
        self.refs: dict[str, Any] = {}
        self.gone: dict[str, None] = {}   # forgotten, oldest first: never started again under the same id
        self.lock = threading.Lock()

    def start(self, a: dict[str, Any]) -> bool:
        sid = a["sid"]
        with self.lock:
            if sid in self.attempts or sid in self.gone:
                return False
            # The attempt's variables go to its command, not its worker: workers are shared between
            # attempts of the same runtime_env, and one of its own would take a second to start.
            env = {k: v for k, v in a["runtime_env"].items() if k != "env_vars"}
            options: dict[str, Any] = {"num_cpus": a["cpus"], "num_gpus": a["gpus"], "max_retries": 0,
                                       "name": sid, "runtime_env": env or None}
            if a["memory"]:
                options["memory"] = a["memory"]
            if a.get("labels"):
                options["label_selector"] = a["labels"]
            ref = self.task.options(**options).remote(sid, a["command"], a["env"], self.sink, self.gcs)
            self.attempts[sid] = {"status": "PENDING", "message": "", "site": a["site"], "tenant": a["tenant"],
                                  "guarded": a["guarded"], "stopping": False}
            self.refs[sid] = ref
        ref.future().add_done_callback(lambda f: self._ended(sid, f))
        return True

    def _ended(self, sid: str, future: Any) -> None:
        with self.lock:
            record = self.attempts.get(sid)
            self.refs.pop(sid, None)
            if record is None:
                return
            try:
                code, tail = future.result()
                record["status"] = "SUCCEEDED" if code == 0 else "FAILED"
                if code:
                    text = tail.decode("utf-8", "replace")
                    record["message"] = EXIT_LINE.format(code=code) + f", last available logs:\n{text}"
            except Exception as e:
                record["status"] = "STOPPED" if record["stopping"] else "FAILED"
                gone = type(e).__name__ == "NodeDiedError"   # its node vanished: a spot reclaim, a lost machine
                record["message"] = "stopped" if record["stopping"] else (NODE_DIED if gone else "") + _first_line(e)
        self.sink.ended.remote()

    def changes(self, since: int, wait_s: float) -> int:
        """The version once an attempt has started or ended after `since`, or after `wait_s`."""
        return int(self.ray.get(self.sink.changes.remote(since, wait_s)))

    def stop(self, sid: str) -> None:
        with self.lock:
            ref, record = self.refs.get(sid), self.attempts.get(sid)
            if record is not None:
                record["stopping"] = True
        if ref is not None:
            self.ray.cancel(ref, force=False)

    def listing(self) -> dict[str, dict[str, Any]]:
        """Every attempt held. States are read before log sizes: a task returns only once the sink
        has all its output, so an attempt listed as ended is listed with its whole log's size."""
        with self.lock:
            held = {sid: dict(r) for sid, r in self.attempts.items()}
        sizes = self.ray.get(self.sink.sizes.remote())
        return {sid: {k: r[k] for k in ("message", "site", "tenant", "guarded")} | {
                    "status": "RUNNING" if r["status"] == "PENDING" and sid in sizes else r["status"],
                    "log_size": sizes.get(sid, 0)}
                for sid, r in held.items()}

    def logs(self, sid: str, offset: int, limit: int) -> bytes:
        return self.ray.get(self.sink.read.remote(sid, offset, limit))

    def forget(self, sids: list[str]) -> None:
        with self.lock:
            ended = [s for s in sids if s in self.attempts and s not in self.refs]
            for sid in ended:
                del self.attempts[sid]
            self.gone.update(dict.fromkeys(ended))
            for sid in list(itertools.islice(self.gone, max(0, len(self.gone) - MAX_GONE))):
                del self.gone[sid]   # the oldest: the federation will not ask for them again
        self.sink.drop.remote(ended)


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"[:500]


def handler(runner: Runner, token: str) -> type[BaseHTTPRequestHandler]:
    routes: dict[tuple[str, str], Callable[[dict[str, Any]], Any]] = {
        ("POST", "/start"): lambda body: {"started": runner.start(body)},
        ("POST", "/stop"): lambda body: runner.stop(body["sid"]),
        ("POST", "/forget"): lambda body: runner.forget(list(body["sids"])),
        ("GET", "/attempts"): lambda q: runner.listing(),
        ("GET", "/changes"): lambda q: runner.changes(int(q.get("since", 0)), float(q.get("wait", 1))),
        ("GET", "/logs"): lambda q: runner.logs(q["sid"], int(q.get("offset", 0)), int(q.get("limit", 1 << 20))),
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True   # a response's head and body are two writes: no 40 ms wait between

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            route = routes.get((method, url.path))
            if not hmac.compare_digest(self.headers.get("Authorization", ""), f"Bearer {token}"):
                self.close_connection = True
                return self._send(HTTPStatus.UNAUTHORIZED, b"")
            if route is None:
                return self._send(HTTPStatus.NOT_FOUND, b"")
            try:
                length = int(self.headers.get("Content-Length", 0))
                if not 0 <= length <= MAX_BODY:
                    raise ValueError(f"a body of {length} bytes; at most {MAX_BODY}")
                arg = json.loads(self.rfile.read(length)) if method == "POST" else {
                    k: v[0] for k, v in parse_qs(url.query).items()}
                result = route(arg)
            except Exception as e:   # the agent sees why; the runner goes on serving
                return self._send(HTTPStatus.INTERNAL_SERVER_ERROR, _first_line(e).encode())
            self._send(HTTPStatus.OK, result if isinstance(result, bytes) else json.dumps(result).encode())

        def _send(self, status: HTTPStatus, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def main() -> int:
    token = secrets.token_hex(32)
    import ray

    from site_agent import runner as this  # by reference, not as __main__: workers import it
    ray.init(log_to_driver=False, logging_level=logging.ERROR)
    sink = ray.remote(this.Sink).options(num_cpus=0, max_concurrency=64).remote()
    runner = this.Runner(ray, sink)
    host = ray.util.get_node_ip_address()
    server = ThreadingHTTPServer((host, 0), handler(runner, token))
    server.daemon_threads = True
    print(f"{READY} {host}:{server.server_address[1]} {token}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
