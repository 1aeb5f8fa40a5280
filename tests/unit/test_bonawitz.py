"""Secure aggregation with double masking against a malicious federation: the protocol's pure
steps (`training.bonawitz`) run by each site, with real certificates from the federation's CA,
and the federation free to relay whatever it likes between them."""
from __future__ import annotations

import copy
import itertools
import json
import stat
from types import SimpleNamespace

import numpy as np
import pytest
from cryptography import x509

from federation.jobs import AttemptState
from federation.pki import init_pki
from federation.spec.site import TLSConfig
from federation.v1 import federation_pb2 as pb
from site_agent.files import AttemptFiles
from site_agent.plan import SiteWord
from site_agent.secure import RESERVED, SecureAggregation
from training import bonawitz, secagg, shamir
from training.signing import Refused, Signer

SITES = ("a-site", "b-site", "c-site", "d-site", "e-site")
CONTEXT = "t-1/3/1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pki = init_pki(tmp_path_factory.mktemp("pki"), clients=("admin", *SITES))
    other = init_pki(tmp_path_factory.mktemp("other"), clients=("b-site",))   # a CA that is not the federation's
    ca = x509.load_pem_x509_certificate(pki["ca"].cert.read_bytes())
    signers = {s: Signer.load(s, pki[s].cert, pki[s].key) for s in SITES}
    return SimpleNamespace(ca=ca, signers=signers, issued=pki,
                           stranger=Signer.load("b-site", other["b-site"].cert, other["b-site"].key))


class Sites:
    """Each site's long-term key and secrets; the test plays the federation in between."""

    def __init__(self, pki, sites=SITES, fraction=0.6):
        self.ca, self.signers = pki.ca, pki.signers
        self.sites = sites
        self.t = bonawitz.threshold(len(sites), fraction)
        self.agreement = {s: secagg.KeyPair.generate() for s in sites}
        self.states: dict = {}

    def proofs(self):
        return {s: bonawitz.agreement_proof(self.signers[s], k) for s, k in self.agreement.items()}

    def keys(self, relayed=None):
        published = self.proofs()
        setups = {}
        for s in self.sites:
            self.states[s], setups[s] = bonawitz.keys(s, CONTEXT, list(self.sites), self.t, self.agreement[s],
                                                      (relayed or {}).get(s, published), self.signers[s], self.ca)
        return setups

    def step(self, s, setups, values):
        self.states[s], pairs, seed = bonawitz.step(self.states[s], s, setups, self.ca, self.agreement[s])
        return secagg.masked(values, s, pairs, seed), bonawitz.report(self.signers[s], CONTEXT)

    def reveal(self, s, reported, dropped):
        self.states[s], out = bonawitz.reveal(self.states[s], s, reported, dropped, self.ca)
        return out


def updates(sites=SITES, size=300, seed=5):
    rng = np.random.default_rng(seed)
    return {s: rng.normal(size=size) * 10 for s in sites}


def run_round(sites: Sites, values, drop=()):
    setups = sites.keys()
    sent = {s: sites.step(s, setups, values[s]) for s in sites.sites}
    masked = {s: words for s, (words, _) in sent.items() if s not in drop}
    reports = {s: report for s, (_, report) in sent.items() if s not in drop}
    revealed = [sites.reveal(s, reports, sorted(drop)) for s in masked]
    return setups, masked, revealed


def test_the_sum_is_exact_with_every_site_and_with_up_to_n_minus_t_dropped(pki):
    values = updates()
    for drop in ((), ("b-site",), ("b-site", "e-site")):   # t = 3 of 5: two may drop after masking
        sites = Sites(pki)
        setups, masked, revealed = run_round(sites, values, drop)
        total = secagg.decode(bonawitz.unmask(masked, setups, revealed, sites.t))
        assert np.allclose(total, sum(values[s] for s in masked), atol=1e-5), drop
    with pytest.raises(Refused, match="fewer than the threshold"):
        run_round(Sites(pki), values, ("a-site", "b-site", "c-site"))


def test_each_masked_input_alone_is_noise(pki):
    values = updates()
    _, masked, _ = run_round(Sites(pki), values)
    for s, words in masked.items():
        seen = secagg.decode(words)
        assert abs(np.corrcoef(seen, values[s])[0, 1]) < 0.2
        assert np.median(np.abs(seen)) > 1e6 * np.median(np.abs(values[s]))


def test_a_reported_site_the_federation_calls_lost_keeps_its_update_hidden(pki):
    sites, values = Sites(pki), updates()
    setups = sites.keys()
    sent = {s: sites.step(s, setups, values[s]) for s in SITES}
    victim = "c-site"
    # The federation holds the victim's masked input, yet tells every other site it was lost.
    reports = {s: r for s, (_, r) in sent.items() if s != victim}
    revealed = [sites.reveal(s, reports, [victim]) for s in reports]
    masking = shamir.combine({r["x"]: int(r["s"][victim], 16) for r in revealed}, sites.t)
    lost = secagg.KeyPair(bonawitz._private(masking.hex()))
    words = sent[victim][0]
    with np.errstate(over="ignore"):
        for u in reports:   # every pairwise mask of the victim's, removed
            m = secagg.mask(secagg.pair_secret(lost, victim, u, bytes.fromhex(setups[u]["body"]["masking_key"]),
                                               CONTEXT), words.size)
            words = words + m if u < victim else words - m
    seen = secagg.decode(words)
    assert abs(np.corrcoef(seen, values[victim])[0, 1]) < 0.2, "the self mask still hides it"
    assert not any(victim in r["b"] for r in revealed), "nobody revealed the victim's self-mask seed"
    # Asking again, now with the victim among those that reported, gets nothing more from anyone.
    for s in reports:
        with pytest.raises(Refused, match="revealed once already"):
            sites.reveal(s, {**reports, victim: sent[victim][1]}, [])


def test_showing_sites_different_lists_never_gathers_both_secrets_of_a_site(pki):
    sites, values = Sites(pki), updates()
    setups = sites.keys()
    sent = {s: sites.step(s, setups, values[s]) for s in SITES}
    victim, others = "a-site", [s for s in SITES if s != "a-site"]
    reports = {s: r for s, (_, r) in sent.items()}
    told_reported, told_lost = others[:2], others[2:]   # a split view: the most it can do with 4 survivors
    seeds = [sites.reveal(s, reports, []) for s in told_reported]
    keys = [sites.reveal(s, {k: v for k, v in reports.items() if k != victim}, [victim]) for s in told_lost]
    assert len(seeds) < sites.t and len(keys) < sites.t
    with pytest.raises(ValueError):
        shamir.combine({r["x"]: int(r["b"][victim], 16) for r in seeds}, sites.t)
    with pytest.raises(ValueError):
        shamir.combine({r["x"]: int(r["s"][victim], 16) for r in keys}, sites.t)


def test_the_reveal_checks_the_signed_list_of_who_reported(pki):
    sites, values = Sites(pki), updates()
    setups = sites.keys()
    sent = {s: sites.step(s, setups, values[s]) for s in SITES}
    reports = {s: r for s, (_, r) in sent.items()}
    forged = copy.deepcopy(reports)
    forged["d-site"]["body"]["context"] = "t-1/3/2"
    with pytest.raises(Refused, match="does not match"):
        sites.reveal("a-site", forged, [])
    with pytest.raises(Refused, match="signed by 'e-site'"):
        sites.reveal("a-site", {**reports, "d-site": reports["e-site"]}, [])
    with pytest.raises(Refused, match="not a split"):
        sites.reveal("a-site", {s: reports[s] for s in ("a-site", "b-site", "c-site")}, ["d-site"])
    assert sites.reveal("a-site", reports, [])["b"].keys() == set(SITES), "a failed check revealed nothing"


def test_a_substituted_key_is_found_by_the_peers(pki):
    impostor = secagg.KeyPair.generate()   # the federation's own, posing as b-site's to a-site
    sites = Sites(pki)
    signers, stranger = pki.signers, pki.stranger
    unsigned = copy.deepcopy(sites.proofs())
    unsigned["b-site"]["body"]["agreement_key"] = impostor.public.hex()
    with pytest.raises(Refused, match="b-site: the signature does not match"):
        sites.keys(relayed={"a-site": unsigned})
    for forged in ({**sites.proofs(), "b-site": bonawitz.agreement_proof(signers["c-site"], impostor)},
                   {**sites.proofs(), "b-site": bonawitz.agreement_proof(stranger, impostor)}):
        with pytest.raises(Refused, match="b-site: (signed by 'c-site'|its certificate is not one)"):
            sites.keys(relayed={"a-site": forged})
    without = {k: v for k, v in sites.proofs().items() if k != "b-site"}
    with pytest.raises(Refused, match="no signed agreement key of b-site"):
        sites.keys(relayed={"a-site": without})
    # A masking key swapped in transit breaks its site's signature.
    sites = Sites(pki)
    setups = sites.keys()
    tampered = copy.deepcopy(setups)
    tampered["c-site"]["body"]["masking_key"] = impostor.public.hex()
    with pytest.raises(Refused, match="c-site: the signature does not match"):
        sites.step("a-site", tampered, updates()["a-site"])


def test_a_lying_survivors_share_is_passed_over_never_summed_in(pki):
    values = updates()
    sites = Sites(pki)
    setups, masked, revealed = run_round(sites, values, ("e-site",))   # 4 survivors, t = 3: one to spare
    liar = copy.deepcopy(revealed)
    liar[0]["b"]["b-site"] = format(int(liar[0]["b"]["b-site"], 16) + 1, "x")
    liar[1]["s"]["e-site"] = format(int(liar[1]["s"]["e-site"], 16) + 7, "x")
    total = secagg.decode(bonawitz.unmask(masked, setups, liar, sites.t))
    assert np.allclose(total, sum(values[s] for s in masked), atol=1e-5)
    liar[2]["b"]["b-site"] = format(int(liar[2]["b"]["b-site"], 16) + 5, "x")   # two liars: too few good shares
    with pytest.raises(ValueError, match="do not give back the secret it signed"):
        bonawitz.unmask(masked, setups, liar, sites.t)


def test_keys_signed_under_another_ca_or_for_another_round_are_refused(pki):
    stranger = pki.stranger
    sites = Sites(pki)
    setups = sites.keys()
    forged = {**setups, "b-site": stranger.sign(setups["b-site"]["body"])}
    with pytest.raises(Refused, match="b-site: its certificate is not one the federation's CA issued"):
        sites.step("a-site", forged, updates()["a-site"])
    other_round = Sites(pki)
    elsewhere = other_round.keys()
    with pytest.raises(Refused, match="not the ones it made"):
        sites.step("a-site", {**setups, "a-site": elsewhere["a-site"]}, updates()["a-site"])


def test_a_context_masks_once_and_reveals_once(pki):
    sites, values = Sites(pki), updates()
    setups = sites.keys()
    with pytest.raises(Refused, match="2 sites have keys: a secure round masks among at least 3"):
        sites.step("a-site", {s: setups[s] for s in ("a-site", "b-site")}, values["a-site"])
    sites.step("a-site", setups, values["a-site"])
    with pytest.raises(Refused, match="used once"):
        sites.step("a-site", setups, values["a-site"])
    with pytest.raises(Refused, match="masked no update"):
        sites.reveal("b-site", {}, [])


def test_zero_and_low_order_keys_and_thresholds_of_half_or_less_are_refused(pki):
    for bad in (bytes(32), (1).to_bytes(32, "little"), bytes(31)):
        with pytest.raises(Refused):
            bonawitz.check_key(bad, "a key")
    sites = Sites(pki)
    zero = bonawitz.agreement_proof(sites.signers["d-site"], secagg.KeyPair.generate())
    zero["body"]["agreement_key"] = bytes(32).hex()
    zero = sites.signers["d-site"].sign(zero["body"])   # signed by d-site itself: a site breaking rounds
    with pytest.raises(Refused, match="zero or low-order"):
        sites.keys(relayed={"a-site": {**sites.proofs(), "d-site": zero}})
    with pytest.raises(Refused, match="threshold above half"):
        bonawitz.keys("a-site", CONTEXT, list(SITES[:4]), 2, sites.agreement["a-site"], {}, sites.signers["a-site"],
                      sites.ca)
    with pytest.raises(Refused, match="at least 3 sites"):
        bonawitz.keys("a-site", CONTEXT, list(SITES[:2]), 2, sites.agreement["a-site"], {}, sites.signers["a-site"],
                      sites.ca)
    assert [bonawitz.threshold(n, 0.6) for n in (3, 4, 5, 10)] == [2, 3, 3, 6]
    assert bonawitz.threshold(4, 0.51) == 3


def test_any_t_shares_give_the_secret_and_fewer_do_not():
    secret = bytes(range(32))
    shares = shamir.split(secret, [1, 2, 3, 4, 5], 3)
    for chosen in itertools.combinations(shares, 3):
        assert shamir.combine({x: shares[x] for x in chosen}, 3) == secret
    with pytest.raises(ValueError, match="2 shares, 3 needed"):
        shamir.combine({1: shares[1], 2: shares[2]}, 3)
    with pytest.raises(ValueError, match="do not agree"):   # two taken for enough: a number far off any secret
        shamir.combine({1: shares[1], 2: shares[2]}, 2)


def test_the_agent_keeps_each_contexts_secrets_to_itself_and_uses_a_context_once(pki, tmp_path):
    """The agent's side (`site_agent.secure`): a phase prepared again for the same attempt and
    inputs gets the same answer; another attempt, or the same with other inputs, is refused; once
    the site revealed, the context's secrets are gone from its disk."""
    ca, signers, issued = pki.ca, pki.signers, pki.issued
    sites = Sites(pki, sites=("a-site", "b-site", "c-site"))
    agent = SecureAggregation("a-site", tmp_path / "secagg", sites.agreement["a-site"], TLSConfig(
        ca=issued["ca"].cert, cert=issued["a-site"].cert, key=issued["a-site"].key))
    peers = {"context": CONTEXT, "participants": list(sites.sites), "threshold": 2, "keys": sites.proofs()}

    def prepare(sid: str, name: str, content: dict, digest: str = "d1"):
        inbox = tmp_path / f"{sid}-{name}"
        inbox.mkdir(exist_ok=True)
        (inbox / name).write_text(json.dumps(content))
        agent.prepare(sid, inbox, digest)
        return inbox

    first = prepare("fed-j-1-1", "secagg-peers.json", peers).joinpath("secagg-setup.json").read_text()
    again = prepare("fed-j-1-1", "secagg-peers.json", peers).joinpath("secagg-setup.json").read_text()
    assert first == again, "the same attempt prepared again gets the same keys"
    with pytest.raises(Refused, match="used once: attempt fed-j-1-1 had its keys$"):
        prepare("fed-j-2-1", "secagg-peers.json", peers)
    with pytest.raises(Refused, match="had its keys with other inputs"):
        prepare("fed-j-1-1", "secagg-peers.json", peers, digest="d2")
    (kept,) = (tmp_path / "secagg").iterdir()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    assert json.loads(kept.read_text())["seed"] not in first

    # The peers make theirs; a-site masks, then reveals, and nothing secret of the context is left.
    setups = {"a-site": json.loads(first)}
    for s in ("b-site", "c-site"):
        sites.states[s], setups[s] = bonawitz.keys(s, CONTEXT, list(sites.sites), 2, sites.agreement[s],
                                                   sites.proofs(), signers[s], ca)
    step = prepare("fed-j-3-1", "secagg-setups.json", {"context": CONTEXT, "setups": setups})
    assert set(json.loads((step / "secrets.json").read_text())) == {"pairs", "seed"}
    with pytest.raises(Refused, match="had its step with other inputs"):   # a new model under the same masks
        prepare("fed-j-3-1", "secagg-setups.json", {"context": CONTEXT, "setups": setups}, digest="d2")
    reports = {"a-site": json.loads((step / "secagg-report.json").read_text())}
    for s in ("b-site", "c-site"):
        sites.states[s], _, _ = bonawitz.step(sites.states[s], s, setups, ca, sites.agreement[s])
        reports[s] = bonawitz.report(signers[s], CONTEXT)
    prepare("fed-j-4-1", "secagg-reveal.json", {"context": CONTEXT, "reported": reports, "dropped": []})
    left = json.loads(kept.read_text())
    assert not set(bonawitz.SECRET) & set(left) and "out" not in left["done"]["step"], left.keys()
    with pytest.raises(Refused, match="secrets are gone"):
        prepare("fed-j-3-1", "secagg-setups.json", {"context": CONTEXT, "setups": setups})
    with pytest.raises(Refused, match="made no keys for it"):
        prepare("fed-j-5-1", "secagg-reveal.json", {"context": "t-9/1/1", "reported": {}, "dropped": []})
    with pytest.raises(Refused, match="context is a string"):
        prepare("fed-j-6-1", "secagg-peers.json", {**peers, "context": [CONTEXT]})
    plain = SecureAggregation("a-site", tmp_path / "plain", secagg.KeyPair.generate(), None)
    inbox = tmp_path / "plain-inbox"
    inbox.mkdir()
    (inbox / "secagg-peers.json").write_text(json.dumps(peers))
    with pytest.raises(Refused, match="needs the site's TLS certificate"):
        plain.prepare("fed-j-7-1", inbox, "d1")


def test_an_input_named_like_what_the_site_makes_is_refused(tmp_path):
    """The federation cannot hand a step its own masks (`secrets.json`) or a site's signed files."""
    files = AttemptFiles(tmp_path / "io", "a-site")
    for name in sorted(RESERVED):
        a = pb.Assignment(job_id="j-1", attempt=1, submission_id="fed-j-1-1",
                          inputs=[pb.ArtifactRef(name=name, sha256="0" * 64, size=2)])
        word = files.prepare("fed-j-1-1", a, fetch=lambda *_: b"{}")
        assert isinstance(word, SiteWord) and word.state is AttemptState.REJECTED, name
        assert f"input {name}: a name this site keeps" in word.message
        assert not (tmp_path / "io" / "fed-j-1-1" / "in" / name).exists()
