"""Spec files: models, YAML loading with located errors, and JSON Schema export."""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from federation.errors import InvalidSpec
from federation.spec.job import JobSpec
from federation.spec.loader import _Lines, read_file, read_yaml, validate
from federation.spec.policy import PolicyConfig
from federation.spec.server import FederationConfig
from federation.spec.site import SiteConfig
from federation.spec.training import FederatedTrainingSpec

__all__ = [
    "SCHEMAS",
    "FederatedTrainingSpec",
    "FederationConfig",
    "JobSpec",
    "PolicyConfig",
    "SiteConfig",
    "as_job",
    "gang_parts",
    "job_from_dict",
    "job_from_text",
    "load_batch",
    "load_federation",
    "load_job",
    "load_policy",
    "load_site",
    "load_training",
    "training_from_dict",
]

M = TypeVar("M", bound=BaseModel)

SCHEMAS: dict[str, type[BaseModel]] = {
    "job": JobSpec,
    "training": FederatedTrainingSpec,
    "site": SiteConfig,
    "policy": PolicyConfig,
    "federation": FederationConfig,
}


def _load(model: type[M], path: str | Path) -> M:
    data, lines, source = read_file(path)
    _check_kind(model, data, source)
    return validate(model, data, source=source, lines=lines)


def _check_kind(model: type[BaseModel], data: Any, source: str) -> None:
    expected = model.model_fields["kind"].default
    if isinstance(data, dict) and "kind" in data and data["kind"] != expected:
        raise InvalidSpec(f"{source}: kind: expected '{expected}', got {data['kind']!r}")


def load_job(path: str | Path) -> JobSpec:
    """A YAML job spec, or an `#SBATCH` script (`federation.spec.sbatch`)."""
    from federation.spec import sbatch
    return load_batch(path)[0] if sbatch.is_batch_script(path) else _load(JobSpec, path)


def load_batch(path: str | Path) -> tuple[JobSpec, list[str]]:
    """An `#SBATCH` script as a job spec, and what was skipped in it and why."""
    from federation.spec import sbatch
    text, source = sbatch.read_script(path)
    script = sbatch.translate(text, source)
    return validate(JobSpec, script.document, source=source, lines=_Lines.of(script.lines)), script.notes


def job_from_text(text: str, source: str = "<spec>") -> JobSpec:
    data, lines = read_yaml(text, source)
    _check_kind(JobSpec, data, source)
    return validate(JobSpec, data, source=source, lines=lines)


def job_from_dict(data: Any, source: str = "<spec>") -> JobSpec:
    _check_kind(JobSpec, data, source)
    return validate(JobSpec, data, source=source)


def as_job(spec: str | Path | dict | JobSpec, where: str) -> JobSpec:
    """A job spec given as a file's path, a dict or a JobSpec; `where` names it in the error."""
    if isinstance(spec, (str, Path)):
        return load_job(spec)
    if isinstance(spec, dict):
        return job_from_dict(spec)
    if not isinstance(spec, JobSpec):
        raise InvalidSpec(f"{where}: expected a path, dict or JobSpec, got {type(spec).__name__}")
    return spec


def load_training(path: str | Path) -> FederatedTrainingSpec:
    return _load(FederatedTrainingSpec, path)


def training_from_dict(data: Any, source: str = "<spec>") -> FederatedTrainingSpec:
    _check_kind(FederatedTrainingSpec, data, source)
    return validate(FederatedTrainingSpec, data, source=source)


def _resolve(base: Path, p: Path | None) -> Path | None:
    if p is None:
        return None
    p = p.expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def load_site(path: str | Path) -> SiteConfig:
    cfg = _load(SiteConfig, path)
    base = Path(path).resolve().parent
    body = cfg.spec
    fed = body.federation
    if fed.tls is not None:
        tls = fed.tls
        fed = fed.model_copy(update={"tls": tls.model_copy(update={
            "ca": _resolve(base, tls.ca), "cert": _resolve(base, tls.cert), "key": _resolve(base, tls.key)})})
    local = body.ray.local.model_copy(update={"temp_dir": _resolve(base, body.ray.local.temp_dir)})
    datasets = [d if "://" in d.path or not d.path else d.model_copy(update={"path": str(_resolve(base, Path(d.path)))})
                for d in body.datasets]
    body = body.model_copy(update={
        "datasets": datasets,
        "federation": fed,
        "ray": body.ray.model_copy(update={"local": local,
                                           "auth_token_path": _resolve(base, body.ray.auth_token_path)}),
        "work_dir": _resolve(base, body.work_dir),
    })
    return cfg.model_copy(update={"spec": body})


def load_policy(path: str | Path) -> PolicyConfig:
    return _load(PolicyConfig, path)


def load_federation(path: str | Path) -> FederationConfig:
    cfg = _load(FederationConfig, path)
    base = Path(path).resolve().parent
    body = cfg.spec
    tls = body.tls
    if tls is not None:
        tls = tls.model_copy(update={"cert": _resolve(base, tls.cert), "key": _resolve(base, tls.key),
                                     "client_ca": _resolve(base, tls.client_ca)})
    enrolment = body.enrolment
    if enrolment is not None:
        enrolment = enrolment.model_copy(update={"ca_cert": _resolve(base, enrolment.ca_cert),
                                                 "ca_key": _resolve(base, enrolment.ca_key)})
    body = body.model_copy(update={"store": _resolve(base, body.store), "policy": _resolve(base, body.policy),
                                   "tls": tls, "enrolment": enrolment})
    return cfg.model_copy(update={"spec": body})


def gang_parts(spec: JobSpec) -> list[tuple[str, JobSpec]]:
    """Each part of a gang as a job spec of its own: the job's fields with the part's replacing them,
    validated whole; InvalidSpec naming spec.gang.parts[i]."""
    assert spec.spec.gang is not None, "a job without a gang has no parts"
    data = spec.model_dump(mode="json", exclude_none=True)
    out = []
    for i, part in enumerate(spec.spec.gang.parts):
        body = dict(data["spec"])
        for name in ("entrypoint", "datasets", "resources", "placement", "topology"):
            value = getattr(part, name)
            if value is not None:
                body[name] = value.model_dump(mode="json", exclude_none=True) if isinstance(value, BaseModel) else value
        try:
            out.append((part.name, job_from_dict({**data, "spec": body}, source="part")))
        except InvalidSpec as e:
            raise InvalidSpec(f"spec.gang.parts[{i}] ({part.name}): {e.message.removeprefix('part: ')}") from None
    return out
