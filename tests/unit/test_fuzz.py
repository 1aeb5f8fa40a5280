"""Fuzzing: spec parsing and every gRPC request type, fed arbitrary input, answer with a typed
error or a result, never a crash, and never an internal error."""
from __future__ import annotations

import asyncio
import inspect
import itertools
from pathlib import Path

import grpc
import pytest
import yaml
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation.audit import Signer
from federation.control import ControlPlane
from federation.errors import FederationError, InvalidSpec
from federation.pki import Issued, init_pki
from federation.service.loop import Pool
from federation.service.sites import EnrollmentServicer, SiteServicer
from federation.service.users import FederationServicer
from federation.spec import job_from_dict, job_from_text, load_policy
from federation.store import SQLiteStore
from federation.v1 import federation_pb2 as pb
from tests.unit.test_spec import GOOD

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63), st.floats(allow_nan=True),
                    st.text(max_size=40), st.binary(max_size=20).map(lambda b: b.decode("latin-1")))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=12)
PATHS = [("spec",), ("spec", "resources"), ("spec", "placement"), ("spec", "topology"), ("spec", "gang"),
         ("spec", "dependencies"), ("metadata",), ()]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(PATHS), st.text(min_size=1, max_size=16), VALUES)
def test_fuzz_job_specs_parse_or_fail_with_a_located_error(path, key, value):
    data = yaml.safe_load(GOOD)
    target = data
    for p in path:
        target = target.setdefault(p, {})
    target[key] = value
    try:
        spec = job_from_dict(data)
    except InvalidSpec as e:
        assert e.message and "\n" not in e.message.strip()
        return
    assert spec.spec.entrypoint


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_fuzz_job_text_parses_or_fails_with_an_error(text):
    try:
        job_from_text(text)
    except InvalidSpec as e:
        assert e.message


# ------------------------------------------------------------------ gRPC requests

_SCALAR_FIELDS = {
    FieldDescriptor.TYPE_STRING: st.text(max_size=30),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=64),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True),
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32, allow_nan=True),
    FieldDescriptor.TYPE_INT32: st.integers(-2**31, 2**31 - 1),
    FieldDescriptor.TYPE_INT64: st.integers(-2**63, 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
}


def messages(descriptor, depth: int = 0):
    """Any message of this type: every field set or not, to any value of its type."""
    fields = {}
    for f in descriptor.fields:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            key = _SCALAR_FIELDS[f.message_type.fields_by_name["key"].type]
            v = f.message_type.fields_by_name["value"]
            value = messages(v.message_type, depth + 1) if v.message_type else _SCALAR_FIELDS.get(v.type, st.just(0))
            fields[f.name] = st.dictionaries(key, value, max_size=3)
            continue
        if f.message_type is not None:
            if depth > 3 or f.message_type.full_name.startswith("google.protobuf"):
                continue
            one = messages(f.message_type, depth + 1)
        elif f.type == FieldDescriptor.TYPE_ENUM:
            one = st.sampled_from([v.number for v in f.enum_type.values] + [99])
        else:
            one = _SCALAR_FIELDS[f.type]
        fields[f.name] = st.lists(one, max_size=3) if f.is_repeated else one
    cls = _class(descriptor)
    return st.fixed_dictionaries({}, optional=fields).map(lambda kw: _build(cls, kw))


def _class(descriptor):
    from google.protobuf import message_factory
    return message_factory.GetMessageClass(descriptor)


def _build(cls, kw):
    msg = cls()
    for name, value in kw.items():
        field = msg.DESCRIPTOR.fields_by_name[name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(msg, name)
            for k, v in value.items():
                if field.message_type.fields_by_name["value"].message_type is not None:
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif field.is_repeated:
            getattr(msg, name).extend(value)
        elif field.message_type is not None:
            getattr(msg, name).CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


class Aborted(Exception):
    def __init__(self, code, details):
        super().__init__(details)
        self.code = code


class Context:
    """A servicer context for in-process calls: a caller's certificate, abort as an exception."""

    def __init__(self, pem: bytes, rounds: int = 2) -> None:
        self.pem = pem
        self.rounds = itertools.count()
        self.limit = rounds

    def auth_context(self):
        return {"x509_pem_cert": [self.pem], "transport_security_type": [b"ssl"]}

    def abort(self, code, details):
        raise Aborted(code, details)

    def set_trailing_metadata(self, md):
        pass

    def is_active(self) -> bool:
        return next(self.rounds) < self.limit


class AsyncContext(Context):
    """The same for calls served on the event loop, where abort is awaited."""

    async def abort(self, code, details):  # type: ignore[override]
        raise Aborted(code, details)


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    pki = init_pki(tmp / "pki", clients=("admin", "eu-west"))
    store = SQLiteStore(tmp / "fed.db")
    control = ControlPlane(store, load_policy("configs/policy.yaml"), signer=Signer.beside(tmp / "fed.db"))
    pool = Pool(4, "fuzz")
    users, sites = FederationServicer(control, pool), SiteServicer(control, pool, 0.01)
    enrol = EnrollmentServicer(control, Issued(pki["ca"].cert, pki["ca"].key), 1)
    yield {"users": users, "sites": sites, "enrol": enrol, "admin": pki["admin"].cert.read_bytes(),
           "site": pki["eu-west"].cert.read_bytes(), "db": tmp / "fed.db"}
    pool.close()
    store.close()


SERVICE = pb.DESCRIPTOR.services_by_name
CALLS = [("users", m) for m in SERVICE["FederationService"].methods] + \
        [("sites", m) for m in SERVICE["SiteService"].methods] + \
        [("enrol", m) for m in SERVICE["EnrollmentService"].methods]


@pytest.mark.parametrize("service, method", CALLS, ids=[m.name for _, m in CALLS])
def test_fuzz_every_request_type_gets_an_answer_or_a_typed_error(services, service, method):
    servicer = services[service]
    caller = services["site"] if service == "sites" else services["admin"]

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(messages(method.input_type), min_size=1, max_size=3))
    def run(requests):
        answer_or_typed_error(servicer, method, requests, caller)

    run()


def answer_or_typed_error(servicer, method, requests: list, caller: bytes) -> None:
    """Call `method` with `requests` (the first alone for a unary call); never an internal error."""
    fn = getattr(servicer, method.name)
    try:
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            asyncio.run(asyncio.wait_for(_served(fn, method, requests, AsyncContext(caller)), 30))
            return
        result = fn(iter(requests) if method.client_streaming else requests[0], Context(caller))
        if method.server_streaming:
            for _ in itertools.islice(result, 3):
                pass
    except Aborted as e:
        assert e.code is not grpc.StatusCode.INTERNAL, f"{method.name}: internal error: {e}"
    except FederationError:
        pass



async def _served(fn, method, requests: list, context: AsyncContext) -> None:
    """A call served on the event loop: its answer, or at most three messages of its stream."""
    async def each():
        for r in requests:
            yield r
    request = each() if method.client_streaming else requests[0]
    if not method.server_streaming:
        await fn(request, context)
        return
    stream = fn(request, context)
    try:
        for _ in range(3):
            if await anext(stream, None) is None:
                break
    finally:
        await stream.aclose()


def oversized(descriptor, n: int, depth: int = 0):
    """A message of this type with every field at size `n`: strings and bytes of n characters,
    n entries in each repeated field and map (nested messages a level down, smaller)."""
    msg = _class(descriptor)()
    m = max(1, n // 1000)
    for f in descriptor.fields:
        entry = f.message_type is not None and f.message_type.GetOptions().map_entry
        if entry:
            target = getattr(msg, f.name)
            value = f.message_type.fields_by_name["value"]
            for i in range(min(n, 2000)):
                key = f"k{i}-" + "x" * m
                if value.message_type is not None:
                    if depth < 2:
                        target[key].CopyFrom(oversized(value.message_type, m, depth + 1))
                else:
                    target[key] = _big(value.type, m, i)
        elif f.message_type is not None:
            if depth >= 2 or f.message_type.full_name.startswith("google.protobuf"):
                continue
            one = oversized(f.message_type, m, depth + 1)
            if f.is_repeated:
                getattr(msg, f.name).extend([one] * min(n, 2000))
            else:
                getattr(msg, f.name).CopyFrom(one)
        elif f.type == FieldDescriptor.TYPE_ENUM:
            value = f.enum_type.values[-1].number
            if f.is_repeated:
                getattr(msg, f.name).extend([value] * min(n, 2000))
            else:
                setattr(msg, f.name, value)
        elif f.is_repeated:
            getattr(msg, f.name).extend([_big(f.type, m, i) for i in range(min(n, 2000))])
        else:
            setattr(msg, f.name, _big(f.type, n, 0))
    return msg


def _big(kind: int, n: int, i: int):
    if kind == FieldDescriptor.TYPE_STRING:
        return f"{i}" + "x" * n
    if kind == FieldDescriptor.TYPE_BYTES:
        return b"\xff" * n
    if kind == FieldDescriptor.TYPE_BOOL:
        return True
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return 1e308 if kind == FieldDescriptor.TYPE_DOUBLE else 3e38
    return {FieldDescriptor.TYPE_INT32: 2**31 - 1, FieldDescriptor.TYPE_UINT32: 2**32 - 1,
            FieldDescriptor.TYPE_UINT64: 2**64 - 1}.get(kind, 2**63 - 1)


def stored(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


@pytest.mark.parametrize("size", [1_000, 100_000])
@pytest.mark.parametrize("service, method", CALLS, ids=[m.name for _, m in CALLS])
def test_fuzz_every_request_type_at_large_sizes_gets_a_typed_error_and_stores_nothing_unbounded(
        services, service, method, size):
    servicer = services[service]
    caller = services["site"] if service == "sites" else services["admin"]
    before = stored(services["db"])
    answer_or_typed_error(servicer, method, [oversized(method.input_type, size)], caller)
    grown = stored(services["db"]) - before
    assert grown < 2 * 2**20, f"{method.name} at size {size} grew the store by {grown} bytes"


# ------------------------------------------------------------------ paths a spec can name

PATH_PARTS = st.sampled_from(["..", ".", "jobs", "escape", "/", "/etc", "~", "a b", "\x00", "%2e%2e", "link", ""])


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    work = root / "work"
    (work / "jobs").mkdir(parents=True)
    (root / "outside").mkdir()
    (work / "link").symlink_to(root / "outside")   # a symlink inside that points out
    return work


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(PATH_PARTS, min_size=1, max_size=5).map("/".join), st.sampled_from(["working_dir", "py_modules"]))
def test_fuzz_no_path_in_a_spec_reaches_outside_the_sites_work_dir(work_dir, path, key):
    from site_agent.veto import resolve_runtime_env
    env = {"working_dir": path} if key == "working_dir" else {"py_modules": [path]}
    resolved, refusal = resolve_runtime_env(env, work_dir)
    if refusal:
        return
    chosen = resolved["working_dir"] if key == "working_dir" else resolved["py_modules"][0]
    real = Path(chosen).resolve()
    root = work_dir.resolve()
    assert real == root or root in real.parents, f"{path!r} resolved to {real}, outside {root}"
