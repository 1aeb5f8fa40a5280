"""`fedctl simulate --mode cost`: node billing, spot interruptions and checkpoints, data rules
under every strategy, ours against the baselines, and the CLI on the Alibaba trace."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

import policies
from federation.cli.main import main
from federation.simulate import cost, cost_report, cost_setup
from policies.gpus import GpuNode, GpuRequest

ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT.parent / "shared" / "traces" / "alibaba-gpu-v2023"
CFG = cost_setup.CostConfig(cycle_s=0.0, spot_rate=0.0)      # a cycle at every change; no spot lost unless asked
US_T4 = 48 * 0.04 + 4 * 0.50                           # a US on-demand 4 x T4 node per hour: 3.92
ONE_GPU = GpuRequest(count=1)


def workload(*jobs: cost_setup.CostJob, onprem: tuple[GpuNode, ...] = (), cpus: float = 0.0) -> cost_setup.CostWorkload:
    return cost_setup.CostWorkload(onprem, cpus, tuple(jobs), "test")


def job(id: str = "j", arrival: float = 0.0, duration: float = 3600.0, **kw) -> cost_setup.CostJob:
    return cost_setup.CostJob(id, arrival, duration, kw.pop("cpus", 4.0), kw.pop("gpu", ONE_GPU), **kw)


class _At:
    """A seeded draw stood in by fixed ones: spot nodes are lost after these hours, then never."""

    def __init__(self, *hours: float) -> None:
        self.hours = list(hours)

    def expovariate(self, rate: float) -> float:
        return self.hours.pop(0) if self.hours else 1e9


def test_a_node_is_billed_from_launch_to_release_after_the_idle_timeout():
    # Nothing on-prem: the job starts a US 4 x T4 on-demand node at 0 (the cheaper region, the
    # node type that starts first), runs from 180 s to 3780 s; the node goes idle then and is
    # released 600 s later: 4380 s billed.
    o = cost.run(workload(job()), "ours", CFG)
    (bill,) = o.bills
    assert (bill.site, bill.node_type, bill.launched, bill.end) == ("cloud-us", "t4x4-od", 0.0, 4380.0)
    assert bill.price == pytest.approx(US_T4)
    assert o.cloud_spend == pytest.approx(4380 / 3600 * US_T4)
    assert o.gpu_hours_bought == pytest.approx(4 * 4380 / 3600)
    assert o.delays == [pytest.approx(180.0)] and o.done == 1 and o.onprem_cost == 0
    # A second job that arrives while the first runs takes the node that is up: no second bill,
    # the node is released 600 s after the later end.
    o = cost.run(workload(job("a"), job("b", arrival=1000.0)), "ours", CFG)
    (bill,) = o.bills
    assert bill.end == 1000 + 3600 + 600 and sorted(o.delays) == [0.0, 180.0]


@pytest.mark.parametrize("every, kept", [(600.0, 1200.0), (1e9, 0.0)])
def test_a_spot_interruption_requeues_the_job_and_a_checkpoint_keeps_what_it_saved(every, kept):
    # A checkpointing job on spot (cheapest-first uses spot for those): the node starts at 0, is
    # ready at 240 s and is lost at 1800 s, after 1560 s of work. Every 600 s: 1200 s are saved,
    # 360 s lost; without a checkpoint in reach, all 1560 s. It goes back to the queue at 1800 s,
    # a new spot node is ready at 2040 s and runs what is left.
    sim = cost._Sim(workload(job(checkpoint=True)), "cheapest-first", replace(CFG, spot_rate=1.0,
                                                                              checkpoint_every=every))
    sim.rng = _At(0.5)   # type: ignore[assignment]
    o = sim.run()
    assert o.interruptions == 1 and o.requeued == 1 and o.done == 1
    assert o.lost_gpu_hours == pytest.approx((1560 - kept) / 3600)
    first, second = sorted(o.bills, key=lambda b: b.launched)
    assert (first.node_type, first.launched, first.end) == ("t4x4-spot", 0.0, 1800.0)
    end = 2040 + 3600 - kept
    assert (second.launched, second.end) == (1800.0, end + 600)
    assert o.delays == [pytest.approx(end - 3600)]        # 240 + lost work + 240


def test_gdpr_jobs_never_leave_the_eu_under_any_strategy():
    # On-prem holds one 1-GPU node; ten GDPR jobs at once: the rest burst, to the EU cloud only,
    # though the US one is cheaper.
    jobs = [job(f"g{i}", gdpr=True, checkpoint=i % 2 == 0) for i in range(10)]
    w = workload(*jobs, onprem=(GpuNode("n0", "T4", 0, ("",)),), cpus=8.0)
    for strategy in cost_setup.STRATEGIES:
        o = cost.run(w, strategy, CFG)
        assert o.violations == 0, strategy
        assert o.done == 10, strategy
        assert "cloud-us" not in o.gpu_hours_used and all(b.site != "cloud-us" for b in o.bills), strategy


def test_the_auditor_counts_a_placement_that_breaks_the_data_rules():
    def to_us(snapshot: policies.Snapshot, pending, now):
        return [policies.Decision(j.id, "cloud-us", 0.0, (), 1, (), "T4", 1.0, "t4x4-od", False, 180.0)
                for j in pending]

    sim = cost._Sim(workload(job("g", gdpr=True), job("p")), "ours", CFG)
    sim.choose = to_us
    o = sim.run()
    assert o.violations == 1 and o.done == 2


def test_ours_is_not_dominated_on_a_small_burst():
    # One 8-GPU on-prem node and a burst of 1-GPU jobs, a third of them GDPR, half checkpointing.
    node = GpuNode("dgx", "V100M32", 0, ("dgx/nv",) * 8)
    jobs = [job(f"j{i}", arrival=60.0 * i, duration=1800.0 + 300 * (i % 4), gdpr=i % 3 == 0, checkpoint=i % 2 == 0)
            for i in range(24)]
    w = workload(*jobs, onprem=(node,), cpus=96.0)
    rows = [cost_report.summary(cost.run(w, s, replace(CFG, spot_rate=0.05))) for s in cost_setup.STRATEGIES]
    assert all(r["violations"] == 0 and r["done"] == 24 for r in rows)
    against = cost_report.dominance(rows)
    assert set(against) == {"onprem-only", "cheapest-first", "spill-over"}
    assert not any(d["dominates"] for d in against.values()), against
    by = {r["strategy"]: r for r in rows}
    assert by["onprem-only"]["cloud_spend"] == 0 and by["onprem-only"]["queue_delay_s"]["p99"] > \
        by["ours"]["queue_delay_s"]["p99"]


def test_the_onprem_cost_is_its_capacity_times_the_span():
    w = workload(job(duration=7200.0), onprem=(GpuNode("n0", "T4", 0, ("",) * 2),), cpus=10.0)
    o = cost.run(w, "onprem-only", CFG)
    assert o.span == 7200 and o.bills == []
    assert o.onprem_cost == pytest.approx(2 * (2 * CFG.onprem_gpu_hour + 10 * CFG.onprem_cpu_hour))


@pytest.mark.skipif(not TRACE.is_dir(), reason="the Alibaba trace is not in ../shared/traces")
def test_cli_cost_mode_on_the_trace(capsys, tmp_path):
    args = ["simulate", "--trace", str(TRACE), "--mode", "cost", "--jobs-cap", "300"]
    assert main([*args, "--plot", str(tmp_path / "c.png")]) == 0
    text = capsys.readouterr().out
    assert "STRATEGY" in text and "spill-over" in text and "cheapest-first" in text and "note:" in text
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert main([*args, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["strategy"]: r for r in out["results"]}
    assert set(out["against_ours"]["ours"]) == {"onprem-only", "cheapest-first", "spill-over"}
    assert not [k for k, v in out["against_ours"]["ours"].items() if v["dominates"]], "no baseline cheaper and faster"
    assert rows["ours"]["violations"] == 0 and rows["ours"]["done"] == 300
    assert out["sites"][0].startswith("onprem-de (DE)")


def test_the_cli_defaults_are_the_config_defaults():
    from federation.cli.main import build_parser
    args = build_parser().parse_args(["simulate", "--mode", "cost"])
    cfg = cost_setup.CostConfig()
    assert (args.onprem_share, args.spot_rate, args.start_delay, args.idle_timeout, args.max_nodes, args.jobs_cap,
            args.load, args.speedup, args.seed) == (cfg.onprem_share, cfg.spot_rate, cfg.start_delay,
                                                    cfg.idle_timeout, cfg.max_nodes, cfg.jobs_cap, cfg.load,
                                                    cfg.speedup, cfg.seed)


def test_a_job_that_refuses_spot_never_rides_a_spot_node_that_is_up():
    # Optimizing cost, the checkpointing job starts a US spot 4 x T4 node; the second job, without a
    # checkpoint, arrives while three of its GPUs are free, and starts an on-demand node instead.
    w = workload(job("a", checkpoint=True), job("b", arrival=1000.0))
    o = cost.run(w, "ours-cost", CFG)
    assert o.spot_unasked == 0 and o.done == 2
    assert sorted(b.node_type for b in o.bills) == ["t4x4-od", "t4x4-spot"]
