"""Differential privacy of trainings: the accountant is dp-accounting's, the noise is calibrated
to the epsilon asked, and each site's update is clipped before noise is added."""
from __future__ import annotations

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp

from training import privacy


@pytest.mark.parametrize("z, rounds, delta", [(1.1, 20, 1e-5), (0.8, 5, 1e-6), (3.0, 100, 1e-5)])
def test_the_epsilon_spent_is_the_one_dp_accounting_computes(z, rounds, delta):
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), rounds)
    accountant = rdp.RdpAccountant()
    accountant.compose(event)
    assert privacy.spent(z, rounds, delta) == pytest.approx(accountant.get_epsilon(delta), rel=1e-12)
    tight = pld.PLDAccountant()
    tight.compose(event)
    assert tight.get_epsilon(delta) <= privacy.spent(z, rounds, delta), "RDP is the looser (safe) bound"
    assert privacy.spent(z, 0, delta) == 0.0


def test_the_noise_is_the_least_that_keeps_every_round_within_the_epsilon_asked():
    for epsilon, rounds in ((1.0, 5), (4.0, 20), (30.0, 5)):
        z = privacy.calibrate(epsilon, 1e-5, rounds)
        assert privacy.spent(z, rounds, 1e-5) <= epsilon
        assert privacy.spent(z - 0.01, rounds, 1e-5) > epsilon, "not much more noise than needed"
    with pytest.raises(ValueError, match="no noise multiplier up to 1000"):
        privacy.calibrate(1e-4, 1e-9, 100_000)


def test_an_update_is_clipped_to_its_bound_and_noised_with_the_std_asked():
    rng = np.random.default_rng(0)
    reference = np.ones(50_000)
    big = reference + rng.normal(size=reference.size) * 10
    clipped = privacy.privatise(big, reference, clip=2.0, std=0.0, rng=rng)
    assert np.linalg.norm(clipped - reference) == pytest.approx(2.0)
    small = reference + 1e-4
    assert np.allclose(privacy.privatise(small, reference, 2.0, 0.0, rng), small), "within the bound: kept as is"
    noised = privacy.privatise(reference, reference, 2.0, 0.5, rng)
    assert np.std(noised - reference) == pytest.approx(0.5, rel=0.02)


def test_with_secure_aggregation_the_sites_noises_add_up_to_the_whole():
    whole = privacy.site_noise(1.5, 2.0, secure=False, fewest=4)
    share = privacy.site_noise(1.5, 2.0, secure=True, fewest=4)
    assert whole == pytest.approx(3.0)
    assert np.sqrt(4 * share ** 2) == pytest.approx(whole), "any 4 reporting sites' sum carries the whole noise"
