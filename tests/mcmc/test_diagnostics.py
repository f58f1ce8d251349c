"""The vectorised R-hat and bulk ESS equal ArviZ's, coordinate by coordinate."""

import warnings

import arviz as az
import numpy as np
import pytest

from ppl.mcmc import diagnostics
from tests.seeds import seed


def ar1_draws(rng, chains, num, k, phi):
    """AR(1) chains with autocorrelation ``phi`` per coordinate, some shifted (unmixed)."""
    noise = rng.normal(size=(chains, num, k))
    draws = np.empty_like(noise)
    draws[:, 0] = noise[:, 0]
    for t in range(1, num):
        draws[:, t] = phi * draws[:, t - 1] + noise[:, t]
    draws[0, :, 0] += 3.0  # one chain stuck elsewhere: large R-hat
    return draws


@pytest.mark.parametrize("chains,num", [(4, 1000), (2, 101), (1, 50), (3, 7)])
@pytest.mark.parametrize("phi", [0.0, 0.6, 0.95, -0.4])
def test_rhat_and_bulk_ess_equal_arviz(chains, num, phi):
    rng = np.random.default_rng(seed(int(10 * phi) + chains + num))
    draws = ar1_draws(rng, chains, num, 5, phi)
    draws[..., 4] = 1.5  # a constant coordinate
    ess = diagnostics.bulk_ess(draws)
    expected = az.ess({"x": draws}, method="bulk")["x"].values
    np.testing.assert_allclose(ess, expected, rtol=1e-8)
    if chains > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the constant coordinate warns nothing
            rhat = diagnostics.rank_normalized_rhat(draws)
        np.testing.assert_allclose(rhat, az.rhat({"x": draws})["x"].values, rtol=1e-8)  # NaN where constant


def test_a_stuck_chain_is_flagged():
    draws = ar1_draws(np.random.default_rng(seed(0)), 4, 500, 2, 0.3)
    rhat = diagnostics.rank_normalized_rhat(draws)
    # over 2,000 seeds: the stuck coordinate's R-hat is >= 1.43; the mixed one's is
    # 1.002 +- 0.002, above 1.01 for 0.4% of seeds (so not "< 1.01"), never above 1.014
    assert rhat[0] > 1.1 and rhat[1] < 1.03
