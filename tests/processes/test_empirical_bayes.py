"""Empirical Bayes: the loss and its gradient are exact, the loop descends, and a
non-finite loss stops the loop naming the step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ppl.processes import empirical_bayes, gp, nngp
from tests.seeds import key


def make_kernel(p):
    return nngp.mlp(2, "erf", W_std=p["W_std"], b_std=p["b_std"], last_W_std=p["last_W_std"])


@pytest.fixture(scope="module")
def data():
    x = jnp.linspace(-2.0, 2.0, 15)[:, None]
    y = jnp.sin(2 * x[:, 0]) + 0.1 * jax.random.normal(key(0), (15,))
    return x, y


INIT = {"W_std": 1.3, "b_std": 0.2, "last_W_std": 1.1, "noise_variance": 0.1}


@pytest.mark.parametrize("likelihood", ["gaussian", "student_t"])
def test_loss_is_the_log_marginal_and_its_gradient_is_exact(data, likelihood):
    x, y = data
    params = {k: jnp.asarray(v) for k, v in INIT.items()}
    if likelihood == "student_t":
        params |= {"alpha": jnp.asarray(2.5), "beta": jnp.asarray(1.5)}
    loss = empirical_bayes.negative_log_marginal(make_kernel, params, x, y, likelihood)
    k = np.asarray(make_kernel(params).kernel(x)) + (0.1 + gp.DEFAULT_JITTER) * np.eye(15)
    if likelihood == "gaussian":
        expected = stats.multivariate_normal(np.zeros(15), k).logpdf(np.asarray(y))
    else:
        expected = stats.multivariate_t(np.zeros(15), 1.5 / 2.5 * k, df=5.0).logpdf(np.asarray(y))
    assert abs(float(loss) + expected / 15) < 1e-10
    grad = jax.grad(lambda p: empirical_bayes.negative_log_marginal(make_kernel, p, x, y, likelihood))(params)
    for name in params:
        up = params | {name: params[name] + 1e-6}
        down = params | {name: params[name] - 1e-6}
        numeric = (
            empirical_bayes.negative_log_marginal(make_kernel, up, x, y, likelihood)
            - empirical_bayes.negative_log_marginal(make_kernel, down, x, y, likelihood)
        ) / 2e-6
        assert abs(float(grad[name]) - float(numeric)) < 1e-6, name


def test_fit_descends_to_a_stationary_point(data):
    x, y = data
    fit = empirical_bayes.fit(make_kernel, x, y, INIT, steps=400, progress_bar=False)
    assert fit.loss.shape == (400,)
    assert fit.loss[-1] < fit.loss[0] - 0.1
    final = empirical_bayes.negative_log_marginal(make_kernel, fit.params, x, y)
    assert float(final) <= float(fit.loss[-1]) + 1e-6
    assert all(float(v) > 0 for v in fit.params.values())


def test_non_finite_loss_stops_naming_the_step(data):
    x, y = data

    def broken(p):
        return nngp.mlp(1, "relu", W_std=p["W_std"] * jnp.nan)

    with pytest.raises(FloatingPointError, match="at step 0"):
        empirical_bayes.fit(broken, x, y, INIT, steps=10, progress_bar=False)
    with pytest.raises(ValueError, match=r"init\['b_std'\] must be finite and > 0"):
        empirical_bayes.fit(make_kernel, x, y, INIT | {"b_std": 0.0}, steps=10)
    with pytest.raises(ValueError, match="must be a dict containing \\['alpha', 'beta', 'noise_variance'\\]"):
        empirical_bayes.fit(make_kernel, x, y, INIT, likelihood="student_t", steps=10)
