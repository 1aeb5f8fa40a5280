"""Federated training on real Ray sites: three sites each hold a non-IID shard of the digits;
rounds of local steps run at them as gangs and an aggregator job at an allowed site, and only
model updates cross. The federated model must come within 2 points of the same model trained
centrally; no site's raw records may appear anywhere outside it; a site killed mid-round must
not stop the training, and it takes part again once back."""
from __future__ import annotations

import io
import shutil
import signal
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from selenium.webdriver.common.by import By

from federation.local import CONFIGS, LocalFederation, fedctl
from tests.e2e.browser import chromium, log_in, visit
from tests.e2e.conftest import running
from tests.e2e.test_faults import kill_ray
from tests.waiting import wait_for
from training import privacy, secagg
from training.examples import digits
from training.runner import flatten
from training.strategies import weighted_mean

pytestmark = pytest.mark.e2e

SITES = {"eu-west": ("DE", "eu-west"), "eu-north": ("SE", "eu-north"), "edge-paris": ("FR", "eu-west-edge")}
ROUNDS, EPOCHS = 5, 5
JOBS = Path(__file__).parent / "jobs"


@pytest.fixture(scope="module")
def fed():
    work = Path(tempfile.mkdtemp(prefix="ftrain-", dir="/tmp"))
    shards = digits.write_shards(work / "data", list(SITES))
    # digits-sealed is the same shard, which each site lets out only as secure-aggregated updates
    sites = {name: {"location": {"jurisdiction": j, "region": r}, "ray": {"local": {"num_cpus": 2}},
                    "work_dir": str(work / name),
                    "datasets": [{"name": d, "classification": "gdpr-personal", "path": str(shards[name])}
                                 for d in ("digits", "digits-sealed")],
                    "veto": {"secure_training": {"datasets": ["digits-sealed"],
                                                 "steps": ["training.examples.digits:local_step"]}}}
             for name, (j, r) in SITES.items()}
    for name in SITES:
        (work / name).mkdir()
        shutil.copytree(JOBS, work / name / "jobs")
    # each head takes ~300 ports from its base: all below 32768, where the kernel's ephemeral ports start
    policy = yaml.safe_load((CONFIGS / "policy.yaml").read_text())   # the shipped one, the digits personal data
    policy["spec"]["datasets"]["digits"]["classification"] = "gdpr-personal"
    policy["spec"]["datasets"]["digits-sealed"] = {"classification": "gdpr-personal", "sites": ["*"]}
    (work / "policy.yaml").write_text(yaml.safe_dump(policy))
    federation = LocalFederation(work=work, sites=sites, port_bases={"eu-west": 32000, "eu-north": 32400,
                                                                      "edge-paris": 30000},
                                 site_timeout_s=6.0, scheduler_interval_s=0.1, policy=work / "policy.yaml", http=True)
    federation.shards, federation.test_set = shards, work / "data" / "test.npz"
    yield from running(federation)


@pytest.fixture
def client(fed):
    with fed.client(timeout=30) as c:
        yield c


def training(name: str, rounds: int, **spec) -> dict:
    return {"apiVersion": "federation/v1", "kind": "FederatedTraining",
            "metadata": {"name": name, "tenant": "research"},
            "spec": {"dataset": "digits", "sites": {"min": 2}, "rounds": rounds, "round_timeout": "90s",
                     "local_step": {"entrypoint": "training.examples.digits:local_step", "config": {"epochs": EPOCHS},
                                    "resources": {"cpus": 0.5}},
                     "aggregation": {"resources": {"cpus": 0.5}}, **spec}}


def test_the_federated_model_matches_central_training_and_raw_records_never_leave_their_site(fed, client):
    run = client.submit_training(training("digits-fedavg", ROUNDS))
    final = run.wait(timeout=400)
    assert final.state == "succeeded", final.message
    done = [r for r in final.history if r.state == "done"]
    assert [r.number for r in done] == list(range(1, ROUNDS + 1))
    for r in done:
        assert sorted(r.participants) == sorted(SITES) and r.lost == () and r.aggregator in SITES
        assert r.bytes_moved > 0 and set(r.metrics["sites"]) == set(SITES)
    with np.load(fed.test_set) as test:
        tx, ty = test["x"], test["y"]
    federated = digits.accuracy(run.model(), tx, ty)
    xs, ys = zip(*((np.load(p)["x"], np.load(p)["y"]) for p in fed.shards.values()))
    central, _ = digits.train(digits.init(), np.concatenate(xs), np.concatenate(ys), epochs=ROUNDS * EPOCHS)
    central_accuracy = digits.accuracy(central, tx, ty)
    print(f"\nfederated {federated:.4f} vs central {central_accuracy:.4f} on {len(ty)} held-out digits")
    assert federated >= central_accuracy - 0.02
    _console_shows(fed, run.id)

    # Every byte the federation and the other sites hold: the store (jobs, files, logs, audit),
    # its log, and every file under the other sites' folders, Ray's included.
    for site, shard in fed.shards.items():
        with np.load(shard) as data:
            rows = [data["x"][i].tobytes() for i in range(0, len(data["x"]), max(1, len(data["x"]) // 25))]
        outside = [p for p in fed.work.rglob("*") if p.is_file() and not _inside(p, fed, site)]
        assert any(p.name.startswith("federation.db") for p in outside)
        for path in outside:
            try:
                blob = path.read_bytes()
            except FileNotFoundError:   # a live agent's temporary file, renamed into place since the listing
                continue
            leaked = [i for i, row in enumerate(rows) if row in blob]
            assert not leaked, f"records of {site} found in {path}"


def _console_shows(fed, training_id: str) -> None:
    """The console's training page in a real browser: every round, who took part, both curves."""
    browser = chromium()
    try:
        log_in(browser, fed, "admin")
        assert "digits-fedavg" in visit(browser, fed, "/console/trainings", "trainings-list")
        visit(browser, fed, f"/console/trainings/{training_id}", "training")
        assert browser.find_element(By.ID, "state").text == "succeeded"
        rows = browser.find_elements(By.CSS_SELECTOR, "#rounds tr")[1:]
        assert len(rows) == ROUNDS and all(site in rows[0].text for site in SITES)
        chart = browser.find_element(By.ID, "chart")
        for curve in ("loss", "accuracy"):
            assert len(chart.find_element(By.CSS_SELECTOR, f"polyline.{curve}").get_attribute("points").split()) \
                == ROUNDS, curve
    finally:
        browser.quit()


def _inside(path: Path, fed, site: str) -> bool:
    own = [fed.work / site, fed.work / f"r{fed.port_bases[site]}", fed.work / "data" / site]
    return any(path.is_relative_to(d) for d in own) or path.parent == fed.work / "data"


def test_fedctl_submit_wait_shows_each_round_as_it_ends_then_the_rounds(fed, tmp_path):
    """Not on a terminal, `fedctl submit TRAINING --wait` writes a plain status line whenever the
    training moves (stderr) and, at the end, its rounds (stdout)."""
    spec = tmp_path / "training.yaml"
    spec.write_text(yaml.safe_dump(training("digits-cli", 2)))
    r = subprocess.run(fedctl("submit", str(spec), "--wait", "--timeout", "300"), env=fed.env,
                       capture_output=True, text=True, timeout=320)
    assert r.returncode == 0, r.stderr + r.stdout
    training_id = r.stdout.split()[0]
    lines = r.stderr.splitlines()
    assert all(line.startswith(f"{training_id}: ") for line in lines), lines
    assert any("round 1 of 2" in line for line in lines) and "succeeded, round 2 of 2" in lines[-1], lines
    assert "accuracy" in lines[-1], "the last round's metrics on its line"
    assert len(lines) == len(set(lines)), "a line only when something changed"
    rounds = [line.split()[0] for line in r.stdout.splitlines() if line.split() and line.split()[0] in ("1", "2")]
    assert rounds == ["1", "2"], r.stdout


def test_secure_aggregation_masks_every_input_yet_equals_plain_fedavg(fed, client):
    run = client.submit_training(training("digits-secure", 1, aggregation={"resources": {"cpus": 0.5},
                                                                          "secure": True}))
    final = run.wait(timeout=200)
    assert final.state == "succeeded", final.message
    secure = run.model()
    plain_parts, vectors = [], {}
    for site, shard in fed.shards.items():
        with np.load(shard) as data:
            model, _ = digits.train(digits.init(), data["x"], data["y"], epochs=EPOCHS, seed=1)
            n = len(data["y"])
        plain_parts.append((model, n))
        vectors[site] = np.concatenate([flatten(model) * n, [n]])
    plain = weighted_mean(plain_parts)
    for k in plain:
        assert np.allclose(secure[k], plain[k], atol=1e-6), k
    db = sqlite3.connect(fed.work / "federation.db")
    masked = {name.removeprefix("masked-").removesuffix(".npy"): np.load(io.BytesIO(data))
              for name, data in db.execute("SELECT name, data FROM artifacts WHERE name LIKE 'masked-%'")}
    db.close()
    assert sorted(masked) == sorted(SITES), "the aggregator got one masked input per site"
    for site, words in masked.items():
        seen = secagg.decode(words)
        assert not np.allclose(seen, vectors[site], atol=1.0)
        assert abs(np.corrcoef(seen, vectors[site])[0, 1]) < 0.2, f"{site}'s input tells of its update"


def test_differential_privacy_spends_what_dp_accounting_says_at_a_cost_in_accuracy(fed, client):
    """Client-level DP on top of secure aggregation: each site clips its update and adds its share
    of the noise. With three sites one site's whole update is a third of the mean, so a useful
    model needs a large epsilon; the accuracy against no DP is printed."""
    run = client.submit_training(training("digits-private", ROUNDS, privacy={"epsilon": 100, "clip": 2.0},
                                          aggregation={"resources": {"cpus": 0.5}, "secure": True},
                                          dataset="digits-sealed"))
    final = run.wait(timeout=200)
    assert final.state == "succeeded", (final.message, [(j.name, j.site, [(a.state, a.message) for a in j.attempts])
                                                        for j in client.jobs(tenant="research")
                                                        if j.name == "digits-private-r1"][:3])
    z = privacy.calibrate(100.0, 1e-5, ROUNDS)
    done = [r for r in final.history if r.state == "done"]
    assert [r.metrics["epsilon"] for r in done] == [round(privacy.spent(z, n, 1e-5), 4) for n in range(1, ROUNDS + 1)]
    assert 99 < done[-1].metrics["epsilon"] <= 100 and "epsilon" in final.message
    with np.load(fed.test_set) as test:
        accuracy = digits.accuracy(run.model(), test["x"], test["y"])
    print(f"\nwith DP (epsilon {done[-1].metrics['epsilon']:.1f}, delta 1e-5, noise multiplier {z}, clip 2): "
          f"accuracy {accuracy:.4f}")
    assert accuracy > 0.5, "noisy, but it learns"
    (row,) = [p for p in client.privacy() if p["dataset"] == "digits-sealed"]
    assert row["spent_epsilon"] == pytest.approx(done[-1].metrics["epsilon"], abs=1e-3) and row["held_epsilon"] == 0


def test_a_site_refuses_any_other_job_on_a_dataset_it_lets_out_only_securely(fed, client):
    """Whatever the federation (or a user) asks: a job reading the shard, or a training without
    secure aggregation, is refused by every site's own agent before it runs."""
    job = client.submit({"apiVersion": "federation/v1", "kind": "Job",
                         "metadata": {"name": "read-sealed", "tenant": "research"},
                         "spec": {"entrypoint": "cat $FEDCTL_DATASET_DIGITS_SEALED", "datasets": ["digits-sealed"],
                                  "resources": {"cpus": 0.1}, "retry": {"limit": 0}}})
    refused = wait_for(lambda: (s := job.status()).attempts and s.attempts[0].state == "rejected" and s, 120,
                       "the site to refuse the job")
    assert "leaves this site only as a secure-aggregated training update" in refused.attempts[0].message
    run = client.submit_training(training("digits-plain-sealed", 1, dataset="digits-sealed"))
    steps = wait_for(lambda: [a for j in client.jobs(tenant="research") if j.name == "digits-plain-sealed-r1"
                              for a in j.attempts if a.state == "rejected"], 120, "the plain round's steps refused")
    assert all("not masked by secure aggregation" in a.message for a in steps), steps
    assert run.cancel().state == "cancelled"
    job.cancel()
    assert all(a.state != "succeeded" for a in job.status().attempts), "the shard was never read"


def test_a_flower_client_app_trains_unchanged_with_secure_aggregation(fed, client):
    """The digits step as a team's Flower ClientApp (a NumPyClient in a client_fn), run by each
    site's worker; the federation masks and sums its updates as it does its own steps'."""
    step = {"entrypoint": "training.examples.digits_flower:app", "config": {"epochs": EPOCHS},
            "resources": {"cpus": 0.5}}
    run = client.submit_training(training("digits-flower", ROUNDS, local_step=step,
                                          aggregation={"resources": {"cpus": 0.5}, "secure": True}))
    final = run.wait(timeout=400)
    assert final.state == "succeeded", final.message
    done = [r for r in final.history if r.state == "done"]
    assert [r.number for r in done] == list(range(1, ROUNDS + 1))
    assert all(sorted(r.reported) == sorted(SITES) for r in done)
    model = run.model()   # Flower's parameters are a list: named in order, b then w as the client returns them
    with np.load(fed.test_set) as test:
        accuracy = digits.accuracy({"b": model["p000"], "w": model["p001"]}, test["x"], test["y"])
    xs, ys = zip(*((np.load(p)["x"], np.load(p)["y"]) for p in fed.shards.values()))
    central, _ = digits.train(digits.init(), np.concatenate(xs), np.concatenate(ys), epochs=ROUNDS * EPOCHS)
    with np.load(fed.test_set) as test:
        assert accuracy >= digits.accuracy(central, test["x"], test["y"]) - 0.02


def test_a_site_killed_mid_round_does_not_stop_the_training_and_rejoins_later(fed, client):
    # Secure aggregation on: the survivors reveal the masks they shared with the lost site.
    hold = fed.work / "hold-digits-loss"
    hold.touch()
    step = {"entrypoint": "held_step:local_step", "runtime_env": {"working_dir": "./jobs"}, "resources": {"cpus": 0.5},
            "config": {"epochs": EPOCHS, "hold": {"site": "eu-north", "round": 2, "file": str(hold)}}}
    run = client.submit_training(training("digits-loss", 50, local_step=step,
                                          aggregation={"resources": {"cpus": 0.5}, "secure": True}))   # cancelled later
    wait_for(lambda: Path(f"{hold}.eu-north").exists(), 120, "round 2's step held at eu-north")
    fed.agents["eu-north"].send_signal(signal.SIGKILL)
    fed.agents["eu-north"].wait()
    kill_ray(fed, "eu-north")
    hold.unlink()
    round2 = wait_for(lambda: next((r for r in run.status().history if r.number == 2 and r.state == "done"), None),
                      120, "round 2 to complete without eu-north")
    assert "eu-north" in round2.lost and sorted(round2.reported) == ["edge-paris", "eu-west"]
    reveals = [j for j in client.jobs(tenant="research") if j.name == "digits-loss-r2-reveal"]
    assert sorted(j.site for j in reveals) == ["edge-paris", "eu-west"] and all(j.state == "succeeded" for j in reveals)
    fed.start_agent("eu-north")
    fed.wait_connected(120)
    back = wait_for(lambda: next((r for r in run.status().history if r.state == "done" and "eu-north" in r.reported
                                  and r.number > 2), None), 180, "a later round with eu-north back")
    status = run.status()
    assert status.state == "running" and back.number > 2
    missed = [r.number for r in status.history if r.state == "done" and 2 < r.number < back.number]
    assert all("eu-north" not in r.participants for r in status.history if r.number in missed)
    assert run.cancel().state == "cancelled"
    assert all(j.state in ("succeeded", "failed", "cancelled") for j in client.jobs(tenant="research")
               if j.name.startswith("digits-loss")), "cancelling a training ends its jobs"


def test_a_training_resumes_from_its_last_completed_round_after_the_federation_is_killed(fed, client):
    run = client.submit_training(training("digits-restart", 4))
    wait_for(lambda: run.status().round >= 1, 120, "a completed round")
    before = {r.number: r for r in run.status().history if r.state == "done"}
    fed.server.send_signal(signal.SIGKILL)
    fed.server.wait()
    fed.start_server()
    final = run.wait(timeout=300)
    assert final.state == "succeeded", final.message
    done = [r for r in final.history if r.state == "done"]
    assert [r.number for r in done] == [1, 2, 3, 4], "each round completed once"
    for number, r in before.items():
        assert done[number - 1] == r, "a completed round is never run again"
