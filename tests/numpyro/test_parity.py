"""ppl's NUTS and NumPyro's ``MCMC(NUTS)`` on NumPyro's own examples, in the same process.

Every scalar of the posterior means must agree within 5 Monte Carlo standard errors of
the difference, ``sqrt(sd^2 / ess_ppl + sd^2 / ess_numpyro)``, with ArviZ-equal bulk ESS
of each run: a bound that holds for any key and any CPU.
"""

import warnings

import numpy as np
import pytest
from numpyro.infer import MCMC, NUTS

import ppl
from ppl.mcmc.diagnostics import bulk_ess
from tests.numpyro.models import MODELS
from tests.seeds import key

pytestmark = pytest.mark.slow


def _as_columns(samples, names):
    """``(chains, draws, k)``: every scalar of the named sites."""
    return np.concatenate(
        [np.asarray(samples[n]).reshape(*np.shape(samples[n])[:2], -1) for n in names], axis=-1
    )


@pytest.mark.parametrize(
    "name", ["ar2"]
)  # ucbadmit: benchmarks/numpyro_models.py; its density is checked exactly
def test_posterior_means_agree_with_numpyro(name):
    model, args, kwargs = MODELS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = ppl.nuts(
            model, *args, key=key(0), chains=2, warmup=400, draws=400, progress_bar=False, **kwargs
        )
        mcmc = MCMC(NUTS(model), num_warmup=400, num_samples=400, num_chains=2, progress_bar=False)
        mcmc.run(key(1), *args, **kwargs)
    theirs = mcmc.get_samples(group_by_chain=True)
    names = sorted(theirs)
    assert set(names) <= set(ours.samples)
    a, b = _as_columns(ours.samples, names), _as_columns(theirs, names)
    sd = np.concatenate([a, b], axis=1).reshape(-1, a.shape[-1]).std(axis=0)
    se = sd * np.sqrt(1 / bulk_ess(a) + 1 / bulk_ess(b))
    np.testing.assert_array_less(np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1))), 5 * se)
