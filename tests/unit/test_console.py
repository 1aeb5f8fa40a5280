"""The console's pictures (NVLink domains drawn from a site's inventory, a training's curves, and
nothing a site or a job names is ever markup) and its sessions."""
from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from federation.http.drawing import rounds_chart, topology
from federation.http.sessions import PER_NAME, SESSION_TTL_S, Sessions
from federation.pki import create_ca, issue
from federation.results import RoundInfo
from federation.v1 import federation_pb2 as pb


def node(name: str, domains: list[str], model: str = "H100") -> pb.GpuNode:
    return pb.GpuNode(name=name, model=model, memory_bytes=80 << 30, domains=domains)


def test_gpus_of_one_nvlink_domain_are_joined_and_others_are_not():
    svg = topology(pb.Inventory(nodes=[node("dgx", ["a", "a", "b", "b"]), node("pcie", ["", ""], "L4")]))
    assert svg.count("<rect") == 6
    assert svg.count('class="nvlink"') == 2, "one line per domain of two or more GPUs"
    assert svg.count('fill="#bbb"') == 2, "GPUs without an NVLink peer are grey"
    assert topology(pb.Inventory()) == ""


def test_names_from_a_site_are_escaped():
    svg = topology(pb.Inventory(nodes=[node("<script>alert(1)</script>", ["<b>"], model='"><img src=x>')]))
    assert "<script>" not in svg and "<img" not in svg and "<b>" not in svg
    assert "&lt;script&gt;" in svg


def test_a_site_reporting_huge_inventories_is_drawn_in_bounded_size():
    svg = topology(pb.Inventory(nodes=[node(f"n{i}", ["x"] * 500) for i in range(1000)]))
    assert svg.count("<rect") == 64 * 72 and "and 936 more nodes" in svg


def test_the_chart_draws_loss_and_accuracy_of_completed_rounds():
    history = [RoundInfo(n, 1, "done", ("a", "b"), "a", ("a", "b"), (), 10, {"loss": 2.0 / n, "accuracy": 0.5 + n / 10},
                         0.0, 1.0) for n in range(1, 5)]
    history.append(RoundInfo(5, 1, "training", ("a",), "", (), (), 0, {}, 0.0, 0.0))
    svg = rounds_chart(history)
    assert 'class="loss"' in svg and 'class="accuracy"' in svg
    loss_points = svg.split('class="loss"')[0].rsplit("points=", 1)[1]
    assert loss_points.count(",") == 4, "four completed rounds, the one in flight left out"
    assert "loss 0.5 (from 2)" in svg and rounds_chart([]) == ""


def test_logging_in_often_logs_nobody_else_out_and_a_session_ends_with_its_certificate(tmp_path):
    ca = create_ca(tmp_path)
    ders = {}
    for name in ("alice", "mallory"):
        cert = issue(ca, tmp_path, name, units=("role:submitter",)).cert
        ders[name] = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)
    sessions = Sessions()
    alice = sessions.log_in(sessions.login_link(ders["alice"], "alice")[0])
    for _ in range(3 * PER_NAME):
        sessions.log_in(sessions.login_link(ders["mallory"], "mallory")[0])
    assert alice is not None and sessions.get(alice) is not None, "mallory's logins do not evict alice"
    assert sum(s.name == "mallory" for s in sessions._sessions.values()) == PER_NAME
    assert sessions.log_in("not-a-token") is None
    late = Sessions(clock=lambda: 10**10)   # far past the certificate's end
    token = late.login_link(ders["alice"], "alice")[0]
    assert late.log_in(token) is None, "a login link past the certificate's end is refused"
    assert sessions.get(alice).expires_at <= sessions.clock() + SESSION_TTL_S
