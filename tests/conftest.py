import pytest

from federation.spec import job_from_dict
from tests.postgres import postgres, postgres_url  # noqa: F401  (fixtures: a real PostgreSQL server)


def make_spec(name: str = "job", tenant: str = "default", **body) -> "JobSpec":  # noqa: F821
    body.setdefault("entrypoint", "echo hi")
    return job_from_dict({"metadata": {"name": name, "tenant": tenant}, "spec": body})


@pytest.fixture
def spec_factory():
    return make_spec
