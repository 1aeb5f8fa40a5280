"""The resources a batch script's directives ask for, counted as Slurm counts them: `--mem` and
`--gres` per node, CPUs as tasks x CPUs per task (or CPUs per GPU x GPUs), memory per CPU or GPU
times those; several nodes of GPUs become that many GPUs a node."""
from __future__ import annotations

from typing import Any

MiB = 1 << 20
GPU_OPTIONS = ("gres", "gpus", "gpus-per-node", "gpus-per-task")
MEMORY_OPTIONS = ("mem", "mem-per-cpu", "mem-per-gpu")


class Located(ValueError):
    """What is wrong, and the script line to blame."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def resources(values: dict[str, Any], at: dict[str, int]) -> list[tuple[tuple, Any, int]]:
    """(path under spec, value, line) for each resource field the directives set."""
    out: list[tuple[tuple, Any, int]] = []
    nodes = values.get("nodes", 1)
    per_node = values.get("ntasks-per-node")
    ntasks = values.get("ntasks", per_node * nodes if per_node else nodes)
    model, count, gpu_line = _gpus(values, at, nodes, ntasks)
    cpus, cpu_line = _cpus(values, at, ntasks, count)
    out.append((("resources", "cpus"), cpus, cpu_line))
    if count:
        out.append((("resources", "gpus"), count, gpu_line))
        if model:
            out.append((("resources", "gpu_type"), [model], gpu_line))
        if nodes > 1:
            if count % nodes:
                raise Located(at.get("nodes", gpu_line), f"{count} GPUs do not split evenly over {nodes} nodes")
            out.append((("topology", "gpus_per_node"), count // nodes, at.get("nodes", gpu_line)))
    memory = _memory(values, at, nodes, cpus, count)
    if memory is not None:
        out.append((("resources", "memory"), memory[0], memory[1]))
    return out


def _only_one(values: dict[str, Any], at: dict[str, int], options: tuple[str, ...]) -> str | None:
    given = sorted((o for o in options if o in values), key=lambda o: at[o])
    if len(given) > 1:
        raise Located(at[given[-1]], f"--{given[-1]} with --{given[0]}: give one of "
                                     + ", ".join(f"--{o}" for o in options))
    return given[0] if given else None


def _gpus(values: dict[str, Any], at: dict[str, int], nodes: int, ntasks: int) -> tuple[str, int, int]:
    option = _only_one(values, at, GPU_OPTIONS)
    if option is None:
        return "", 0, 0
    model, n = values[option]
    times = {"gres": nodes, "gpus-per-node": nodes, "gpus-per-task": ntasks}.get(option, 1)
    return model, n * times, at[option]


def _cpus(values: dict[str, Any], at: dict[str, int], ntasks: int, gpus: int) -> tuple[int, int]:
    option = _only_one(values, at, ("cpus-per-task", "cpus-per-gpu"))
    line = max([at[o] for o in ("ntasks", "nodes", "ntasks-per-node", option or "") if o in at], default=1)
    if option == "cpus-per-gpu":
        if not gpus:
            raise Located(at[option], "--cpus-per-gpu needs GPUs (--gres=gpu:N or --gpus=N)")
        return values[option] * gpus, line
    return ntasks * values.get("cpus-per-task", 1), line


def _memory(values: dict[str, Any], at: dict[str, int], nodes: int, cpus: int, gpus: int) -> tuple[int, int] | None:
    option = _only_one(values, at, MEMORY_OPTIONS)
    if option is None:
        return None
    if option == "mem-per-gpu" and not gpus:
        raise Located(at[option], "--mem-per-gpu needs GPUs (--gres=gpu:N or --gpus=N)")
    times = {"mem": nodes, "mem-per-cpu": cpus, "mem-per-gpu": gpus}[option]
    return values[option] * times, at[option]
