"""`#SBATCH` scripts as job specs: the directives a migrating user already has, plus `#FED` lines for
what Slurm has no word for (datasets, regions, sites), read into the same document a YAML spec
gives, so one validation, one set of located errors, and `fedctl convert` prints the YAML.

As sbatch does, directives are read from the top of the script up to its first command; the whole
script then runs as the job's entrypoint, under its own interpreter, with the SLURM_* variables
scripts commonly read set from the job (`SLURM_ARRAY_TASK_ID` from the array index). A directive
this does not know, or knows but cannot honour, is refused with its line and what to write instead;
ones that only say where Slurm writes output or whom it mails are noted and skipped."""
from __future__ import annotations

import copy
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from federation.errors import InvalidSpec
from federation.spec import sbatch_options as opts
from federation.spec.loader import one_line, read_text
from federation.spec.sbatch_options import Directive

SUFFIXES = (".sbatch", ".slurm")
MAX_ENTRYPOINT = 8192
SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh"})
PYTHONS = re.compile(r"^python(3(\.\d+)?)?$")
DIRECTIVE = re.compile(r"^#(SBATCH|FED)(?:\s+(.*))?$")
# Interpreter options a shebang may carry: none that runs code of its own in place of the script.
FLAGS = {"shell": re.compile(r"^(-[elxuv]+|--login|--norc|--noprofile)$"), "python": re.compile(r"^-[uBEOsSI]+$")}


@dataclass
class Script:
    """A batch script read into a job document: `document` as a YAML spec would give it, `lines`
    the script line behind each field path, `notes` what was skipped and why."""

    document: dict[str, Any]
    lines: dict[tuple, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def is_batch_script(path: str | Path, text: str | None = None) -> bool:
    """A file named *.sbatch or *.slurm, or one that starts `#!` and holds a `#SBATCH` line."""
    p = Path(path)
    if p.suffix in SUFFIXES:
        return True
    if text is None:
        try:
            with p.open("rb") as f:
                head = f.read(65536).decode("utf-8", "replace")
        except OSError:
            return False
    else:
        head = text
    return head.startswith("#!") and re.search(r"^#SBATCH\s", head, re.MULTILINE) is not None


def read_script(path: str | Path) -> tuple[str, str]:
    return read_text(path, "a batch script"), str(Path(path))


def directives(text: str, source: str) -> list[Directive]:
    """The `#SBATCH` and `#FED` directives before the script's first command, in order: as sbatch
    reads them, from column 0 and followed by any whitespace (an indented one is a comment)."""
    out: list[Directive] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if number == 1 and raw.startswith("#!"):
            continue
        m = DIRECTIVE.match(raw.rstrip())
        if m is None:
            if raw.strip() and not raw.strip().startswith("#"):
                break   # the first command: sbatch reads no directive after it
            continue
        prefix, rest = "#" + m.group(1), m.group(2) or ""
        try:
            words = shlex.split(rest, comments=True)
        except ValueError as e:
            raise InvalidSpec(one_line(f"{source}:{number}: {raw.strip()}: {e}")) from None
        out.extend(_options(words, prefix, number, source))
    return out


def _options(words: list[str], prefix: str, number: int, source: str) -> list[Directive]:
    table = opts.SBATCH if prefix == "#SBATCH" else opts.FED
    out, i = [], 0
    while i < len(words):
        word = words[i]
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            got: str | None = value if eq else None
        elif word.startswith("-") and len(word) >= 2 and prefix == "#SBATCH" and word[1] in opts.SHORT:
            name, got = opts.SHORT[word[1]], (word[2:].lstrip("=") or None)
        else:
            raise InvalidSpec(one_line(f"{source}:{number}: {prefix} {word}: not an option (write --name=value)"))
        takes = table.get(name)
        if takes is None:
            raise InvalidSpec(one_line(f"{source}:{number}: {prefix} {word}: {opts.refusal(prefix, name)}"))
        if takes and got is None:
            if i + 1 >= len(words):
                raise InvalidSpec(one_line(f"{source}:{number}: {prefix} --{name}: needs a value"))
            i, got = i + 1, words[i + 1]
        elif not takes and got is not None:
            raise InvalidSpec(one_line(f"{source}:{number}: {prefix} --{name}: takes no value"))
        out.append(Directive(number, prefix, name, got))
        i += 1
    return out


def translate(text: str, source: str = "<script>") -> Script:
    """The job document for a batch script; InvalidSpec naming the line of a directive it refuses."""
    found = directives(text, source)
    ask = opts.Asks(name=_default_name(source))
    for d in found:
        try:
            opts.apply(ask, d)
        except ValueError as e:
            raise InvalidSpec(one_line(f"{source}:{d.line}: {d}: {e}")) from None
    try:
        document, lines = opts.document(ask)
    except opts.Located as e:
        raise InvalidSpec(one_line(f"{source}:{e.line}: {e}")) from None
    body = document["spec"]
    first = {"entrypoint": entrypoint(text, ask, source), "resources": body.pop("resources")}
    document["spec"] = first | body
    lines[("spec", "entrypoint")] = 1
    return Script(document, lines, ask.notes)


def entrypoint(text: str, ask: opts.Asks, source: str) -> str:
    """The script, run by its own interpreter with SLURM_* variables set from the job."""
    first = text.splitlines()[0] if text else ""
    try:
        words = shlex.split(first[2:]) if first.startswith("#!") else ["/bin/bash"]
    except ValueError as e:
        raise InvalidSpec(one_line(f"{source}:1: {first}: {e}")) from None
    if words and Path(words[0]).name == "env":
        words = [w for w in words[1:] if w != "-S"]
    if not words:
        raise InvalidSpec(f"{source}:1: {first}: names no interpreter")
    program = Path(words[0]).name
    if program not in SHELLS and not PYTHONS.match(program):
        raise InvalidSpec(one_line(f"{source}:1: {first}: runs a script of {program}; a batch script here is a "
                                   f"shell or Python script (call {program} from a bash script)"))
    kind = "shell" if program in SHELLS else "python"
    if bad := next((w for w in words[1:] if not FLAGS[kind].match(w)), None):
        raise InvalidSpec(one_line(f"{source}:1: {first}: {bad}: only {kind} options that run the script itself "
                                   f"may follow the interpreter"))
    env = " ".join(f"{k}={v}" for k, v in ask.slurm_env().items())
    run = " ".join(shlex.quote(w) for w in words) + " -c " + shlex.quote(text)
    if program in SHELLS:
        run += " " + shlex.quote(ask.name)   # its $0, as Slurm's would be the script's name
    out = f"export {env}; exec {run}"
    if len(out) > MAX_ENTRYPOINT:
        raise InvalidSpec(f"{source}: the script is {len(text)} characters; at most about "
                          f"{MAX_ENTRYPOINT - len(out) + len(text)} fit in a job's entrypoint: move the work into a "
                          f"file that a shorter script runs")
    return out


def _default_name(source: str) -> str:
    stem = Path(source).stem if source and not source.startswith("<") else "job"
    return opts.job_name(stem, strict=False)


def to_yaml(script: Script, source: str) -> str:
    """The job spec a script gives, as YAML a user can keep, with what was skipped as comments."""
    doc = copy.deepcopy(script.document)   # the script's own document stays as validation reads it
    resources = doc["spec"].get("resources", {})
    if "memory" in resources:
        resources["memory"] = _quantity(resources["memory"])
    if "time_limit" in doc["spec"]:
        doc["spec"]["time_limit"] = _duration(doc["spec"]["time_limit"])
    head = [f"# from {source} (fedctl convert)"] + [f"# {note}" for note in script.notes]
    return "\n".join(head) + "\n" + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=120)


class _Dumper(yaml.SafeDumper):
    pass


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)


def _quantity(n: int) -> str | int:
    for unit, size in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return n


def _duration(seconds: float) -> str:
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"
