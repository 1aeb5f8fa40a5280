"""The agent's reconcile pass against an in-memory Ray driver."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from federation.errors import InvalidSpec, RayError
from federation.service import wire
from federation.service.spec_wire import spec_to_pb
from federation.spec import SiteConfig
from federation.spec.site import NodeSpec
from federation.v1 import federation_pb2 as pb
from policies.gpus import Slot
from site_agent.binding import NODE_LABEL
from site_agent.inventory import site_gpus
from site_agent.ray_driver import RayDriver, RayJob, RayNode, RayResources
from site_agent.reconciler import Reconciler
from site_agent.veto import resolve_runtime_env
from tests.conftest import make_spec


class MemoryRay(RayDriver):
    def __init__(self):
        self.jobs_: dict[str, RayJob] = {}
        self.logs_: dict[str, bytes] = {}
        self.submitted: list[tuple[str, dict]] = []
        self.entrypoints: dict[str, tuple[str, float]] = {}
        self.stopped: list[str] = []
        self.down = False
        self.refuse = ""
        self.nodes_: list[RayNode] = []

    def submit(self, submission_id, entrypoint, runtime_env, *, cpus, memory, gpus, metadata, task=False,
               label_selector=None):
        if self.down:
            raise RayError("down")
        if self.refuse:
            raise RayError(self.refuse)
        if submission_id in self.jobs_:
            return False
        self.jobs_[submission_id] = RayJob(submission_id, "PENDING", site=metadata.get("federation_site"))
        self.submitted.append((submission_id, runtime_env))
        self.entrypoints[submission_id] = (entrypoint, gpus)
        return True

    def jobs(self):
        if self.down:
            raise RayError("down")
        return dict(self.jobs_)

    def status(self, submission_id):
        job = self.jobs_.get(submission_id)
        return job.status if job else None

    def stop(self, submission_id):
        self.stopped.append(submission_id)
        self.jobs_[submission_id] = RayJob(submission_id, "STOPPED")

    def logs(self, submission_id, offset=0):
        return self.logs_.get(submission_id, b"")[offset:]

    def resources(self):
        return RayResources(4, 2**30, 0, 1)

    def nodes(self):
        if self.down:
            raise RayError("down")
        return list(self.nodes_)


def site_config(tmp_path: Path, **veto) -> SiteConfig:
    (tmp_path / "jobs").mkdir(exist_ok=True)
    return SiteConfig.model_validate({
        "metadata": {"name": "eu-west"},
        "spec": {"federation": {"insecure": True}, "location": {"jurisdiction": "DE", "region": "eu-west"},
                 "datasets": [{"name": "patients", "classification": "gdpr-personal", "path": "/data/p.csv"}],
                 "veto": veto, "work_dir": str(tmp_path)}})


def assignment(job_id="j-1", attempt=1, crosses=("results", "model-updates", "logs"), **spec) -> pb.Assignment:
    return pb.Assignment(job_id=job_id, attempt=attempt, submission_id=f"fed-{job_id}-{attempt}",
                         spec=spec_to_pb(make_spec(**spec)), may_cross_border=list(crosses))


def states(report) -> dict[str, int]:
    return {f"{s.job_id}/{s.attempt}": s.state for s in report.statuses}


@pytest.fixture
def ray():
    return MemoryRay()


def test_nothing_changes_before_the_federation_speaks(tmp_path, ray):
    ray.jobs_["fed-j-9-1"] = RayJob("fed-j-9-1", "RUNNING")
    r = Reconciler(site_config(tmp_path), ray)
    report = r.reconcile()
    assert ray.stopped == [] and ray.submitted == []
    assert states(report) == {"j-9/1": pb.ATTEMPT_STATE_RUNNING}


def test_starts_desired_stops_undesired_and_reports_everything(tmp_path, ray):
    ray.jobs_["fed-j-9-1"] = RayJob("fed-j-9-1", "RUNNING")
    ray.jobs_["raysubmit_local"] = RayJob("raysubmit_local", "RUNNING")
    r = Reconciler(site_config(tmp_path), ray)
    r.set_desired([assignment(datasets=["patients"], runtime_env={"working_dir": "./jobs"})])
    report = r.reconcile()
    ((sid, env),) = ray.submitted
    assert sid == "fed-j-1-1"
    assert env["working_dir"] == str(tmp_path / "jobs")
    assert env["env_vars"]["FEDCTL_DATASET_PATIENTS"] == "/data/p.csv"
    assert env["env_vars"]["FEDCTL_JOB_ID"] == "j-1"
    assert ray.stopped == ["fed-j-9-1"], "a federation job nobody wants is stopped; local jobs are left alone"
    assert states(report) == {"j-1/1": pb.ATTEMPT_STATE_ASSIGNED, "j-9/1": pb.ATTEMPT_STATE_RUNNING}
    report = r.reconcile()
    assert states(report) == {"j-1/1": pb.ATTEMPT_STATE_ASSIGNED, "j-9/1": pb.ATTEMPT_STATE_STOPPED}
    assert len(ray.submitted) == 1, "a second pass never submits again"
    assert r.starting == {"fed-j-1-1"} and not r.any_started()
    ray.jobs_["fed-j-1-1"] = RayJob("fed-j-1-1", "RUNNING")
    assert r.any_started()
    r.reconcile()
    assert r.starting == set()


def test_jobs_of_another_site_on_a_shared_ray_cluster_are_left_alone(tmp_path, ray):
    ray.jobs_["fed-j-7-1"] = RayJob("fed-j-7-1", "RUNNING", site="eu-central")
    r = Reconciler(site_config(tmp_path), ray)
    r.set_desired([])
    assert list(r.reconcile().statuses) == []
    assert ray.stopped == []


def test_logs_are_shipped_incrementally(tmp_path, ray):
    r = Reconciler(site_config(tmp_path), ray)
    r.set_desired([assignment()])
    r.reconcile()
    ray.logs_["fed-j-1-1"] = b"setting up\n"
    assert list(r.reconcile().logs) == [], "no logs are read while Ray still prepares the job"
    ray.jobs_["fed-j-1-1"] = RayJob("fed-j-1-1", "RUNNING")
    ray.logs_["fed-j-1-1"] = b"one\n"
    (chunk,) = r.reconcile().logs
    assert (chunk.offset, chunk.data) == (0, b"one\n")
    ray.logs_["fed-j-1-1"] = b"one\ntwo\n"
    (chunk,) = r.reconcile().logs
    assert (chunk.offset, chunk.data) == (4, b"two\n")
    assert list(r.reconcile().logs) == []
    ray.jobs_["fed-j-1-1"] = RayJob("fed-j-1-1", "SUCCEEDED")
    ray.logs_["fed-j-1-1"] = b"one\ntwo\nbye\n"
    (chunk,) = r.reconcile().logs
    assert chunk.data == b"bye\n", "the last bytes are read after the job ends"
    r.reconcile()
    ray.logs_["fed-j-1-1"] += b"never read"
    assert list(r.reconcile().logs) == [], "an ended job's log is not read again"
    r.new_stream()
    r.set_desired([assignment()])
    (chunk,) = r.reconcile().logs
    assert chunk.offset == 0, "a new stream resends from the start; the federation skips what it holds"


@pytest.mark.parametrize("veto, spec, reason", [
    ({"tenants": ["oncology"]}, {"tenant": "billing"}, "tenant billing may not run here"),
    ({"max_cpus_per_job": 1}, {"resources": {"cpus": 2}}, "asks 2 cpus; this site allows 1 per job"),
    ({"max_gpus_per_job": 0}, {"resources": {"gpus": 1}}, "asks 1 gpus"),
    ({"classifications": ["public"]}, {"datasets": ["patients"]}, "dataset patients is gdpr-personal"),
    ({}, {"runtime_env": {"working_dir": "../../etc"}}, "escapes the site's work_dir"),
    ({}, {"runtime_env": {"working_dir": "s3://bucket/code.zip"}}, "remote URIs are not accepted"),
    ({}, {"runtime_env": {"working_dir": "./missing"}}, "does not exist at this site"),
    ({}, {"runtime_env": {"py_modules": ["/etc"]}}, "runtime_env.py_modules[0] '/etc' escapes the site's work_dir"),
    ({}, {"runtime_env": {"image_uri": "evil:latest"}}, "runtime_env.image_uri is not accepted by this site"),
    ({}, {"runtime_env": {"pip": "/etc/requirements.txt"}}, "runtime_env.pip must be a list of package names"),
    # what a hostile job would install or read instead of a package
    ({}, {"runtime_env": {"pip": ["numpy", "git+https://evil.example/x.git"]}},
     "runtime_env.pip[1] 'git+https://evil.example/x.git' is not a plain requirement"),
    ({}, {"runtime_env": {"pip": ["--index-url=https://evil.example/simple", "numpy"]}},
     "runtime_env.pip[0] '--index-url=https://evil.example/simple' is not a plain requirement"),
    ({}, {"runtime_env": {"pip": ["-r /etc/shadow"]}}, "runtime_env.pip[0] '-r /etc/shadow' is not a plain"),
    ({}, {"runtime_env": {"uv": ["pkg @ https://evil.example/pkg.whl"]}},
     "runtime_env.uv[0] 'pkg @ https://evil.example/pkg.whl' is not a plain requirement"),
    ({}, {"runtime_env": {"uv": ["-e ."]}}, "runtime_env.uv[0] '-e .' is not a plain requirement"),
    ({}, {"runtime_env": {"pip": ["./local_wheel.whl"]}}, "runtime_env.pip[0] './local_wheel.whl' is not a plain"),
])
def test_site_veto_rejects_and_never_submits(tmp_path, ray, veto, spec, reason):
    r = Reconciler(site_config(tmp_path, **veto), ray)
    r.set_desired([assignment(**spec)])
    report = r.reconcile()
    assert ray.submitted == []
    (status,) = report.statuses
    assert status.state == pb.ATTEMPT_STATE_REJECTED and reason in status.message
    r.set_desired([])
    assert list(r.reconcile().statuses) == [], "forgotten once the federation stops asking"


def test_plain_requirements_pass_the_site(tmp_path):
    packages = ["numpy==2.1", "ray[default]>=2.40", "torch>=2; python_version >= '3.10'", "scikit-learn"]
    env, reason = resolve_runtime_env({"pip": packages, "uv": packages}, tmp_path)
    assert reason is None and env["pip"] == packages


def test_a_sites_package_allow_list_refuses_the_rest(tmp_path, ray):
    allowed = ["NumPy", "scikit_learn"]
    _, reason = resolve_runtime_env({"pip": ["numpy==2.1", "scikit-learn>=1"]}, tmp_path, allowed)
    assert reason is None, "names compare as pip does: case and -/_ aside"
    _, reason = resolve_runtime_env({"uv": ["numpy", "evil-pkg==1"]}, tmp_path, allowed)
    assert reason == "runtime_env.uv[1] 'evil-pkg' is not in this site's allowed packages (spec.veto.packages)"
    r = Reconciler(site_config(tmp_path, packages=allowed), ray)
    r.set_desired([assignment(runtime_env={"pip": ["requests"]})])
    (status,) = r.reconcile().statuses
    assert status.state == pb.ATTEMPT_STATE_REJECTED and "'requests' is not in this site's allowed" in status.message
    assert ray.submitted == []


def test_unreachable_ray_sends_no_report_and_fails_nothing(tmp_path, ray):
    r = Reconciler(site_config(tmp_path), ray)
    r.set_desired([assignment()])
    ray.down = True
    assert r.reconcile() is None
    assert ray.submitted == [] and r.local == {}
    ray.down = False
    assert states(r.reconcile()) == {"j-1/1": pb.ATTEMPT_STATE_ASSIGNED}
    assert [sid for sid, _ in ray.submitted] == ["fed-j-1-1"]


def test_a_submission_ray_refuses_fails_the_attempt(tmp_path, ray):
    ray.refuse = "runtime_env: pip package not found"
    r = Reconciler(site_config(tmp_path), ray)
    r.set_desired([assignment()])
    (status,) = r.reconcile().statuses
    assert status.state == pb.ATTEMPT_STATE_FAILED and "pip package not found" in status.message


def test_an_attempt_ray_lost_before_it_ran_is_started_again(tmp_path, ray):
    r = Reconciler(site_config(tmp_path), ray)
    r.set_desired([assignment()])
    r.reconcile()
    del ray.jobs_["fed-j-1-1"]   # the cluster restarted
    r.reconcile()
    assert [sid for sid, _ in ray.submitted] == ["fed-j-1-1", "fed-j-1-1"]
    ray.jobs_["fed-j-1-1"] = RayJob("fed-j-1-1", "RUNNING")
    r.reconcile()
    del ray.jobs_["fed-j-1-1"]   # restarted again, after it ran
    assert list(r.reconcile().statuses) == [], "reported missing, so the federation decides"
    assert len(ray.submitted) == 2, "never started a second time by the agent"


def test_working_dir_symlink_escape_is_refused(tmp_path):
    (tmp_path / "link").symlink_to("/etc")
    _, reason = resolve_runtime_env({"working_dir": "link"}, tmp_path)
    assert reason and "escapes" in reason
    _, reason = resolve_runtime_env({"working_dir": "."}, None)
    assert reason and "no work_dir" in reason
    env, reason = resolve_runtime_env({"pip": ["numpy"]}, None)
    assert reason is None and env == {"pip": ["numpy"]}
    (tmp_path / "lib").mkdir()
    env, reason = resolve_runtime_env({"py_modules": ["lib"], "env_vars": {"A": "1"}}, tmp_path)
    assert reason is None and env["py_modules"] == [str(tmp_path / "lib")]


def test_an_assignment_the_site_cannot_read_is_refused_not_fatal(tmp_path, ray):
    unreadable = json.dumps({"metadata": {"name": "Not A Name"}, "spec": {"entrypoint": "x"}})
    bad = pb.Assignment(job_id="j-1", attempt=1, submission_id="fed-j-1-1", spec=pb.JobSpec(json=unreadable))
    r = Reconciler(site_config(tmp_path), ray)
    r.set_desired([bad, assignment("j-2")])
    report = r.reconcile()
    assert states(report)["j-1/1"] == pb.ATTEMPT_STATE_REJECTED
    assert [sid for sid, _ in ray.submitted] == ["fed-j-2-1"]



def gpu_site(tmp_path: Path) -> SiteConfig:
    base = site_config(tmp_path)
    return base.model_copy(update={"spec": base.spec.model_copy(update={"gpu_nodes": [NodeSpec.model_validate(
        {"name": "dgx", "gpus": {"model": "H100", "count": 4, "memory": "80Gi"}, "nvlink": [[0, 1, 2, 3]]})]})})


def bound(binding, **spec) -> pb.Assignment:
    a = assignment(resources={"gpus": 2}, **spec)
    a.binding.extend(wire.binding_to_pb(binding))
    return a


def test_a_bound_attempt_runs_behind_its_placement_group(tmp_path, ray):
    config = gpu_site(tmp_path)
    ray.nodes_ = [RayNode({NODE_LABEL: "dgx"}, 4.0)]
    r = Reconciler(config, ray, gpus=site_gpus(config, ray))
    r.set_desired([bound((Slot("dgx", (2, 3)),), entrypoint="python train.py --lr 1e-3")])
    r.reconcile()
    ((sid, env),) = ray.submitted
    entrypoint, gpus = ray.entrypoints[sid]
    assert entrypoint.endswith("-m site_agent.guard") and gpus == 0.0
    assert env["env_vars"]["FEDCTL_GUARDED"].endswith("-m site_agent.binding")
    assert env["env_vars"]["FEDCTL_ENTRYPOINT"] == "python train.py --lr 1e-3"
    assert env["env_vars"]["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert json.loads(env["env_vars"]["FEDCTL_BINDING"]) == [["dgx", [2, 3], 1000]]


@pytest.mark.parametrize("binding,nodes,why", [
    ((Slot("other", (0, 1)),), [RayNode({NODE_LABEL: "dgx"}, 4.0)], "node other is not in this site's GPU inventory"),
    ((Slot("dgx", (3, 4)),), [RayNode({NODE_LABEL: "dgx"}, 4.0)], "node dgx has 4 GPUs, the binding names [3, 4]"),
    ((Slot("dgx", (0, 1)),), [RayNode({}, 4.0)], "no live Ray node is labelled fedctl.io/node=dgx"),
    ((Slot("dgx", (0, 1)),), [RayNode({NODE_LABEL: "dgx"}, 1.0)], "Ray node dgx has 1 GPUs, the binding needs 2"),
])
def test_a_binding_the_site_cannot_honour_is_a_failed_reservation(tmp_path, ray, binding, nodes, why):
    config = gpu_site(tmp_path)
    ray.nodes_ = nodes
    r = Reconciler(config, ray, gpus=site_gpus(config, ray))
    r.set_desired([bound(binding)])
    (status,) = r.reconcile().statuses
    assert status.state == pb.ATTEMPT_STATE_FAILED and ray.submitted == []
    assert status.message == f"failed reservation: reservation mismatch: {why}"


def test_ray_refusing_the_placement_group_is_reported_as_a_failed_reservation(tmp_path, ray):
    config = gpu_site(tmp_path)
    ray.nodes_ = [RayNode({NODE_LABEL: "dgx"}, 4.0)]
    r = Reconciler(config, ray, gpus=site_gpus(config, ray))
    r.set_desired([bound((Slot("dgx", (0, 1)),))])
    r.reconcile()
    ray.jobs_["fed-j-1-1"] = RayJob("fed-j-1-1", "FAILED", (
        "Job entrypoint command failed with exit code 86, last available logs (truncated to 20,000 chars):\n"
        "reservation mismatch: Ray could not reserve dgx (2 GPU) within 60s"))
    (status,) = r.reconcile().statuses
    assert status.message == "failed reservation: reservation mismatch: Ray could not reserve dgx (2 GPU) within 60s"


def test_a_fenced_site_stops_its_work_reports_it_lost_and_starts_nothing_until_the_federation_speaks(tmp_path, ray):
    r = Reconciler(site_config(tmp_path), ray)
    r.set_desired([assignment("j-1"), assignment("j-2")])
    r.reconcile()
    ray.jobs_["fed-j-1-1"] = RayJob("fed-j-1-1", "RUNNING")
    ray.jobs_["fed-j-2-1"] = RayJob("fed-j-2-1", "PENDING")
    ray.jobs_["fed-j-0-1"] = RayJob("fed-j-0-1", "SUCCEEDED")
    assert r.fence("lease expired") == 2
    assert sorted(ray.stopped) == ["fed-j-1-1", "fed-j-2-1"]     # the ended one is left as it is
    report = r.reconcile()
    assert states(report) == {"j-0/1": pb.ATTEMPT_STATE_SUCCEEDED, "j-1/1": pb.ATTEMPT_STATE_LOST,
                              "j-2/1": pb.ATTEMPT_STATE_LOST}   # Ray says stopped; the site's word is lost
    assert all("lease expired" in s.message for s in report.statuses if s.state == pb.ATTEMPT_STATE_LOST)
    del ray.jobs_["fed-j-2-1"]
    r.new_stream()
    r.set_desired([assignment("j-1"), assignment("j-2"), assignment("j-3")])   # back, before its lease ran out there
    r.reconcile()
    assert [sid for sid, _ in ray.submitted] == ["fed-j-1-1", "fed-j-2-1", "fed-j-3-1"]   # only the new one again
    assert not r.fenced


def test_an_assignment_older_than_an_attempt_seen_here_is_a_stale_epoch(tmp_path, ray):
    ray.jobs_["fed-j-1-3"] = RayJob("fed-j-1-3", "RUNNING")
    r = Reconciler(site_config(tmp_path), ray)
    r.reconcile()
    r.set_desired([assignment("j-1", attempt=2)])
    report = r.reconcile()
    assert ray.submitted == []
    (refused,) = [s for s in report.statuses if s.attempt == 2]
    assert refused.state == pb.ATTEMPT_STATE_REJECTED and "stale epoch: attempt 3" in refused.message


def test_a_later_attempt_is_told_to_resume_from_the_checkpoint(tmp_path, ray):
    r = Reconciler(site_config(tmp_path), ray)
    r.set_desired([assignment("j-1", 1, checkpoint={"path": "/shared/ckpt/{job_id}"}),
                   assignment("j-2", 3, checkpoint={"path": "/shared/ckpt/{job_id}"}), assignment("j-3", 2)])
    r.reconcile()
    env = {sid: e["env_vars"] for sid, e in ray.submitted}
    assert env["fed-j-1-1"]["FEDCTL_CHECKPOINT_PATH"] == "/shared/ckpt/j-1"
    assert "FEDCTL_RESUME" not in env["fed-j-1-1"]
    assert (env["fed-j-2-3"]["FEDCTL_CHECKPOINT_PATH"], env["fed-j-2-3"]["FEDCTL_RESUME"]) == ("/shared/ckpt/j-2", "1")
    assert "FEDCTL_CHECKPOINT_PATH" not in env["fed-j-3-2"] and "FEDCTL_RESUME" not in env["fed-j-3-2"]


def test_inputs_are_fetched_checked_and_outputs_sent_with_the_terminal_status(tmp_path, ray):
    import hashlib
    model = b"weights-v1"
    fetched = []

    def fetch(job_id, attempt, name):
        fetched.append((job_id, attempt, name))
        return {"model.npz": model, "bad.npz": b"tampered"}[name]

    r = Reconciler(site_config(tmp_path), ray, fetch_input=fetch)
    good = assignment("j-1", 1)
    good.inputs.add(name="model.npz", sha256=hashlib.sha256(model).hexdigest(), size=len(model))
    bad = assignment("j-2", 1)
    bad.inputs.add(name="bad.npz", sha256=hashlib.sha256(b"original").hexdigest(), size=8)
    r.set_desired([good, bad])
    r.reconcile()
    assert [sid for sid, _ in ray.submitted] == ["fed-j-1-1"], "an input that fails its digest starts nothing"
    env = ray.submitted[0][1]["env_vars"]
    inbox, outbox = Path(env["FEDCTL_INPUT_DIR"]), Path(env["FEDCTL_OUTPUT_DIR"])
    assert (inbox / "model.npz").read_bytes() == model and outbox.is_dir()
    assert str(inbox).startswith(str(tmp_path))
    (outbox / "update.npz").write_bytes(b"delta")
    ray.jobs_["fed-j-1-1"] = RayJob("fed-j-1-1", "RUNNING")
    assert list(r.reconcile().outputs) == [], "outputs go up only with success"
    ray.jobs_["fed-j-1-1"] = RayJob("fed-j-1-1", "SUCCEEDED")
    report = r.reconcile()
    assert [(o.job_id, o.attempt, o.name, o.data) for o in report.outputs] == [("j-1", 1, "update.npz", b"delta")]
    assert states(report)["j-1/1"] == pb.ATTEMPT_STATE_SUCCEEDED
    r.set_desired([])
    r.reconcile()
    assert not inbox.parent.exists(), "an attempt's folder goes once it ended and is no longer wanted"


def test_an_input_name_that_would_escape_its_folder_is_refused(tmp_path, ray):
    r = Reconciler(site_config(tmp_path), ray, fetch_input=lambda *a: b"x")
    a = assignment("j-1", 1)
    a.inputs.add(name="../../etc/passwd", sha256="0" * 64, size=1)
    r.set_desired([a])
    report = r.reconcile()
    assert ray.submitted == [] and states(report)["j-1/1"] == pb.ATTEMPT_STATE_REJECTED


def test_a_job_asking_for_no_gpu_sees_none_and_may_not_choose_its_devices(tmp_path, ray):
    r = Reconciler(site_config(tmp_path), ray)
    r.set_desired([assignment(entrypoint="nvidia-smi")])
    r.reconcile()
    ((_, env),) = ray.submitted
    assert env["env_vars"]["CUDA_VISIBLE_DEVICES"] == ""
    with pytest.raises(InvalidSpec, match=r"env_vars.CUDA_VISIBLE_DEVICES: set by the site"):
        make_spec(runtime_env={"env_vars": {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}})
    for name in ("RAY_AUTH_TOKEN", "PIP_INDEX_URL", "PIP_CONFIG_FILE", "UV_INDEX_URL", "PYTHONUSERBASE"):
        with pytest.raises(InvalidSpec, match=rf"env_vars.{name}: set by the site"):
            make_spec(runtime_env={"env_vars": {name: "https://evil.example/simple"}})


@pytest.mark.parametrize("working_dir", [".", ".fedctl-io", ".fedctl-io/eu-west/fed-j-1-1/out", "jobs/../.fedctl-io"])
def test_a_job_cannot_have_the_site_pack_its_private_folder(tmp_path, working_dir):
    (tmp_path / ".fedctl-io" / "eu-west" / "fed-j-1-1" / "out").mkdir(parents=True)
    (tmp_path / "jobs").mkdir()
    _, reason = resolve_runtime_env({"working_dir": working_dir}, tmp_path)
    assert reason and "holds the site's own folder .fedctl-io" in reason
    _, reason = resolve_runtime_env({"py_modules": [working_dir]}, tmp_path)
    assert reason and "holds the site's own folder" in reason


@pytest.mark.parametrize("crosses, sent", [(("nothing",), False), (("logs",), False), (("results",), True)])
def test_files_leave_the_site_only_where_the_jobs_data_lets_results_cross(tmp_path, ray, crosses, sent):
    r = Reconciler(site_config(tmp_path), ray)
    r.set_desired([assignment("j-1", 1, crosses=crosses)])
    r.reconcile()
    outbox = Path(ray.submitted[0][1]["env_vars"]["FEDCTL_OUTPUT_DIR"])
    (outbox / "rows.csv").write_bytes(b"patient,diagnosis")
    (outbox / "shadow").symlink_to("/etc/shadow")     # a link is never followed, whatever the data
    ray.jobs_["fed-j-1-1"] = RayJob("fed-j-1-1", "SUCCEEDED")
    names = [o.name for o in r.reconcile().outputs]
    assert names == (["rows.csv"] if sent else [])
