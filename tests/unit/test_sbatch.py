"""`#SBATCH` scripts as job specs: a corpus of scripts as users write them, Slurm's time and size
forms, refused directives with their line, and that `fedctl convert` output validates to the same
spec. The translated entrypoint is run for real to check the script sees its SLURM_* variables."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.errors import InvalidSpec
from federation.spec import job_from_dict, job_from_text, load_batch, load_job, sbatch
from federation.spec.sbatch_options import duration

CORPUS = Path(__file__).parent / "sbatch"
GiB, MiB = 1 << 30, 1 << 20


def spec_of(name: str):
    spec, notes = load_batch(CORPUS / name)
    return spec.metadata, spec.spec, notes


def test_an_array_of_cpu_shards():
    meta, body, notes = spec_of("array_preprocess.sbatch")
    assert (meta.name, meta.tenant) == ("preprocess-shards", "genomics")
    assert (body.array, body.time_limit) == ("1-100%10", 1800.0)
    assert (body.resources.cpus, body.resources.memory, body.resources.gpus) == (4, 8 * GiB, 0)
    assert [n.split(":")[0] for n in notes] == ["line 3", "line 9", "line 10", "line 11", "line 12"]
    assert "written as 'preprocess-shards'" in notes[0] and "fedctl logs" in notes[1]


def test_multi_node_gpus_become_gpus_per_node():
    meta, body, notes = spec_of("ddp_multinode.sbatch")
    assert meta.name == "llm-pretrain"
    r, t = body.resources, body.topology
    assert (r.gpus, r.gpu_type, r.cpus, r.memory) == (16, ["H100"], 16 * 6, 0)
    assert (t.gpus_per_node, t.nvlink) == (8, "required")
    assert (body.time_limit, body.queue, body.priority) == (2 * 86400, "gpu", "high")
    assert (body.checkpoint.path, body.retry.limit) == ("/scratch/ckpt", 5)
    assert any("--mem=0" in n and "no memory is asked" in n for n in notes)


def test_typed_gres_dependencies_and_fed_lines():
    _, body, _ = spec_of("gres_dependency.sbatch")
    r = body.resources
    assert (r.gpus, r.gpu_type, r.cpus, r.memory) == (1, ["V100"], 8, 32000 * MiB)
    assert body.time_limit == 600.0   # 10:00 is minutes:seconds
    assert body.dependencies.after_ok == ["j-0a1b2c3d4e5f", "j-1a2b3c4d5e6f"]
    assert body.dependencies.after_any == ["j-2a2b3c4d5e6f"]
    assert (body.retry.limit, body.datasets) == (0, ["patient-records-eu"])
    assert body.runtime_env == {"env_vars": {"MODEL": "resnet50"}}


def test_a_python_script_with_gpus_in_total():
    _, body, _ = spec_of("python_script.sbatch")
    r = body.resources
    assert (r.gpus, r.gpu_type, r.cpus, r.memory) == (4, ["A100"], 8, 80 * GiB)
    assert (body.time_limit, body.singleton) == (5400.0, True)
    assert (body.placement.regions, body.placement.prefer) == (["eu-west"], ["eu-west-1"])
    assert body.entrypoint.split("; exec ")[1].startswith("python3 -c ")


def run_entrypoint(entrypoint: str, tmp_path: Path, **env: str) -> str:
    out = subprocess.run(["/bin/sh", "-c", entrypoint], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                         env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_script_runs_with_its_slurm_variables(tmp_path):
    spec = load_job(CORPUS / "array_preprocess.sbatch")
    out = run_entrypoint(spec.spec.entrypoint, tmp_path, FEDCTL_JOB_ID="j-0a1b2c3d4e5f-7", FEDCTL_ARRAY_INDEX="7")
    assert out == "shard 7 of job j-0a1b2c3d4e5f-7 with 4 cpus\n"
    py = load_job(CORPUS / "python_script.sbatch")
    assert run_entrypoint(py.spec.entrypoint, tmp_path, FEDCTL_JOB_ID="j-1") == "job j-1 named tokenize\n"


def test_quotes_and_dollars_in_the_script_survive(tmp_path):
    text = "#!/bin/bash\n#SBATCH -n 1\nx='it'\"'\"'s'; echo \"$x \\$HOME $0 $1\" 'single $x'\n"
    entry = sbatch.translate(text, "quotes.sbatch").document["spec"]["entrypoint"]
    assert run_entrypoint(entry, tmp_path, FEDCTL_JOB_ID="j-1") == "it's $HOME quotes  single $x\n"


@pytest.mark.parametrize("text, seconds", [
    ("30", 1800), ("90:30", 5430), ("1:30:00", 5400), ("2-12", 2 * 86400 + 12 * 3600),
    ("1-02:30", 86400 + 2 * 3600 + 1800), ("3-00:00:10", 3 * 86400 + 10), ("UNLIMITED", 0), ("infinite", 0)])
def test_slurm_time_forms(text, seconds):
    assert duration(text) == seconds


def test_directives_after_the_first_command_are_not_read():
    script = sbatch.translate("#!/bin/bash\n#SBATCH -c 2\necho hi\n#SBATCH -c 64\n", "late.sbatch")
    assert script.document["spec"]["resources"]["cpus"] == 2


def write(tmp_path: Path, body: str, name: str = "bad.sbatch") -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/bash\n#SBATCH --job-name=bad\n" + body + "echo hi\n")
    return path


@pytest.mark.parametrize("body, line, message", [
    ("#SBATCH --exclusive\n", 3, "#SBATCH --exclusive: not supported: ask for the CPUs, memory and GPUs"),
    ("#SBATCH --frobnicate=1\n", 3, "#SBATCH --frobnicate=1: not a directive fedctl reads"),
    ("#SBATCH -x node01\n", 3, "#SBATCH -x: not supported: choose sites with #FED --sites"),
    ("#SBATCH +x\n", 3, "#SBATCH +x: not an option (write --name=value)"),
    ("#SBATCH --chdir=/scratch\n", 3, "not supported: the job runs in a working folder of its own"),
    ("#SBATCH -c 2\n#SBATCH --time=tomorrow\n", 4, "#SBATCH --time=tomorrow: 'tomorrow' is not a Slurm time"),
    ("#SBATCH --mem=4X\n", 3, "'4X' is not a size"),
    ("#SBATCH --gres=nvme:1\n", 3, "only GPUs are known here"),
    ("#SBATCH --gres=gpu:a100:2,gpu:v100:1\n", 3, "one --gres=gpu[:TYPE]:N"),
    ("#SBATCH --dependency=after:j-0a1b2c3d4e5f\n", 3, "use afterok:ID, afterany:ID, afternotok:ID or singleton"),
    ("#SBATCH --dependency=afterok:1234\n", 3, "'1234' is not a job or array id"),
    ("#SBATCH --dependency=afterok:j-0a1b2c3d4e5f?afterok:j-1a2b3c4d5e6f\n", 3, "'?' (any one of) is not supported"),
    ("#SBATCH --mem=4G\n#SBATCH --mem-per-cpu=1G\n", 4, "--mem-per-cpu with --mem: give one of"),
    ("#SBATCH --gres=gpu:2\n#SBATCH --gpus=4\n", 4, "--gpus with --gres: give one of"),
    ("#SBATCH --cpus-per-gpu=4\n", 3, "--cpus-per-gpu needs GPUs"),
    ("#SBATCH -N 3\n#SBATCH --gpus=8\n", 3, "8 GPUs do not split evenly over 3 nodes"),
    ("#SBATCH -N 2-4\n", 3, "'2-4': a whole number of 1 or more"),
    ("#SBATCH --export=NONE\n", 3, "only --export=ALL: set variables with #FED --env NAME=VALUE"),
    ("#SBATCH --qos=gold\n", 3, "a priority here is low, normal or high"),
    ("#SBATCH --array=5-1\n", 3, "spec.array: array '5-1'"),
    ("#SBATCH --time\n", 3, "#SBATCH --time: needs a value"),
    ("#SBATCH --requeue=yes\n", 3, "--requeue: takes no value"),
    ("#SBATCH --comment='unclosed\n", 3, "No closing quotation"),
    ("#FED --datacenter=eu\n", 3, "#FED --datacenter=eu: not a #FED option (those are: --datasets"),
    ("#FED --env 1X=2\n", 3, "#FED --env=1X=2: write NAME=VALUE"),
    ("#FED --nvlink=maybe\n", 3, "spec.topology.nvlink"),
    ("#FED --priority=urgent\n", 3, "spec.priority: Input should be 'low', 'normal' or 'high'"),
])
def test_bad_directives_are_refused_with_their_line(tmp_path, body, line, message):
    path = write(tmp_path, body)
    with pytest.raises(InvalidSpec) as e:
        load_job(path)
    assert str(e.value).startswith(f"{path}:{line}: "), str(e.value)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_script_of_another_interpreter_or_too_long_is_refused(tmp_path):
    perl = tmp_path / "x.sbatch"
    perl.write_text("#!/usr/bin/perl\n#SBATCH -n 1\nprint 1;\n")
    with pytest.raises(InvalidSpec, match=r"x.sbatch:1: #!/usr/bin/perl: runs a script of perl"):
        load_job(perl)
    with pytest.raises(InvalidSpec, match=r"long.sbatch: the script is \d+ characters; at most about"):
        load_job(write(tmp_path, "# " + "x" * 9000 + "\n", "long.sbatch"))


def test_only_scripts_are_read_as_scripts(tmp_path):
    yaml_spec = tmp_path / "job.yaml"
    yaml_spec.write_text("# #SBATCH in a comment\napiVersion: federation/v1\n")
    assert not sbatch.is_batch_script(yaml_spec)
    assert sbatch.is_batch_script(tmp_path / "any.slurm")
    assert sbatch.is_batch_script(CORPUS / "python_script.sbatch", "#!/bin/sh\n#SBATCH -n 1\n")


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.sbatch")))
def test_convert_prints_yaml_that_validates_to_the_same_spec(name):
    text, source = sbatch.read_script(CORPUS / name)
    assert job_from_text(sbatch.to_yaml(sbatch.translate(text, source), source)) == load_job(CORPUS / name)


_gpus = st.one_of(st.none(), st.tuples(st.sampled_from(["gres", "gpus", "gpus-per-node"]),
                                       st.sampled_from(["", "a100:", "h100:"]), st.integers(1, 8)))
_mem = st.one_of(st.none(), st.tuples(st.sampled_from(["mem", "mem-per-cpu"]),
                                      st.sampled_from(["512", "750M", "4G", "1T", "3K"])))


@settings(max_examples=150, deadline=None)
@given(name=st.from_regex(r"[A-Za-z][A-Za-z0-9_.]{0,20}", fullmatch=True), ntasks=st.integers(1, 8),
       cpt=st.integers(1, 8), nodes=st.integers(1, 4), gpus=_gpus, mem=_mem,
       time=st.sampled_from(["15", "45:30", "4:00:00", "1-12", "2-03:04", "7-00:00:00", "UNLIMITED"]),
       array=st.one_of(st.none(), st.sampled_from(["0-9", "1,3,5-7", "0-99:3%5"])),
       qos=st.one_of(st.none(), st.sampled_from(["low", "normal", "High"])),
       datasets=st.lists(st.sampled_from(["scans", "claims-us", "notes"]), unique=True, max_size=2))
def test_convert_output_revalidates(name, ntasks, cpt, nodes, gpus, mem, time, array, qos, datasets):
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH -n {ntasks} -c {cpt}", f"#SBATCH -N {nodes}",
             f"#SBATCH --time={time}"]
    if gpus:
        option, model, n = gpus
        per = n * nodes if option == "gpus" else n   # --gpus is a total: keep it a multiple of the nodes
        lines.append(f"#SBATCH --{option}={'gpu:' if option == 'gres' else ''}{model}{per}")
    lines += [f"#SBATCH --{mem[0]}={mem[1]}"] if mem else []
    lines += [f"#SBATCH --array={array}"] if array else []
    lines += [f"#SBATCH --qos={qos}"] if qos else []
    lines += [f"#FED --datasets={','.join(datasets)}"] if datasets else []
    text = "\n".join(lines) + "\necho $SLURM_JOB_NAME\n"
    script = sbatch.translate(text, "gen.sbatch")
    spec = job_from_dict(script.document)
    assert job_from_text(sbatch.to_yaml(sbatch.translate(text, "gen.sbatch"), "gen.sbatch")) == spec
    assert spec.spec.resources.cpus == ntasks * cpt
    assert spec.spec.time_limit == (duration(time) or None)


def test_directives_are_read_from_column_0_after_any_whitespace():
    text = "#!/bin/bash\n#SBATCH\t--cpus-per-task=4\n  #SBATCH --cpus-per-task=64\n#SBATCH  --gres=gpu\n#SBATCHX -c 9\n"
    r = sbatch.translate(text + "echo\n", "tabs.sbatch").document["spec"]["resources"]
    assert (r["cpus"], r["gpus"]) == (4, 1)   # the indented line is a comment, as for sbatch; --gres=gpu is one


def test_memory_zero_in_any_unit_asks_nothing():
    for value in ("0", "0K", "0G", "0T"):
        script = sbatch.translate(f"#!/bin/bash\n#SBATCH --mem={value}\necho\n", "m.sbatch")
        assert "memory" not in script.document["spec"]["resources"] and "no memory is asked" in script.notes[0]


def test_slurm_variables_count_tasks_as_slurm_does_and_keep_a_real_allocations(tmp_path):
    spec = load_job(CORPUS / "ddp_multinode.sbatch")
    probe = spec.spec.entrypoint.split("; exec ")[0] + '; echo "$SLURM_NTASKS $SLURM_JOB_ID"'
    assert run_entrypoint(probe, tmp_path, FEDCTL_JOB_ID="j-1") == "16 j-1\n"
    assert run_entrypoint(probe, tmp_path, FEDCTL_JOB_ID="j-1", SLURM_JOB_ID="4242") == "16 4242\n"


@pytest.mark.parametrize("shebang", ["#!/bin/bash -c 'curl x | sh'", "#!/usr/bin/python3 -m http.server",
                                     "#!/usr/bin/env -S bash -c id", "#!/bin/bash 'unclosed"])
def test_a_shebang_may_not_run_code_of_its_own(tmp_path, shebang):
    path = tmp_path / "s.sbatch"
    path.write_text(f"{shebang}\n#SBATCH -n 1\necho\n")
    with pytest.raises(InvalidSpec, match=rf"^{path}:1: "):
        load_job(path)
    path.write_text("#!/bin/bash -el\n#SBATCH -n 1\necho\n")
    assert load_job(path).spec.entrypoint.split("; exec ")[1].startswith("/bin/bash -el -c ")
