"""What each `#SBATCH` and `#FED` option means here (`federation.spec.sbatch`): the options read, the
ones refused with what to write instead, and the job document they make, computed as Slurm would
(`--mem` per node, `--gres` per node, CPUs = tasks x CPUs per task)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from federation.spec.common import NAME_RE
from federation.spec.sbatch_resources import Located, MiB, resources

__all__ = ["Asks", "Directive", "Located", "apply", "document", "refusal"]

# long name -> takes a value
SBATCH = {
    "job-name": True, "account": True, "ntasks": True, "cpus-per-task": True, "nodes": True,
    "ntasks-per-node": True, "mem": True, "mem-per-cpu": True, "mem-per-gpu": True, "gres": True, "gpus": True,
    "gpus-per-node": True, "gpus-per-task": True, "cpus-per-gpu": True, "time": True, "array": True,
    "dependency": True, "partition": True, "qos": True, "priority": True, "requeue": False, "no-requeue": False,
    # only where Slurm writes output and whom it tells: noted and skipped
    "output": True, "error": True, "open-mode": True, "mail-type": True, "mail-user": True, "comment": True,
    "export": True, "parsable": False, "quiet": False,
}
SHORT = {"J": "job-name", "A": "account", "n": "ntasks", "c": "cpus-per-task", "N": "nodes", "t": "time",
         "a": "array", "d": "dependency", "p": "partition", "q": "qos", "o": "output", "e": "error", "G": "gpus",
         # refused, by their long names' advice
         "x": "exclude", "w": "nodelist", "D": "chdir", "C": "constraint", "b": "begin", "W": "wait", "H": "hold",
         "L": "licenses", "M": "clusters", "m": "distribution"}
SKIPPED = {"output": "logs come back with `fedctl logs JOB`", "error": "logs come back with `fedctl logs JOB`",
           "open-mode": "logs come back with `fedctl logs JOB`", "mail-type": "watch with `fedctl submit --wait`",
           "mail-user": "watch with `fedctl submit --wait`", "comment": "not kept", "parsable": "fedctl prints ids",
           "quiet": "not needed"}
FED = {"datasets": True, "regions": True, "sites": True, "prefer": True, "priority": True, "queue": True,
       "tenant": True, "nvlink": True, "colocate": True, "spot": True, "optimize": True, "max-price": True,
       "checkpoint": True, "retries": True, "retry-on-failure": False, "execution": True, "on-site-loss": True,
       "env": True}
INSTEAD = {
    "chdir": "the job runs in a working folder of its own at the site: cd in the script",
    "exclusive": "ask for the CPUs, memory and GPUs the job uses; the federation packs by them",
    "constraint": "ask for a GPU model with --gres=gpu:MODEL:N, or for sites with #FED --sites",
    "nodelist": "the site picks nodes; choose sites with #FED --sites", "exclude": "choose sites with #FED --sites",
    "begin": "submit it later, or wait on another job with --dependency", "wait": "use `fedctl submit --wait`",
    "nice": "use --qos=low", "time-min": "give --time alone", "hold": "submit it when it should run",
    "signal": "at its --time the site sends SIGTERM, then SIGKILL after its grace",
    "reservation": "the federation reserves for large jobs itself (backfill)",
    "licenses": "not known here", "mem-bind": "not known here", "cpu-bind": "not known here",
    "hint": "not known here", "distribution": "not known here", "gpu-bind": "each job sees only its own GPUs",
    "ntasks-per-gpu": "use --gpus-per-task", "threads-per-core": "ask for CPUs with --cpus-per-task",
    "sockets-per-node": "ask for CPUs with --cpus-per-task", "cores-per-socket": "ask for CPUs with --cpus-per-task",
    "cluster": "choose sites with #FED --sites", "clusters": "choose sites with #FED --sites",
}
SLURM_DEPENDENCIES = {"afterok": "after_ok", "afterany": "after_any", "afternotok": "after_not_ok"}
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)B?$", re.IGNORECASE)
_GPUS = re.compile(r"^(?:gpu:)?(?:([A-Za-z][\w.-]*):)?(\d+)$")
_UNITS = {"": MiB, "K": 1 << 10, "M": MiB, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True)
class Directive:
    line: int
    prefix: str      # "#SBATCH" or "#FED"
    option: str      # its long name, without dashes
    value: str | None

    def __str__(self) -> str:
        return f"{self.prefix} --{self.option}" + (f"={self.value}" if self.value is not None else "")


def refusal(prefix: str, name: str) -> str:
    if prefix == "#FED":
        return f"not a #FED option (those are: {', '.join('--' + k for k in FED)})"
    if name in INSTEAD:
        return f"not supported: {INSTEAD[name]}"
    return "not a directive fedctl reads (docs/slurm.md lists those it does)"


@dataclass
class Asks:
    """What a script's directives ask, with the line that asked each (by option)."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    at: dict[str, int] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)          # #FED and direct spec fields
    spec_at: dict[tuple, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def set(self, option: str, value: Any, line: int) -> None:
        self.values[option], self.at[option] = value, line

    def put(self, path: tuple, value: Any, line: int) -> None:
        node = self.spec
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        self.spec_at[path] = line

    def slurm_env(self) -> dict[str, str]:
        """The SLURM_* variables a script commonly reads, as Slurm would set them for this job; where
        the job runs inside a real Slurm allocation (a Slurm site), Slurm's own are kept."""
        nodes = self.values.get("nodes", 1)
        per_node = self.values.get("ntasks-per-node")
        ours = {"SLURM_JOB_ID": "$FEDCTL_JOB_ID", "SLURM_JOB_NAME": self.name,
                "SLURM_NTASKS": str(self.values.get("ntasks", per_node * nodes if per_node else nodes)),
                "SLURM_NNODES": str(nodes), "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_SUBMIT_DIR": "$PWD"}
        if "cpus-per-task" in self.values:
            ours["SLURM_CPUS_PER_TASK"] = str(self.values["cpus-per-task"])
        if "array" in self.spec.get("spec", {}):
            ours |= {"SLURM_ARRAY_TASK_ID": "$FEDCTL_ARRAY_INDEX", "SLURM_ARRAY_JOB_ID": "$FEDCTL_JOB_ID"}
        return {k: f'"${{{k}:-{v}}}"' for k, v in ours.items()}


def job_name(text: str, strict: bool = True) -> str:
    """A Slurm job name as a job name here: lower case, with '-' for '_', '.' and spaces."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    if not NAME_RE.match(name):
        if strict:
            raise ValueError("a job name needs letters or digits")
        return "job"
    return name


def apply(ask: Asks, d: Directive) -> None:
    """Take one directive into `ask`; ValueError saying what is wrong with its value."""
    v, line = d.value or "", d.line
    if d.prefix == "#FED":
        return _fed(ask, d.option, v, line)
    o = d.option
    if o in SKIPPED or (o == "export" and v.upper() == "ALL"):
        ask.notes.append(f"line {line}: {d} skipped: {SKIPPED.get(o, 'the job sees its own environment')}")
    elif o == "export":
        raise ValueError("only --export=ALL: set variables with #FED --env NAME=VALUE")
    elif o == "job-name":
        ask.name = job_name(v)
        if ask.name != v:
            ask.notes.append(f"line {line}: job name {v!r} written as {ask.name!r}")
        ask.set(o, ask.name, line)
    elif o == "account":
        ask.put(("metadata", "tenant"), v, line)
    elif o in ("ntasks", "cpus-per-task", "nodes", "ntasks-per-node", "cpus-per-gpu"):
        ask.set(o, _count(v), line)
    elif o == "mem" and re.fullmatch(r"0[KMGT]?B?", v.strip(), re.IGNORECASE):
        ask.notes.append(f"line {line}: {d} (all of a node's memory) skipped: no memory is asked; say how much "
                         "the job needs for the federation to count it")
    elif o in ("mem", "mem-per-cpu", "mem-per-gpu"):
        ask.set(o, size(v), line)
    elif o in ("gres", "gpus", "gpus-per-node", "gpus-per-task"):
        ask.set(o, gpus(v, gres=o == "gres"), line)
    elif o == "time":
        limit = duration(v)
        if limit:
            ask.put(("spec", "time_limit"), limit, line)
    elif o == "array":
        ask.put(("spec", "array"), v, line)
    elif o == "dependency":
        _dependency(ask, v, line)
    elif o == "partition":
        ask.put(("spec", "queue"), v, line)
    elif o in ("qos", "priority"):
        if v.lower() not in ("low", "normal", "high"):
            raise ValueError(f"{v!r}: a priority here is low, normal or high (or set a queue: #FED --queue=NAME)")
        ask.put(("spec", "priority"), v.lower(), line)
    elif o in ("requeue", "no-requeue"):
        ask.put(("spec", "retry", "limit"), 3 if o == "requeue" else 0, line)


def _fed(ask: Asks, o: str, v: str, line: int) -> None:
    listed = [x.strip() for x in v.split(",") if x.strip()]
    paths = {"datasets": ("spec", "datasets"), "regions": ("spec", "placement", "regions"),
             "sites": ("spec", "placement", "sites"), "prefer": ("spec", "placement", "prefer")}
    if o in paths:
        ask.put(paths[o], listed, line)
    elif o == "tenant":
        ask.put(("metadata", "tenant"), v, line)
    elif o in ("priority", "queue", "execution"):
        ask.put(("spec", o), v, line)
    elif o in ("nvlink", "colocate"):
        ask.put(("spec", "topology", o), v, line)
    elif o in ("spot", "optimize"):
        ask.put(("spec", "placement", o), v, line)
    elif o == "max-price":
        ask.put(("spec", "placement", "max_price"), v, line)
    elif o == "checkpoint":
        ask.put(("spec", "checkpoint", "path"), v, line)
    elif o == "retries":
        ask.put(("spec", "retry", "limit"), _count(v, zero=True), line)
    elif o == "retry-on-failure":
        ask.put(("spec", "retry", "on_failure"), True, line)
    elif o == "on-site-loss":
        ask.put(("spec", "on_site_loss"), v, line)
    elif o == "env":
        name, eq, value = v.partition("=")
        if not eq or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise ValueError("write NAME=VALUE")
        ask.put(("spec", "runtime_env", "env_vars", name), value, line)


def _dependency(ask: Asks, v: str, line: int) -> None:
    if "?" in v:
        raise ValueError("'?' (any one of) is not supported: use ',' (all of)")
    for part in v.split(","):
        kind, _, ids = part.partition(":")
        if kind == "singleton" and not ids:
            ask.put(("spec", "singleton"), True, line)
            continue
        if kind not in SLURM_DEPENDENCIES or not ids:
            raise ValueError(f"{part!r}: use afterok:ID, afterany:ID, afternotok:ID or singleton "
                             "(IDs of federation jobs or arrays, such as j-1a2b3c4d5e6f)")
        path = ("spec", "dependencies", SLURM_DEPENDENCIES[kind])
        ask.put(path, [*ask.spec.get("spec", {}).get("dependencies", {}).get(path[-1], []), *ids.split(":")], line)


def duration(v: str) -> float:
    """Seconds from a Slurm time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS; 0 for none."""
    if v.upper() in ("UNLIMITED", "INFINITE"):
        return 0.0
    m = _TIME.match(v.strip())
    if not m:
        raise ValueError(f"{v!r} is not a Slurm time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)")
    days, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if days is not None:   # D-HH[:MM[:SS]]
        return days * 86400 + (a or 0) * 3600 + (b or 0) * 60 + (c or 0)
    if c is not None:
        return (a or 0) * 3600 + (b or 0) * 60 + c
    return (a or 0) * 60 + (b or 0)


def size(v: str) -> int:
    """Bytes from a Slurm memory size: a number of megabytes, or with a K, M, G or T suffix."""
    m = _SIZE.match(v.strip())
    if not m:
        raise ValueError(f"{v!r} is not a size (a number of megabytes, or with K, M, G or T, such as 4G)")
    out = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if out == 0:
        raise ValueError("a size above 0, such as 64G")
    return out


def gpus(v: str, gres: bool) -> tuple[str, int]:
    """(model, count) from `gpu[:type]:N` (--gres) or `[type:]N` (--gpus*)."""
    if gres and not v.startswith("gpu"):
        raise ValueError(f"{v!r}: only GPUs are known here (gpu[:TYPE]:N)")
    if gres and "," in v:
        raise ValueError(f"{v!r}: only GPUs are known here, one --gres=gpu[:TYPE]:N")
    if gres and re.fullmatch(r"gpu(:[A-Za-z][\w.-]*)?", v):
        v += ":1"   # Slurm's count defaults to one
    m = _GPUS.match(v if gres or not v.startswith("gpu:") else v[4:])
    if not m or (gres and not v.startswith("gpu:")):
        raise ValueError(f"{v!r}: write {'gpu[:TYPE]:N' if gres else '[TYPE:]N'}, such as "
                         f"{'gpu:a100:4' if gres else 'a100:4'}")
    return (m.group(1) or "").upper(), int(m.group(2))


def _count(v: str, zero: bool = False) -> int:
    if not v.isdigit() or (int(v) < 1 and not zero):
        raise ValueError(f"{v!r}: a whole number of {0 if zero else 1} or more (ranges such as 2-4 are not read)")
    return int(v)


def document(ask: Asks) -> tuple[dict[str, Any], dict[tuple, int]]:
    """The job document and the line behind each field, from the resources asked as Slurm counts them."""
    spec = dict(ask.spec)
    doc: dict[str, Any] = {"apiVersion": "federation/v1", "kind": "Job",
                           "metadata": {"name": ask.name, **spec.pop("metadata", {})}, "spec": spec.pop("spec", {})}
    lines = dict(ask.spec_at)
    lines[("metadata", "name")] = ask.at.get("job-name", 1)
    for path, value, line in resources(ask.values, ask.at):
        node = doc["spec"]
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        lines[("spec", *path)] = line
    return doc, lines
