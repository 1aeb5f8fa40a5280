"""Client-level differential privacy for federated training (DP-FedAvg, McMahan et al., 2018):
each site's update is clipped to an L2 norm and Gaussian noise is added, so that the model a
round releases says little about whether any one site took part. The privacy spent is the
accountant's of Google's `dp-accounting` (Rényi DP of the Gaussian mechanism, every site in every
round), never a formula of ours. Imported only where privacy is asked for: it loads SciPy.
"""
from __future__ import annotations

import functools
import math

import numpy as np


@functools.lru_cache(maxsize=4096)
def spent(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon after `rounds` rounds at `noise_multiplier` (noise std over the clip), at `delta`."""
    if rounds <= 0:
        return 0.0
    import dp_accounting
    from dp_accounting import rdp
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(noise_multiplier), rounds))
    return float(accountant.get_epsilon(delta))


@functools.lru_cache(maxsize=1024)
def calibrate(epsilon: float, delta: float, rounds: int) -> float:
    """The least noise multiplier whose `rounds` rounds spend at most `epsilon` (dp-accounting's
    own search); ValueError when none up to 1000 does."""
    import dp_accounting
    from dp_accounting import mechanism_calibration, rdp
    try:
        found = dp_accounting.calibrate_dp_mechanism(
            rdp.RdpAccountant,
            lambda z: dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), rounds),
            epsilon, delta, dp_accounting.ExplicitBracketInterval(0.05, 1000.0), tol=1e-3)
    except (ValueError, mechanism_calibration.NoBracketIntervalFoundError):
        raise ValueError(f"no noise multiplier up to 1000 keeps {rounds} rounds within epsilon {epsilon:g} "
                         f"at delta {delta:g}: ask for a larger epsilon or fewer rounds") from None
    return round(float(found) + 5e-4, 3)   # rounded up: the rounds never spend more than asked


def site_noise(noise_multiplier: float, clip: float, secure: bool, fewest: int) -> float:
    """The noise std each site adds to its clipped update. Without secure aggregation the
    aggregator sees each update, so each carries the whole noise; with it the aggregator sees only
    a sum of at least `fewest` updates, whose noises add up to the whole."""
    whole = noise_multiplier * clip
    return whole / math.sqrt(fewest) if secure else whole


def privatise(update: np.ndarray, reference: np.ndarray, clip: float, std: float,
              rng: np.random.Generator) -> np.ndarray:
    """`reference` plus the change from it, clipped to L2 norm `clip`, with Gaussian noise."""
    change = update - reference
    norm = float(np.linalg.norm(change))
    if norm > clip:
        change = change * (clip / norm)
    return reference + change + rng.normal(0.0, std, size=change.shape)
