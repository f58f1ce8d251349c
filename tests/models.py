"""Models and data shared by the tests."""

import numpy as np

import ppl
from ppl import dist

Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
# ArviZ's schema names that every NUTS run must record.
NUTS_SAMPLE_STATS = {"lp", "diverging", "energy", "acceptance_rate", "step_size", "n_steps", "tree_depth"}
SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma, y=None):
    """Non-centred eight schools, as in posteriordb's eight_schools_noncentered."""
    mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
    tau = ppl.sample("tau", dist.HalfCauchy(5.0))
    with ppl.plate("school", len(sigma)):
        eta = ppl.sample("eta", dist.Normal(0.0, 1.0))
        theta = ppl.deterministic("theta", mu + tau * eta)
        ppl.sample("y", dist.Normal(theta, sigma), obs=y)
