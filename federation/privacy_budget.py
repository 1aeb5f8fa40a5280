"""The privacy budgets of datasets (`spec.datasets.<name>.privacy_budget` in the policy), charged
by the trainings on them: an active training holds what all its rounds will spend, an ended one
what its completed rounds spent. Epsilons and deltas add up across trainings (basic composition).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from federation.control.catalog import check_access
from federation.errors import InvalidSpec, PermissionDenied, ResourceExhausted
from federation.spec.policy import PolicyConfig
from federation.spec.training import PrivacySpec
from training.model import Training


@dataclass(frozen=True)
class Charge:
    epsilon: float
    delta: float


def noise_multiplier(privacy: PrivacySpec, rounds: int) -> float:
    """The training's noise multiplier: its own, or the least that keeps its rounds within its epsilon."""
    from training import privacy as dp
    if privacy.noise_multiplier is not None:
        return privacy.noise_multiplier
    try:
        return dp.calibrate(privacy.epsilon, privacy.delta, rounds)
    except ValueError as e:
        raise InvalidSpec(f"spec.privacy.epsilon: {e}") from None


def spent(t: Training, rounds: int) -> Charge:
    """What `rounds` rounds of the training spend."""
    from training import privacy as dp
    body = t.spec.spec
    if body.privacy is None or rounds <= 0:
        return Charge(0.0, 0.0)
    z = noise_multiplier(body.privacy, body.rounds)
    return Charge(dp.spent(z, rounds, body.privacy.delta), body.privacy.delta)


def charge(t: Training) -> Charge:
    """Held while it runs (all its rounds), spent once it ended (the rounds it completed)."""
    return spent(t, t.spec.spec.rounds if not t.state.terminal else t.round)


def check_training(t: Training) -> Charge:
    """What the whole training will spend, refused beyond its own epsilon."""
    body = t.spec.spec
    assert body.privacy is not None
    planned = spent(t, body.rounds)
    if planned.epsilon > body.privacy.epsilon:
        z = noise_multiplier(body.privacy, body.rounds)
        raise InvalidSpec(f"spec.privacy: {body.rounds} rounds at noise multiplier {z:g} spend epsilon "
                          f"{planned.epsilon:.3g}, above the {body.privacy.epsilon:g} this training may spend")
    return planned


def check_budget(dataset: str, policy: PolicyConfig, others: Iterable[Training], adding: Charge, what: str) -> None:
    """Refuse `adding` where it would take `dataset` past its budget, with what the others hold."""
    entry = policy.spec.datasets.get(dataset)
    budget = entry.privacy_budget if entry is not None else None
    if budget is None:
        return
    held = [charge(t) for t in others if t.spec.spec.dataset == dataset and t.spec.spec.privacy is not None]
    epsilon, delta = sum(c.epsilon for c in held), sum(c.delta for c in held)
    if epsilon + adding.epsilon > budget.epsilon + 1e-9 or delta + adding.delta > budget.delta + 1e-12:
        raise ResourceExhausted(
            f"privacy budget of dataset {dataset}: {what} needs epsilon {adding.epsilon:.3g} (delta {adding.delta:g}), "
            f"but {epsilon:.3g} of {budget.epsilon:g} (delta {delta:g} of {budget.delta:g}) is spent or held by "
            f"{len(held)} other training(s) (policy spec.datasets.{dataset}.privacy_budget)")


@dataclass
class PrivacyUse:
    dataset: str
    budget_epsilon: float = 0.0   # 0: no budget set
    budget_delta: float = 0.0
    spent_epsilon: float = 0.0    # by ended trainings, and running ones' completed rounds
    held_epsilon: float = 0.0     # the rounds running trainings have yet to run
    trainings: int = 0


def usage(policy: PolicyConfig, trainings: Iterable[Training], tenants: frozenset[str] | None = None
          ) -> list[PrivacyUse]:
    """Per dataset with a budget or a private training: what is spent and held of its budget.
    With `tenants`, only the datasets one of them may use."""
    out = {name: PrivacyUse(name, entry.privacy_budget.epsilon, entry.privacy_budget.delta)
           for name, entry in policy.spec.datasets.items() if entry.privacy_budget is not None}
    for t in trainings:
        body = t.spec.spec
        if body.privacy is None:
            continue
        row = out.setdefault(body.dataset, PrivacyUse(body.dataset))
        done = spent(t, t.round).epsilon
        row.trainings += 1
        row.spent_epsilon += done
        if not t.state.terminal:
            row.held_epsilon += charge(t).epsilon - done
    return [out[name] for name in sorted(out) if tenants is None or any(
        _may_use(tenant, name, policy) for tenant in tenants)]


def _may_use(tenant: str, dataset: str, policy: PolicyConfig) -> bool:
    try:
        check_access(tenant, {"dataset": dataset}, policy)
    except PermissionDenied:
        return False
    return True
