"""Martingale posteriors: exact checks of the copula recursions against direct loops,
the martingale property of predictive resampling within Monte Carlo error, the
Bayesian bootstrap against Dirichlet weights, consistency, devices and input errors.

Monte Carlo tolerances: a mean over ``B`` independent paths is compared with its
expectation at ``z <= 5`` standard errors (the standard error estimated from the same
paths); over the ``<= 161`` grid points of a test the chance of a false failure is below
``161 * 6e-7 = 1e-4`` for any seed.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as sp
from scipy import stats

import ppl
from ppl.processes import martingale
from ppl.processes.martingale import copula, copula_density, resampling
from tests.four_devices import run_on_four_devices
from tests.seeds import key, seed

# --- direct loops (NumPy, one ordering, no vectorisation) ------------------------------


def _np_terms(u, v, rho):
    u, v = np.clip(u, 1e-6, 1 - 1e-6), np.clip(v, 1e-6, 1 - 1e-6)
    a, b = sp.ndtri(u), sp.ndtri(v)
    log_h = np.clip(sp.log_ndtr((a - rho * b) / np.sqrt(1 - rho**2)), np.log(1e-6), np.log1p(-1e-6))
    log_c = -0.5 * np.log(1 - rho**2) - (rho**2 * (a**2 + b**2) - 2 * rho * a * b) / (2 * (1 - rho**2))
    return np.exp(log_h), np.exp(log_c)


def _np_alpha(i):
    return (2 - 1 / (i + 1)) / (i + 2)


def _np_density_prequential(rho, y, shift=0):
    """``(1/n) sum_i log p_{i-1}(y_i)`` with the d-variate update written out.
    ``shift`` breaks the alpha sequence (a deliberately wrong variant)."""
    n, d = y.shape
    cdf = np.clip(stats.norm.cdf(y), 1e-6, 1 - 1e-6)
    pdf = np.prod(np.maximum(stats.norm.pdf(y), 1e-6), axis=1)
    total = 0.0
    for i in range(n):
        total += np.log(pdf[i])
        v, alpha = cdf[i].copy(), _np_alpha(i + shift)
        for j in range(n):
            h, c = _np_terms(cdf[j], v, rho)
            before = np.concatenate([[1.0], np.cumprod(c)[:-1]])
            cdf[j] = ((1 - alpha) * cdf[j] + alpha * before * h) / (1 - alpha + alpha * before)
            pdf[j] *= 1 - alpha + alpha * np.prod(c)
    return total / n


def _np_weight(i, x, x_new, rho_x):
    k = np.prod(
        (1 - rho_x**2) ** -0.5
        * np.exp(-(rho_x**2 * (x**2 + x_new**2) - 2 * rho_x * x * x_new) / (2 * (1 - rho_x**2)))
    )
    alpha = _np_alpha(i)
    return np.clip(alpha * k / (1 - alpha + alpha * k), 1e-5, 1 - 1e-5)


def _np_regression_prequential(rho, rho_x, x, y):
    n = len(y)
    cdf, pdf = np.clip(stats.norm.cdf(y), 1e-6, 1 - 1e-6), np.maximum(stats.norm.pdf(y), 1e-6)
    total = 0.0
    for i in range(n):
        total += np.log(pdf[i])
        v = cdf[i]
        for j in range(n):
            alpha = _np_weight(i, x[j], x[i], rho_x)
            h, c = _np_terms(cdf[j], v, rho)
            cdf[j], pdf[j] = (1 - alpha) * cdf[j] + alpha * h, pdf[j] * (1 - alpha + alpha * c)
    return total / n


def _np_classification_prequential(rho, rho_x, x, y):
    n, eps = len(y), 5e-5
    p = np.full(n, 0.5)
    total = 0.0
    for i in range(n):
        v = np.clip(p[i], eps, 1 - eps)
        total += np.log(v if y[i] == 1 else 1 - v)
        for j in range(n):
            alpha = _np_weight(i, x[j], x[i], rho_x)
            u = np.clip(p[j], eps, 1 - eps)
            ratio = min(u, v) / (u * v) if y[i] == 1 else 1 / (1 - v) - min(u, v) / (u * (1 - v))
            p[j] = u * (1 - alpha + alpha * max(1 - rho + rho * ratio, eps))
    return total / n


# --- fixtures: few compiled programs, shared by the tests ------------------------------
# Fitting compiles once per data shape, so the density tests share two sizes (n = 30 and
# n = 400, 3 orderings each) and one grid size.

GRID = np.linspace(-4.0, 4.0, 161)
SIZES = (30, 400)


def _mixture(rng, n):
    """0.5 N(-1.5, 0.5^2) + 0.5 N(1.5, 0.5^2): bimodal, far from the starting N(0, 1)."""
    return np.where(rng.uniform(size=n) < 0.5, -1.5, 1.5) + 0.5 * rng.normal(size=n)


def _mixture_pdf(y):
    return 0.5 * stats.norm.pdf(y, -1.5, 0.5) + 0.5 * stats.norm.pdf(y, 1.5, 0.5)


@pytest.fixture(scope="module")
def fits():
    """Fitted densities of 3 samples per size, of N(0, 1) (``"normal"``) and of the mixture."""
    rng = np.random.default_rng(seed(1))
    draw = {"normal": lambda n: rng.normal(size=n), "mixture": lambda n: _mixture(rng, n)}
    with warnings.catch_warnings():  # normal data: rho -> 0, which warns (checked below)
        warnings.simplefilter("ignore")
        return {
            kind: {
                n: [martingale.density(sample(n), key=key(1 + r), num_permutations=3) for r in range(3)]
                for n in SIZES
            }
            for kind, sample in draw.items()
        }


@pytest.fixture(scope="module")
def density_fit(fits):
    return fits["mixture"][30][0]


@pytest.fixture(scope="module")
def regression_data():
    rng = np.random.default_rng(seed(3))
    x = rng.normal(size=(25, 2))
    return x, np.sin(x[:, 0]) + 0.3 * rng.normal(size=25)


@pytest.fixture(scope="module")
def classification_data():
    rng = np.random.default_rng(seed(4))
    x = rng.normal(size=(25, 2))
    return x, (x[:, 0] - x[:, 1] + 0.5 * rng.normal(size=25) > 0).astype(int)


@pytest.fixture(scope="module")
def regression_fit(regression_data):
    x, y = regression_data
    return martingale.regression(x, y, key=key(10), num_permutations=2, rho=0.8, rho_x=[0.7, 0.9])


@pytest.fixture(scope="module")
def classifier_fit(classification_data):
    x, y = classification_data
    return martingale.classification(x, y, key=key(12), num_permutations=2, rho=0.8, rho_x=[0.7, 0.9])


# --- exact checks ----------------------------------------------------------------------


def test_copula_update_is_a_martingale_in_v():
    """``E_V[c(u, V)] = 1`` and ``E_V[H(u | V)] = u`` for ``V ~ U(0, 1)``, by quadrature."""
    nodes, weights = np.polynomial.legendre.leggauss(400)
    v = 0.5 * (nodes + 1)
    for u in (0.05, 0.4, 0.9):
        log_h, log_c = copula.copula_terms(jnp.full_like(v, u), jnp.asarray(v), 0.8)
        assert abs(0.5 * weights @ np.exp(log_c) - 1) < 1e-4
        assert abs(0.5 * weights @ np.exp(log_h) - u) < 1e-4


def test_prequential_log_likelihood_and_gradient_match_direct_loops():
    rng = np.random.default_rng(seed(5))
    y = rng.normal(size=(7, 2))
    orderings = np.array([rng.permutation(7) for _ in range(2)])
    value, grad = jax.value_and_grad(copula_density.prequential_log_likelihood)(
        0.7, jnp.asarray(y), jnp.asarray(orderings)
    )

    def direct(rho, shift=0):
        return np.mean([_np_density_prequential(rho, y[order], shift) for order in orderings])

    step = 1e-6
    assert abs(value - direct(0.7)) < 1e-10
    assert abs(grad - (direct(0.7 + step) - direct(0.7 - step)) / (2 * step)) < 1e-6
    # A wrong alpha sequence (off by one) is far outside that tolerance.
    assert abs(direct(0.7, shift=1) - direct(0.7)) > 1e-3


def test_forward_gradient_equals_reverse_mode():
    def fn(theta):
        return jnp.sum(jnp.sin(theta) * jnp.arange(1.0, 4.0)) + jnp.prod(theta)

    theta = jnp.array([0.3, -1.2, 2.0])
    wrapped = martingale.fitting.forward_gradient(fn)
    np.testing.assert_allclose(jax.grad(wrapped)(theta), jax.grad(fn)(theta), rtol=1e-12)
    assert float(wrapped(theta)) == float(fn(theta))


def test_fitted_log_scores_match_direct_loops(
    regression_fit, classifier_fit, regression_data, classification_data
):
    """The prequential log-likelihood a fit reports equals the direct loop over its own
    orderings (regression and classification, bandwidths per feature)."""
    rho_x = np.array([0.7, 0.9])
    x, y = regression_data
    orders = np.asarray(martingale.fitting.orderings(key(10), 25, 2))
    y_std = (y - y.mean()) / y.std()
    x_std = (x - x.mean(0)) / x.std(0)
    want = np.mean([_np_regression_prequential(0.8, rho_x, x_std[o], y_std[o]) for o in orders])
    assert abs(float(regression_fit.log_score) - want) < 1e-10
    x, labels = classification_data
    orders = np.asarray(martingale.fitting.orderings(key(12), 25, 2))
    x_std = (x - x.mean(0)) / x.std(0)
    want = np.mean([_np_classification_prequential(0.8, rho_x, x_std[o], labels[o]) for o in orders])
    assert abs(float(classifier_fit.log_score) - want) < 1e-10


def test_fitted_bandwidth_is_a_stationary_point(density_fit):
    """L-BFGS stops where the prequential log-likelihood's derivative vanishes, above the start."""
    rows = jnp.asarray((density_fit.data - density_fit.data.mean()) / density_fit.data.std())
    orderings = martingale.fitting.orderings(key(1), 30, 3)

    objective = jax.jit(
        jax.value_and_grad(
            lambda theta: copula_density.prequential_log_likelihood(jax.nn.sigmoid(theta), rows, orderings)
        )
    )
    value, slope = objective(martingale.fitting.logit(density_fit.rho))
    assert 0 < density_fit.rho < 1 and abs(slope) < 1e-4
    assert abs(float(value) - float(density_fit.log_score)) < 1e-12
    assert float(value) >= float(objective(martingale.fitting.logit(0.9))[0])


def test_density_integrates_to_one(density_fit):
    fine = np.linspace(-7, 7, 1401)
    assert abs(np.trapezoid(np.exp(density_fit.log_density(fine)), fine) - 1) < 2e-3
    rng = np.random.default_rng(seed(7))
    y2 = rng.normal(size=(20, 2)) @ np.array([[1.0, 0.5], [0.0, 1.0]])
    fit2 = martingale.density(y2, key=key(7), num_permutations=2, rho=0.8)
    axis = np.linspace(-6, 6, 81)
    mesh = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2) * y2.std(0) + y2.mean(0)
    values = np.exp(fit2.log_density(mesh)).reshape(81, 81)
    total = np.trapezoid(np.trapezoid(values, axis, axis=1), axis) * np.prod(y2.std(0))
    assert abs(total - 1) < 5e-3


def test_fitted_density_approaches_the_truth_as_n_grows(fits):
    """Mean |p_n - p| on a grid over the bulk, averaged over 3 samples per size. For N(0, 1)
    data the start is already Gaussian and the error is the standardisation's (~ n^-1/2):
    at n = 400 it is 0.1-0.3 of its value at n = 30 over seeds; the check asks for 0.5. For
    the bimodal mixture the fitted bandwidth's smoothing bias dominates at n = 400 and the
    ratio is 0.45-0.65 over seeds; the check asks for 0.8."""
    for kind, truth, grid, ratio in (
        ("normal", stats.norm.pdf, np.linspace(-2, 2, 21), 0.5),
        ("mixture", _mixture_pdf, np.linspace(-2.5, 2.5, 21), 0.8),
    ):
        small, large = (
            np.mean([np.mean(np.abs(np.exp(fit.log_density(grid)) - truth(grid))) for fit in fits[kind][n]])
            for n in SIZES
        )
        assert large < ratio * small, kind


# --- predictive resampling -------------------------------------------------------------
# The copula factor c(u, V) is heavy-tailed when u is extreme (its variance grows like
# exp(rho a^2 / (1 + rho)), a = Phi^-1(u)), so sample standard errors are trustworthy
# only where P_n(y) lies in [0.01, 0.99]: the density checks use those grid points.


@pytest.fixture(scope="module")
def density_paths(density_fit):
    return density_fit.resample(GRID, key=key(8), num_paths=2000, num_steps=100)


def _z_scores(draws, expected):
    draws = np.asarray(draws)
    return (draws.mean(0) - expected) / (draws.std(0) / np.sqrt(len(draws)) + 1e-300)


def _interior(cdf):
    return (cdf > 0.01) & (cdf < 0.99)


def test_resampled_density_is_a_martingale(density_fit, density_paths):
    """Mean over paths of ``p_{n+T}`` and ``P_{n+T}`` on the grid equals ``p_n``, ``P_n``."""
    p_n, cdf_n = np.exp(density_fit.log_density(GRID)), density_fit.conditional_cdf(GRID)[:, 0]
    inside = _interior(cdf_n)
    assert inside.sum() >= 60
    assert np.max(np.abs(_z_scores(density_paths["density"], p_n)[inside])) < 5
    assert np.max(np.abs(_z_scores(density_paths["cdf"], cdf_n))) < 5
    # The paths are still densities: their mass on the grid averages 1 (mass beyond the
    # grid's ends is a martingale too, ~1e-5 here) and the typical path is within 1e-3.
    mass = np.trapezoid(density_paths["density"], GRID, axis=1)
    assert abs(mass.mean() - 1) < 1e-3 and np.median(np.abs(mass - 1)) < 1e-3


def _biased_step(state, step_key, t, data):
    """A wrong predictive-resampling step: the new point's CDF is U^2, not uniform."""
    rho, num_data = data
    v = jax.random.uniform(step_key, state[0].shape[-1:], state[0].dtype) ** 2
    update_all = jax.vmap(copula.update, (0, 0, None, None, None))
    return update_all(*state, v, copula.log_alpha(num_data + t), rho)


def test_a_biased_resampling_step_fails_the_martingale_check(density_fit):
    rows = (GRID - density_fit.scaler.location) / density_fit.scaler.scale
    state = copula_density._averaged_state(density_fit.rho, density_fit.cdfs, jnp.asarray(rows[:, None]))
    data = (density_fit.rho, jnp.asarray(density_fit.cdfs.shape[1]))
    _, density, _ = resampling.run_paths(
        _biased_step, copula_density._density_readout, state, data, key=key(9), num_paths=2000, num_steps=100
    )
    inside = _interior(np.exp(state[0][:, 0]))
    assert np.max(np.abs(_z_scores(density, np.exp(state[1]))[inside])) > 5


def test_regression_and_classification_resampling_are_martingales(
    regression_fit, classifier_fit, regression_data, classification_data
):
    x_test, grid = regression_data[0][:3], np.linspace(-1.5, 1.5, 11)
    paths = regression_fit.resample(x_test, grid, key=key(11), num_paths=1000, num_steps=60)
    pairs = np.repeat(x_test, len(grid), 0), np.tile(grid, 3)
    start = np.exp(regression_fit.log_density(*pairs)).reshape(3, -1)
    inside = _interior(regression_fit.cdf(*pairs).reshape(3, -1))
    assert np.max(np.abs(_z_scores(paths["density"], start)[inside])) < 5
    assert np.max(np.abs(_z_scores(paths["cdf"], regression_fit.cdf(*pairs).reshape(3, -1)))) < 5
    xc = classification_data[0][:5]
    paths = classifier_fit.resample(xc, key=key(13), num_paths=1000, num_steps=60)
    assert np.max(np.abs(_z_scores(paths["probability"], classifier_fit.probability(xc)))) < 5
    assert np.all((paths["probability"] > 0) & (paths["probability"] < 1))


def test_spread_of_the_mean_shrinks_with_n(fits):
    """Posterior sd of the mean at n = 30 vs n = 400 (mixture data): about sqrt(13) = 3.6x
    smaller; the check asks for 2x (sd estimates from 300 paths are within 10%)."""
    spreads = []
    for n in SIZES:
        fit = fits["mixture"][n][1]
        grid = GRID * fit.scaler.scale[0] * 1.5 + fit.scaler.location[0]
        spreads.append(np.std(fit.resample(grid, key=key(15), num_paths=300, num_steps=300)["mean"]))
    assert spreads[1] < spreads[0] / 2


def test_bayesian_bootstrap_matches_dirichlet_weights():
    y = np.random.default_rng(seed(17)).exponential(size=20)
    draws = martingale.bayesian_bootstrap(y, key=key(18), num_paths=2000, num_steps=2000)
    dirichlet = np.random.default_rng(seed(19)).dirichlet(np.ones(20), size=2000) @ y
    assert stats.ks_2samp(draws["mean"], dirichlet).pvalue > 1e-4
    np.testing.assert_allclose(draws["weights"].sum(1), 1.0, atol=1e-12)
    # The ordinary bootstrap of the 2000 imputed points (uniform over the data only) is
    # far too concentrated: the same check rejects it.
    counts = np.random.default_rng(seed(20)).multinomial(2000, np.ones(20) / 20, size=2000)
    assert stats.ks_2samp((1 + counts) / 2020 @ y, dirichlet).pvalue < 1e-4


# --- runtime: keys, devices, ArviZ -----------------------------------------------------


def test_same_key_same_paths_and_arviz_round_trip(density_fit, tmp_path):
    first = density_fit.resample(GRID, key=key(21), num_paths=6, num_steps=30)
    again = density_fit.resample(GRID, key=key(21), num_paths=6, num_steps=30, progress_bar=True)
    np.testing.assert_array_equal(first["density"], again["density"])
    assert first.change.shape == (6,) and np.all(first.change >= 0)
    draws = first.with_functional("median", martingale.grid_quantile(GRID, first["cdf"], 0.5))
    idata = draws.to_arviz()
    assert idata.posterior["density"].dims == ("chain", "draw", "grid_point")
    assert list(idata.posterior["path"].values) == list(range(6))
    ppl.save(idata, tmp_path / "paths.nc")
    loaded = ppl.load(tmp_path / "paths.nc")
    np.testing.assert_array_equal(loaded.posterior["median"].values[0], draws["median"])


FOUR_DEVICES = """
import jax, numpy as np
jax.config.update("jax_enable_x64", True)
from ppl.processes import martingale
y = np.random.default_rng(0).normal(size=15)
fit = martingale.density(y, key=jax.random.key(0), num_permutations=2, rho=0.8)
grid = np.linspace(-3, 3, 9)
one = fit.resample(grid, key=jax.random.key(1), num_paths=6, num_steps=40, devices=1)["density"]
four = fit.resample(grid, key=jax.random.key(1), num_paths=6, num_steps=40, devices=4)["density"]
print(jax.device_count(), float(np.max(np.abs(one - four))))
"""


def test_same_paths_on_one_and_four_devices():
    count, difference = run_on_four_devices(FOUR_DEVICES).split()
    assert count == "4" and float(difference) < 1e-12


# --- bad input ---------------------------------------------------------------------------


def test_bad_input_gets_clear_errors(density_fit, classifier_fit, regression_data, classification_data):
    with pytest.raises(ValueError, match="y has 0 rows"):
        martingale.density(np.zeros(0), key=key(0))
    with pytest.raises(ValueError, match="non-finite"):
        martingale.density(np.array([0.0, np.nan, 1.0]), key=key(0))
    with pytest.raises(ValueError, match="num_paths"):
        density_fit.resample(GRID, key=key(0), num_paths=0)
    with pytest.raises(ValueError, match="num_steps"):
        density_fit.resample(GRID, key=key(0), num_steps=0)
    with pytest.raises(ValueError, match="features"):
        density_fit.log_density(np.zeros((3, 2)))
    with pytest.raises(TypeError, match="key"):
        density_fit.resample(GRID, key=0)
    with pytest.warns(UserWarning, match="outside the data's range"):
        density_fit.resample(GRID * 100, key=key(0), num_paths=2, num_steps=2)
    with pytest.raises(ValueError, match="x_test has 3 features"):
        classifier_fit.resample(np.zeros((2, 3)), key=key(0))
    with pytest.warns(UserWarning, match="barely moves"):  # normal quantiles: rho -> 0
        martingale.density(stats.norm.ppf((np.arange(30) + 0.5) / 30), key=key(22), num_permutations=3)
    x, y = regression_data
    with pytest.raises(ValueError, match="x has 25 rows .* and y 24"):
        martingale.regression(x, y[:24], key=key(0))
    with pytest.raises(ValueError, match="rho must lie in"):
        martingale.regression(x, y, key=key(0), rho=1.5, rho_x=[0.5, 0.5])
    xc, yc = classification_data
    with pytest.raises(ValueError, match="labels 0 and 1"):
        martingale.classification(xc, yc + 1, key=key(0))
    with pytest.raises(ValueError, match="constant"):
        martingale.classification(np.c_[xc, np.ones(25)], yc, key=key(0))
