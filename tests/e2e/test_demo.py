"""`fedctl demo`, as the README's quick start runs it: results, and nothing left behind."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from federation.local import fedctl
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def live_processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process that is not a zombie."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            out[int(stat.parent.name)] = (int(fields[1]), cmd)
        except (OSError, IndexError, ValueError):
            continue
    return out


def leftovers(before: dict[int, tuple[int, str]]) -> list[str]:
    """New processes that belong to a demo: anything naming its folder, or an orphaned Ray worker."""
    return [cmd for pid, (ppid, cmd) in live_processes().items()
            if pid not in before and ("/tmp/fd-" in cmd or (ppid == 1 and cmd.startswith("ray::")))]


def demo(*args: str) -> subprocess.Popen:
    # SIGINT back to default: a shell's background job would otherwise start with it ignored.
    return subprocess.Popen(fedctl("demo", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_demo_runs_every_example_where_its_data_rules_allow():
    before = live_processes()
    p = demo("--format", "json")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    jobs = {j["name"]: j for j in json.loads(out)["jobs"]}
    assert {n: (j["site"], j["state"]) for n, j in jobs.items()} == {
        "tokenize-records": ("eu-west", "succeeded"),
        "claims-summary": ("us-east", "succeeded"),
        "weather-stats": ("edge-paris", "succeeded"),
        "export-records-us": (None, "cancelled"),
        "hello": (jobs["hello"]["site"], "succeeded"),
        "allreduce": ("us-east", "succeeded"),
    }
    assert jobs["allreduce"]["result"] == "GPUs 0,1 on us-dgx, one NVLink domain, placement group STRICT_PACK created"
    # gdpr-personal and hipaa let no logs cross: their output stays at the site that ran them.
    assert (jobs["tokenize-records"]["result"], jobs["claims-summary"]["result"]) == \
        ("(logs stay at eu-west)", "(logs stay at us-east)")
    assert "no site may ever take it" in jobs["export-records-us"]["why"]
    assert json.loads(out)["elapsed_s"] < 180
    assert leftovers(before) == []


def test_ctrl_c_stops_the_demo_and_everything_it_started():
    before = live_processes()
    p = demo()
    for line in p.stdout:
        if line.startswith("site us-east"):
            break  # every agent is starting its Ray head
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130
    assert "interrupted; stopping sites" in err
    assert leftovers(before) == []
    assert not list(Path("/tmp").glob("fd-*")), "the demo's folder is removed"


def test_a_killed_demo_still_leaves_no_process_behind():
    before = live_processes()
    p = demo()
    for line in p.stdout:
        if line.startswith("site us-east"):
            break
    p.kill()  # no chance to clean up: each agent notices its parent died and stops its Ray head
    p.communicate(timeout=30)
    try:
        wait_for(lambda: leftovers(before) == [], 60, "the agents and their Ray heads to stop")
    except AssertionError:
        raise AssertionError("left behind: " + "; ".join(c[:160] for c in leftovers(before))) from None
    finally:
        for folder in Path("/tmp").glob("fd-*"):
            shutil.rmtree(folder, ignore_errors=True)
