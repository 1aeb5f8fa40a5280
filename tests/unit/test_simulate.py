"""The simulator: trace reading, the engine's invariants, the auditor, fragmentation, and the CLI."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

import policies
from federation.cli.main import main
from federation.control.rules import rules_from_policy
from federation.errors import ConfigError
from federation.simulate import engine, trace
from federation.simulate.metrics import Shapes, fragmentation
from federation.spec import load_policy
from policies.gpu_state import GpuState
from policies.gpus import GpuNode, GpuRequest, Inventory, Slot

ROOT = Path(__file__).resolve().parents[2]
ALIBABA = ROOT / "tests" / "fixtures" / "alibaba"
RULES = rules_from_policy(load_policy(ROOT / "configs" / "policy.yaml"))


@pytest.fixture(scope="module")
def excerpt() -> trace.Workload:
    return trace.alibaba(ALIBABA)


def test_alibaba_nodes_are_dealt_to_sites_by_the_stated_rule(excerpt):
    assert [s.name for s in excerpt.sites] == ["eu-central", "eu-west", "us-east", "us-west"]
    assert [len(s.inventory.nodes) for s in excerpt.sites] == [20, 20, 20, 20]
    assert excerpt.sites[1].inventory.nodes[0].name == "openb-node-0001"
    by_model = {n.model: n for s in excerpt.sites for n in s.inventory.nodes}
    assert len(set(by_model["G2"].domains)) == 1 and by_model["G2"].domains[0]  # 8 GPUs, one NVLink domain
    assert by_model["P100"].domains == ("", "")                                 # PCIe: none
    assert excerpt.sites[2].labels == {"baa": "true"}
    assert "i mod 4" in excerpt.rules and "seed 7" in excerpt.rules


def test_alibaba_tasks_become_gpu_requests(excerpt):
    jobs = {j.id: j for j in excerpt.jobs}
    assert len(jobs) == 419
    share = jobs["openb-pod-0001"]   # num_gpu 1, gpu_milli 460
    assert share.gpu == GpuRequest(share=460) and share.arrival == 427061
    multi = [j for j in jobs.values() if j.gpu and j.gpu.count >= 2]
    assert multi and all(j.gpu.nvlink == "required" for j in multi)
    assert any(j.gpu is None for j in jobs.values())          # CPU-only tasks stay
    assert {d for j in jobs.values() for d in j.datasets} <= set(excerpt.datasets)


def test_the_same_seed_gives_the_same_workload():
    assert trace.alibaba(ALIBABA, seed=3).jobs == trace.alibaba(ALIBABA, seed=3).jobs
    assert trace.alibaba(ALIBABA, seed=3).jobs != trace.alibaba(ALIBABA, seed=4).jobs


@pytest.mark.parametrize("strategy", ["topology", "blind", "round-robin"])
def test_replay_places_every_job_and_audits_it(excerpt, strategy):
    out = engine.run(excerpt, RULES, strategy)
    assert out.placed + out.never_placed == len(excerpt.jobs)
    assert out.total_gpus == sum(s.inventory.gpus for s in excerpt.sites)
    if strategy == "topology":
        assert out.violations == {} and out.nvlink_in_one_domain == out.nvlink_required > 0


def test_topology_blind_breaks_nvlink_rules_the_topology_strategy_keeps():
    # One site of PCIe nodes, one NVSwitch node: a federation blind to topology sends the first
    # job to the site with most GPUs free, where four GPUs span no NVLink domain.
    pcie = Inventory(tuple(GpuNode(f"p{i}", "A", 0, ("",) * 4) for i in range(4)))
    dgx = Inventory((GpuNode("d0", "A", 0, ("d0/nv",) * 8),))
    sites = (trace.SimSite("pcie", "US", "us-west", pcie, 1e6, 1e18),
             trace.SimSite("dgx", "US", "us-west", dgx, 1e6, 1e18))
    jobs = tuple(trace.SimJob(f"j{i}", float(i), 10.0, 1, 0, GpuRequest(count=4, nvlink="required")) for i in range(2))
    w = trace.Workload(sites, jobs, {}, "test")
    ours, blind = engine.run(w, RULES, "topology"), engine.run(w, RULES, "blind")
    assert ours.violations == {} and ours.nvlink_in_one_domain == 2
    assert blind.violations == {"nvlink": 1} and blind.nvlink_in_one_domain == 1


def test_inflation_stops_when_asks_reach_capacity(excerpt):
    out = engine.run(excerpt, RULES, "topology", inflation=True)
    asked = out.placed + out.never_placed
    assert asked > 0 and out.unallocated_at_full is not None
    assert 0 <= out.unallocated_at_full <= out.total_gpus
    assert out.violations == {}


def test_inflation_compares_ours_with_fgd_and_best_fit_which_break_only_nvlink(excerpt, capsys):
    assert main(["simulate", "--trace", str(ALIBABA), "--mode", "inflation", "--format", "json",
                 "--policy", str(ROOT / "configs" / "policy.yaml")]) == 0
    out = json.loads(capsys.readouterr().out)["inflation"]
    rows = {r["strategy"]: r for r in out["results"]}
    assert set(rows) == {"topology", "topology-bestfit", "fgd", "best-fit", "blind", "round-robin"}
    assert rows["topology"]["violations"] == rows["topology-bestfit"]["violations"] == 0
    for name in ("fgd", "best-fit"):   # they keep sovereignty and GPU types; they do not see NVLink
        assert set(rows[name]["violations_by_rule"]) <= {"nvlink"}
        assert rows[name]["unallocated_gpus_at_full"] is not None
    assert {"topology/fgd", "topology/best-fit", "topology/topology-bestfit"} <= set(out["ratios"])


def test_the_load_mode_runs_each_strategy_on_the_same_draw_and_gives_the_ratios(capsys):
    assert main(["simulate", "--trace", str(ALIBABA), "--mode", "load", "--utilisation", "1.1", "--format", "json",
                 "--policy", str(ROOT / "configs" / "policy.yaml")]) == 0
    got = json.loads(capsys.readouterr().out)["loads"]["1.1"]
    rows = {r["strategy"]: r for r in got["results"]}
    assert set(rows) == {"ours", "ours-reserve", "fifo-per-site"} and got["reached"] == pytest.approx(1.1, abs=0.01)
    assert {r["started"] + r["never_started"] for r in rows.values()} == {3 * 419}
    ours, reserve = rows["ours"], rows["ours-reserve"]
    assert ours["never_started"] == reserve["never_started"] == 0
    assert reserve["gpu_utilisation"] >= ours["gpu_utilisation"] - 0.02
    assert got["ratios"]["ours-reserve/ours"]["p99_delay_8plus"] == pytest.approx(
        reserve["by_size"]["8+"]["p99"] / ours["by_size"]["8+"]["p99"], abs=1e-3)


def test_under_load_reservations_keep_small_long_jobs_from_starving_the_whole_node_ones():
    """Four 8-GPU NVLink nodes, 8-GPU jobs of an hour among 1-GPU jobs of 2-6 hours: without
    reservations, a node rarely empties whole before another small job takes part of it."""
    from federation.simulate import load
    eight = GpuRequest(count=8, nvlink="required")
    sites = tuple(trace.SimSite(f"s{k}", "DE", f"r{k}", Inventory(tuple(
        GpuNode(f"s{k}-n{i}", "G2", 0, (f"s{k}-n{i}/nv",) * 8) for i in range(2))), 256, 1 << 40) for k in range(2))
    kinds = [trace.SimJob("big", 0, 3600.0, 8, 0, eight),
             *(trace.SimJob(f"one-{h}", 0, h * 3600.0, 1, 0, GpuRequest(count=1)) for h in (2, 4, 6))]
    at = load.steady(kinds, [n for s in sites for n in s.inventory.nodes], 0.9, 400, seed=1)
    w = trace.Workload(sites, tuple(at.jobs), {}, "")
    ours, reserve = (load.summary(load.run(w, RULES, s)) for s in ("ours", "ours-reserve"))
    assert ours["never_started"] == reserve["never_started"] == 0
    assert reserve["by_size"]["8+"]["p99"] < 0.7 * ours["by_size"]["8+"]["p99"]
    assert reserve["gpu_utilisation"] >= ours["gpu_utilisation"] - 0.02


def test_a_list_without_times_is_loaded_with_run_times_drawn_from_the_default_list(tmp_path, capsys):
    rows = (ALIBABA / "openb_pod_list_default.csv").read_text().splitlines()
    keep = rows[0].split(",").index("gpu_spec") + 1
    untimed = tmp_path / "untimed.csv"
    untimed.write_text("\n".join(",".join(r.split(",")[:keep]) for r in rows) + "\n")
    assert main(["simulate", "--trace", str(ALIBABA), "--pods", str(untimed), "--mode", "load", "--utilisation",
                 "0.7", "--draws", "300", "--strategy", "ours", "--format", "json",
                 "--policy", str(ROOT / "configs" / "policy.yaml")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "a run time drawn from the default list's jobs of its size" in out["setup"]
    (row,) = out["loads"]["0.7"]["results"]
    assert row["started"] == 300 and row["never_started"] == 0 and 0 < row["gpu_utilisation"] < 1
    assert main(["simulate", "--trace", str(ALIBABA), "--mode", "load", "--draws", "1"]) == 2
    assert capsys.readouterr().err.strip() == "error[CONFIG]: --draws: 1 is fewer than 2 jobs"


def test_auditor_flags_sovereignty_breaches():
    w = trace.Workload((trace.SimSite("us", "US", "us-east", Inventory(), 1, 1),), (),
                       {"eu-patients": ("gdpr-personal", frozenset({"us"}))}, "test")
    job = trace.SimJob("j", 0, 1, 1, 0, None, datasets=("eu-patients",))
    assert engine.Auditor(w, RULES).check(job, "us", ()) == "sovereignty"


def test_fragmentation_counts_what_a_shape_cannot_use():
    state = GpuState([Inventory((GpuNode("n", "A", 0, ("",) * 2),))])
    state.reserve(0, (Slot("n", (0,), 700),))                 # GPU 0 has 0.3 free, GPU 1 is whole
    whole = Shapes((GpuRequest(count=1),), (1.0,))
    half = Shapes((GpuRequest(share=500),), (1.0,))
    assert fragmentation(state, whole) == pytest.approx((0.3, 1.3))   # the sliver is a fragment
    assert fragmentation(state, half) == pytest.approx((0.3, 1.3))
    two = Shapes((GpuRequest(count=2),), (1.0,))
    assert fragmentation(state, two)[0] == pytest.approx(1.3)          # nothing here holds 2 GPUs


def test_bad_inputs_name_the_file_and_line(tmp_path):
    with pytest.raises(ConfigError, match=r"openb_node_list_gpu_node.csv: not found"):
        trace.alibaba(tmp_path)
    with pytest.raises(ConfigError, match=r"--sites: 9 is not between 1 and 4"):
        trace.alibaba(ALIBABA, sites=9)
    base = trace.alibaba(ALIBABA)
    bad = tmp_path / "jobs.csv"
    bad.write_text("id,arrival_s,duration_s,cpus,gpus,gpu_type,nvlink,dataset,tenant\n"
                   "a,0,10,1,2,,required,,t\nb,1,10,1,2,,always,,t\n")
    with pytest.raises(ConfigError, match=r"jobs.csv:3: nvlink 'always' is not required, preferred or empty"):
        trace.csv_jobs(bad, base)
    bad.write_text("id,arrival_s\na,0\n")
    with pytest.raises(ConfigError, match=r"jobs.csv:1: missing column\(s\) duration_s"):
        trace.csv_jobs(bad, base)


def test_a_pod_list_of_the_traces_format_is_taken_by_path(tmp_path, capsys):
    own = tmp_path / "my-variant.csv"
    shipped = (ALIBABA / "openb_pod_list_default.csv").read_text().splitlines()
    own.write_text("\n".join(shipped[:1] + [row for row in shipped[1:] if ",8," not in row]) + "\n")
    mine, base = trace.alibaba(ALIBABA, str(own)), trace.alibaba(ALIBABA)
    assert 0 < len(mine.jobs) < len(base.jobs) and all(j.id in {b.id for b in base.jobs} for j in mine.jobs)
    assert main(["simulate", "--trace", str(ALIBABA), "--pods", str(own), "--mode", "inflation",
                 "--policy", str(ROOT / "configs" / "policy.yaml"), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {r["strategy"] for r in out["inflation"]["results"]} >= {"topology", "blind"}


@pytest.mark.parametrize(("rows", "error"), [
    ("name,cpu_milli\na,1\n", r"my.csv:1: no column memory_mib, num_gpu, gpu_milli"),
    ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1000,1024,1,500\nb,1000,1024,two,1000\n",
     r"my.csv:3: num_gpu: 'two' is not a whole number"),
    ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1000,-5,0,0\n", r"my.csv:2: memory_mib: -5 is negative"),
    ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1000,1024,1,0\n", r"my.csv:2: gpu_milli: 0 is not a share"),
    ("name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time,deletion_time\na,1000,1024,1,1000,50,10\n",
     r"my.csv:2: deletion_time 10 is before creation_time 50"),
])
def test_a_bad_pod_list_is_refused_with_its_file_line_and_column(tmp_path, rows, error):
    (tmp_path / "my.csv").write_text(rows)
    with pytest.raises(ConfigError, match=error):
        trace.alibaba(ALIBABA, str(tmp_path / "my.csv"))


def test_a_pod_list_that_is_neither_shipped_nor_a_path_is_refused(capsys):
    assert main(["simulate", "--trace", str(ALIBABA), "--pods", "multigpu", "--mode", "inflation"]) != 0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--pods: 'multigpu' is neither a shipped list (default, gpuspec33, multigpu50)" in line


def test_cli_replays_a_csv_on_configured_sites(tmp_path, capsys):
    site = tmp_path / "site.yaml"
    site.write_text("""
apiVersion: federation/v1
kind: Site
metadata: {name: lab}
spec:
  federation: {insecure: true}
  location: {jurisdiction: DE, region: eu-west}
  gpu_nodes:
    - {name: dgx, replicas: 2, gpus: {model: H100, count: 8, memory: 80Gi}, nvlink: [[0,1,2,3,4,5,6,7]]}
""")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("id,arrival_s,duration_s,cpus,gpus,gpu_type,nvlink,dataset,tenant\n"
                    + "".join(f"j{i},{i},100,1,{[8, 4, 0.5][i % 3]},H100,{'required' if i % 3 < 2 else ''},,t\n"
                              for i in range(12)))
    plot = tmp_path / "out.png"
    assert main(["simulate", "--site-config", str(site), "--jobs", str(jobs), "--mode", "replay",
                 "--policy", str(ROOT / "configs" / "policy.yaml"), "--plot", str(plot), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ours = {r["strategy"]: r for r in out["replay"]["results"]}["topology"]
    assert ours["placed"] == 12 and ours["violations"] == 0 and ours["nvlink_in_one_domain"] == 8
    assert set(out["replay"]["ratios"]) == {"topology/blind", "topology/round-robin"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_refuses_configured_sites_without_jobs(tmp_path, capsys):
    assert main(["simulate", "--site-config", str(tmp_path / "none.yaml")]) != 0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error[") and "none.yaml" in line


def test_schedule_on_the_trace_layout_keeps_the_state_unchanged(excerpt):
    state = GpuState([s.inventory for s in excerpt.sites])
    snap = engine.snapshot_of(excerpt, state, __import__("numpy").zeros(4), __import__("numpy").zeros(4), RULES)
    before = state.free.copy()
    policies.schedule(snap, [engine._pending(j) for j in excerpt.jobs[:50]], 0)
    assert (state.free == before).all()


def test_water_filling_and_jains_index():
    from federation.simulate.fairness import entitlements, jain
    assert entitlements({"a": 1, "b": 10, "c": 10}, 9) == {"a": 1, "b": 4, "c": 4}
    assert entitlements({"a": 1, "b": 2}, 10) == {"a": 1, "b": 2}
    assert jain([1, 1, 1]) == 1.0 and jain([1, 0]) == 0.5


def test_fairness_on_a_contended_excerpt_federated_is_fairest_and_keeps_every_rule(capsys):
    args = ["simulate", "--trace", str(ALIBABA), "--mode", "fairness", "--keep-every", "4", "--load", "1.5",
            "--min-runtime", "60", "--policy", str(ROOT / "configs" / "policy.yaml"), "--format", "json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["strategy"]: r for r in out["results"]}
    assert set(rows) == {"federated", "fair-per-site", "fifo-per-site"}
    assert "peak load of 1.50x (asked 1.5x" in out["setup"]
    for r in rows.values():
        assert r["finished"] + r["unfinished"] == 419
        assert 0 < r["jain_over_time"] <= 1
    assert rows["fifo-per-site"]["preemptions"] == 0
    assert rows["federated"]["jain_over_time"] >= rows["fifo-per-site"]["jain_over_time"]
    assert set(out["ratios"]) == {"federated/fair-per-site", "federated/fifo-per-site"}


def test_a_steady_load_offers_the_stated_share_and_draws_the_same_jobs_for_the_same_seed(excerpt):
    from federation.simulate import load
    nodes = [n for s in excerpt.sites for n in s.inventory.nodes]
    gpus = sum(n.gpus for n in nodes)
    at = load.steady(excerpt.jobs, nodes, 0.9, 2000, seed=3)
    jobs, gap = at.jobs, at.gap
    assert len(jobs) == len({j.id for j in jobs}) == 2000 and at.load == pytest.approx(0.9, rel=1e-3)
    arrivals = [j.arrival for j in jobs]
    assert arrivals == sorted(arrivals) and arrivals[0] == 0 and gap > 0
    window = arrivals[-1]
    asked = sum((j.gpu.whole if j.gpu else 0) * min(j.duration, window - j.arrival) for j in jobs)
    assert (at.busiest, at.on_all) == (gpus, at.load)   # every ask of this excerpt fits most nodes
    assert asked / (gpus * window) == pytest.approx(0.9, rel=1e-3)      # the definition, recomputed
    by_id = {j.id: j for j in excerpt.jobs}
    assert all(replace(j, id=j.id.split("#")[0], arrival=0) == replace(by_id[j.id.split("#")[0]], arrival=0)
               for j in jobs)
    assert load.steady(excerpt.jobs, nodes, 0.9, 2000, seed=3) == at
    assert load.steady(excerpt.jobs, nodes, 0.9, 2000, seed=4).jobs != jobs
    untimed = [replace(j, duration=0.0) for j in excerpt.jobs]
    timed = load.timed_like(untimed, excerpt.jobs, seed=3)
    for size in load.SIZES:
        have = {j.duration for j in excerpt.jobs if load.size_of(j) == size}
        assert {j.duration for j in timed if load.size_of(j) == size} <= have


def test_the_load_is_stated_on_the_gpus_that_only_some_asks_fit():
    from federation.simulate import load
    nodes = [GpuNode("sxm", "G2", 0, ("sxm/nv",) * 8), *(GpuNode(f"t4-{k}", "T4", 0, ("", "")) for k in range(4))]
    eight = GpuRequest(count=8, nvlink="required")
    jobs = [trace.SimJob("big", 0, 3600.0, 8, 0, eight), trace.SimJob("one", 0, 600.0, 1, 0, GpuRequest(count=1))]
    at = load.steady(jobs, nodes, 0.8, 400, seed=1)
    window = at.jobs[-1].arrival

    def offered(which) -> float:
        return sum(j.gpu.whole * min(j.duration, window - j.arrival) for j in at.jobs if which(j)) / window
    assert at.busiest == 8 and at.load == pytest.approx(0.8, rel=1e-3)
    assert offered(lambda j: j.gpu == eight) / 8 == pytest.approx(0.8, rel=1e-3)   # only the NVLink node holds them
    assert offered(lambda j: True) / 16 == pytest.approx(at.on_all, rel=1e-3) and at.on_all < 0.8
