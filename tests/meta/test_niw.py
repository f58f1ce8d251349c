"""NIW meta-learning against exact oracles: the closed-form local posterior is the
minimiser of its objective, the expected KL and the hyperprior KL match Monte Carlo, the
meta-gradient matches finite differences, a linear-Gaussian head gives the exact conjugate
posterior, and the meta-gradient is the same on 1 and 4 devices.

Monte Carlo tolerances are 5 standard errors of the estimate (the standard error from the
same draws), so they hold for any seed; each is shown to reject a broken formula.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.special import gammaln

import ppl
from ppl import meta
from ppl.meta import niw
from ppl.meta.networks import Network
from tests.four_devices import run_on_four_devices
from tests.seeds import key


@pytest.fixture(autouse=True, scope="module")
def float64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


# local_fit jitted once per configuration (eager, it runs op by op).
local_fit = jax.jit(niw.local_fit, static_argnames=("network", "unravel", "likelihood", "settings"))


def global_params(d, seed, n0=3.0, l0=0.7):
    k1, k2 = jax.random.split(key(seed))
    return niw.GlobalParams(
        m0=jax.random.normal(k1, (d,)),
        log_gam0=jax.random.normal(k2, (d,)) * 0.5,
        log_n0=jnp.log(n0),
        log_l0=jnp.log(l0),
        log_noise=jnp.log(0.5),
    )


def local_objective(m, log_gam, precision, mbar, params):
    gam = jnp.exp(log_gam)
    quadratic = 0.5 * jnp.sum(precision * (jnp.square(m - mbar) + 1.0 / gam))
    return quadratic + niw.expected_kl(m, gam, params)


def test_closed_form_is_the_minimiser_of_quadratic_plus_expected_kl():
    d = 6
    params = global_params(d, 0)
    precision = jnp.array([0.0, 0.3, 1.0, 4.0, 20.0, 100.0])
    mbar = jax.random.normal(key(1), (d,)) * 2
    fit = niw.LocalFit(precision, precision * mbar)
    m_star, gam_star = niw.local_posterior(fit, params)
    grad = jax.grad(local_objective, argnums=(0, 1))(m_star, jnp.log(gam_star), precision, mbar, params)
    assert np.max(np.abs(np.concatenate(grad))) < 1e-10

    solver = optax.lbfgs()
    flat = jnp.zeros(2 * d)

    def objective(z):
        return local_objective(z[:d], z[d:], precision, mbar, params)

    value_and_grad = optax.value_and_grad_from_state(objective)

    @jax.jit
    def minimise(flat):
        def step(_, carry):
            flat, state = carry
            value, grad = value_and_grad(flat, state=state)
            updates, state = solver.update(grad, state, flat, value=value, grad=grad, value_fn=objective)
            return optax.apply_updates(flat, updates), state

        return jax.lax.fori_loop(0, 100, step, (flat, solver.init(flat)))[0]

    flat = minimise(flat)
    np.testing.assert_allclose(flat[:d], m_star, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(jnp.exp(flat[d:]), gam_star, rtol=1e-6)

    # Broken: the precision without the n0 factor is not stationary.
    broken = precision + jnp.exp(params.log_gam0)
    grad_broken = jax.grad(local_objective, argnums=1)(m_star, jnp.log(broken), precision, mbar, params)
    assert np.max(np.abs(grad_broken)) > 1e-2


def test_limits_no_data_gives_the_prior_and_a_weak_prior_gives_the_data_fit():
    d = 4
    params = global_params(d, 2)
    m_star, gam_star = niw.local_posterior(niw.LocalFit(jnp.zeros(d), jnp.zeros(d)), params)
    np.testing.assert_allclose(m_star, params.m0, rtol=1e-12)
    np.testing.assert_allclose(gam_star, params.prior_precision, rtol=1e-12)

    weak = params._replace(log_gam0=jnp.full(d, -40.0))
    mbar, precision = jnp.array([1.0, -2.0, 3.0, 0.5]), jnp.array([1.0, 2.0, 5.0, 10.0])
    m_star, gam_star = niw.local_posterior(niw.LocalFit(precision, precision * mbar), weak)
    np.testing.assert_allclose(m_star, mbar, rtol=1e-12)
    np.testing.assert_allclose(gam_star, precision, rtol=1e-12)


def gaussian_kl(m, gam, mu, tau):
    return 0.5 * (jnp.log(tau / gam) * -1.0 + tau / gam + tau * jnp.square(m - mu) - 1.0)


def draw_phi(rng, params, num):
    gam0, n0, l0 = jnp.exp(params.log_gam0), jnp.exp(params.log_n0), jnp.exp(params.log_l0)
    k1, k2 = jax.random.split(rng)
    d = gam0.shape[0]
    tau = jax.random.gamma(k1, 0.5 * n0, (num, d)) * 2.0 * gam0
    mu = params.m0 + jax.random.normal(k2, (num, d)) / jnp.sqrt(l0 * tau)
    return mu, tau


def within_five_standard_errors(samples, exact):
    mean, se = float(np.mean(samples)), float(np.std(samples) / np.sqrt(len(samples)))
    return abs(mean - exact) < 5 * se, (mean, se, exact)


def test_expected_kl_matches_monte_carlo_and_rejects_the_dropped_one_over_l0():
    d, num = 3, 400_000
    params = global_params(d, 3, n0=3.0, l0=0.7)
    m = jax.random.normal(key(4), (d,))
    gam = jnp.exp(jax.random.normal(key(5), (d,)))
    mu, tau = draw_phi(key(6), params, num)
    samples = np.asarray(jnp.sum(gaussian_kl(m, gam, mu, tau), axis=1))
    exact = float(niw.expected_kl(m, gam, params))
    ok, info = within_five_standard_errors(samples, exact)
    assert ok, info
    broken = exact - 0.5 * d / 0.7  # a reimplementation's regulariser drops the 1/l0 term
    assert not within_five_standard_errors(samples, broken)[0]


def test_hyperprior_kl_matches_monte_carlo():
    d, num = 3, 400_000
    params = global_params(d, 7, n0=4.0, l0=2.0)
    prior = niw.Hyperprior(m=0.3, gam=0.8, n=2.0, l=0.5)
    mu, tau = draw_phi(key(8), params, num)

    def log_density(mu, tau, m, gam, n, l):
        shape, rate = 0.5 * n, 0.5 / gam
        log_gamma = shape * jnp.log(rate) - gammaln(shape) + (shape - 1) * jnp.log(tau) - rate * tau
        log_normal = 0.5 * jnp.log(l * tau / (2 * jnp.pi)) - 0.5 * l * tau * jnp.square(mu - m)
        return jnp.sum(log_gamma + log_normal, axis=-1)

    q = log_density(mu, tau, params.m0, jnp.exp(params.log_gam0), 4.0, 2.0)
    p = log_density(mu, tau, prior.m, prior.gam, prior.n, prior.l)
    ok, info = within_five_standard_errors(np.asarray(q - p), float(niw.hyperprior_kl(params, prior)))
    assert ok, info


@pytest.fixture(scope="module")
def tiny():
    learner = niw.learner(
        meta.networks.mlp([1, 3, 1]), optimizer=optax.adam(1e-3), inner_steps=2, num_samples=3
    )
    source = meta.episodes.sinusoid(shots=4, queries=5)
    episode = jax.tree.map(lambda a: a.astype(jnp.float64), source.sample(key(9)))
    params = learner.init(key(10)).params
    params = params._replace(log_gam0=params.log_gam0 + jax.random.normal(key(11), params.log_gam0.shape))
    return learner, episode, params


def test_meta_gradient_matches_finite_differences(tiny):
    learner, episode, params = tiny
    config = learner.config
    rng = key(12)
    fit_key, draw_key = jax.random.split(rng)
    fit = local_fit(
        fit_key, params, episode.support_x, episode.support_y, network=config.network,
        unravel=config.unravel, likelihood=config.likelihood, settings=config.settings,
    )  # fmt: skip
    grad = jax.jit(jax.grad(lambda p: niw.episode_loss(rng, episode, p, config)))(params)
    leaves, treedef = jax.tree.flatten(params)
    direction = jax.tree.unflatten(treedef, [jax.random.normal(jax.random.fold_in(key(13), i), jnp.shape(x))
                                             for i, x in enumerate(leaves)])  # fmt: skip

    @jax.jit
    def along(h):
        moved = jax.tree.map(lambda p, v: p + h * v, params, direction)
        return niw.episode_objective(draw_key, moved, fit, episode, config)

    h = 1e-5
    numeric = (along(h) - along(-h)) / (2 * h)
    analytic = sum(
        jnp.sum(g * v) for g, v in zip(jax.tree.leaves(grad), jax.tree.leaves(direction), strict=True)
    )
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)

    # Broken: treating the local posterior as a constant drops the adaptation's gradient.
    mean, precision = niw.local_posterior(fit, params)

    def constant_posterior(p):
        kl = niw.expected_kl(mean, precision, p)
        return kl + niw.hyperprior_kl(p, config.hyperprior) / config.settings.num_total

    broken = jax.grad(constant_posterior)(params)
    broken_directional = sum(
        jnp.sum(g * v) for g, v in zip(jax.tree.leaves(broken), jax.tree.leaves(direction), strict=True)
    )
    assert abs(broken_directional - numeric) > 1e-3 * abs(numeric)


def linear_network(dim):
    return Network(
        init=lambda rng: {"w": jnp.zeros(dim)}, apply=lambda params, x: jnp.reshape(x @ params["w"], (1,))
    )


@pytest.mark.parametrize("inner_steps", [1, 3])
def test_linear_gaussian_head_gives_the_exact_conjugate_posterior(inner_steps):
    # An orthogonal design (X^T X diagonal): the exact posterior is diagonal too.
    x = jnp.array([[2.0, 0, 0], [0, 1, 0], [0, 0, 3], [1, 0, 0], [0, 2, 0], [0, 0, 1]])
    y = (x @ jnp.array([1.0, -2.0, 0.5]) + jax.random.normal(key(20), (6,)) * 0.3)[:, None]
    learner = niw.learner(linear_network(3), optimizer=optax.adam(1e-3), inner_steps=inner_steps)
    config = learner.config
    params = global_params(3, 21)
    fit = local_fit(
        key(22), params, x, y, network=config.network, unravel=config.unravel,
        likelihood=config.likelihood, settings=config.settings,
    )  # fmt: skip
    mean, precision = niw.local_posterior(fit, params)

    noise_precision = jnp.exp(-2 * params.log_noise)
    prior_precision = jnp.diag(params.prior_precision)
    exact_precision = noise_precision * x.T @ x + prior_precision
    exact_mean = jnp.linalg.solve(
        exact_precision, noise_precision * x.T @ y[:, 0] + prior_precision @ params.m0
    )
    np.testing.assert_allclose(precision, jnp.diag(exact_precision), rtol=1e-10)
    np.testing.assert_allclose(mean, exact_mean, rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def trained():
    source = meta.episodes.sinusoid(shots=5, queries=5)
    learner = niw.learner(meta.networks.mlp([1, 8, 1]), optimizer=optax.adam(1e-2))
    return source, meta.train(learner, source, steps=30, num_episodes=4, key=key(30), progress_bar=False)


def test_training_and_prediction_are_reproducible_and_export_to_arviz(trained, tmp_path):
    source, result = trained
    assert result.losses.shape == (30,) and np.all(np.isfinite(result.losses))
    again = meta.train(result.learner, source, steps=30, num_episodes=4, key=key(30), progress_bar=False)
    np.testing.assert_array_equal(again.params.m0, result.params.m0)

    episodes = meta.episodes.sample_episodes(source, key(31), 3)
    prediction = result.predict(key(32), episodes)
    assert prediction.means.shape == (3, 100, 5)
    metrics = prediction.metrics(episodes.query_y)
    assert all(np.all(np.isfinite(value)) for value in metrics.values())

    episode = jax.tree.map(lambda a: a[0], episodes)
    data = niw.episode_posterior(result, key(33), episode, num_samples=50).to_arviz()
    assert data.posterior["weights"].shape == (1, 50, 8 * 1 + 8 + 8 + 1)
    assert data.log_likelihood["y"].shape == (1, 50, 5)
    path = str(tmp_path / "episode.nc")
    ppl.save(data, path)
    np.testing.assert_allclose(ppl.load(path).posterior["weights"].values, data.posterior["weights"].values)


def test_training_stops_on_a_non_finite_loss_naming_the_step(trained):
    source, result = trained
    batches = [meta.episodes.sample_episodes(source, jax.random.fold_in(key(34), t), 4) for t in range(5)]
    batches[3] = batches[3]._replace(query_y=batches[3].query_y.at[0, 0, 0].set(1e300))  # finite, overflows
    with pytest.raises(FloatingPointError, match="meta-step 3"):
        meta.train(result.learner, iter(batches), steps=5, key=key(35), progress_bar=False)


def test_bad_input_gets_clear_errors(trained):
    source, result = trained
    net = meta.networks.mlp([1, 4, 1])
    with pytest.raises(ValueError, match="fit must be one of"):
        niw.learner(net, optimizer=optax.adam(1e-3), fit="laplace")
    with pytest.raises(ValueError, match="inner_steps"):
        niw.learner(net, optimizer=optax.adam(1e-3), inner_steps=0)
    with pytest.raises(ValueError, match="burnin"):
        niw.learner(net, optimizer=optax.adam(1e-3), fit="sgld", inner_steps=3, burnin=3)
    with pytest.raises(ValueError, match="num_classes"):
        niw.learner(net, "categorical", optimizer=optax.adam(1e-3))
    with pytest.raises(ValueError, match="num_episodes"):
        meta.train(result.learner, source, steps=3, key=key(36))
    with pytest.raises(ValueError, match="empty"):
        meta.train(result.learner, iter([]), steps=3, key=key(36))
    episodes = meta.episodes.sample_episodes(source, key(37), 2)
    with pytest.raises(ValueError, match="support"):
        result.predict(
            key(38),
            episodes._replace(support_x=episodes.support_x[:, :0], support_y=episodes.support_y[:, :0]),
        )


def test_sgld_fit_reads_mean_and_precision_off_the_iterates():
    params = global_params(2, 40)
    net = linear_network(2)
    learner = niw.learner(
        net, optimizer=optax.adam(1e-3), fit="sgld", inner_steps=20000, burnin=2000, step_size=1e-2
    )
    config = learner.config
    x = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    y = jnp.array([[0.5], [1.0]])
    fit = local_fit(key(41), params, x, y, network=net, unravel=config.unravel,
                    likelihood=config.likelihood, settings=config.settings)  # fmt: skip
    # SGLD's stationary law is exp(-loss): N(least squares, (X^T X / noise^2)^-1) per coordinate,
    # up to a discretisation bias of about step * curvature / 4 (4% here). The iterates'
    # autocorrelation time is about 2 / (step * curvature) <= 50 steps, so at least 360
    # effective draws: 5 standard errors of the variance are 5 sqrt(2 / 360) = 0.37.
    curvature = jnp.diag(x.T @ x) * jnp.exp(-2 * params.log_noise)
    np.testing.assert_allclose(fit.precision, curvature, rtol=0.45)
    error = np.abs(np.asarray(fit.shift / fit.precision) - 0.5)
    assert np.all(error < 5 / np.sqrt(np.asarray(curvature) * 360)), error


def test_meta_gradient_is_the_same_on_one_and_four_devices():
    script = """
import jax, jax.numpy as jnp, numpy as np, optax
from ppl import meta
from ppl.meta import niw
from ppl.meta.training import episode_mean
from ppl.runtime.devices import plan_devices
from tests.seeds import key
assert jax.device_count() == 4
learner = niw.learner(meta.networks.mlp([1, 8, 1]), optimizer=optax.adam(1e-2))
source = meta.episodes.sinusoid(shots=5, queries=5)
episodes = meta.episodes.sample_episodes(source, key(50), 6)
params = learner.init(key(51)).params
grad = jax.value_and_grad(niw.episode_loss, argnums=2)
def mean(plan):
    fn = lambda k, e, p: grad(k, e, p, learner.config)
    return jax.jit(lambda: episode_mean(fn, key(52), episodes, params, plan))()
one, four = mean(None), mean(plan_devices(6, 4))
diff = max(float(jnp.max(jnp.abs(a - b)) / (1e-6 + float(jnp.max(jnp.abs(a)))))
           for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(four)))
r1 = meta.train(learner, source, steps=20, num_episodes=6, key=key(53), devices=1)
r4 = meta.train(learner, source, steps=20, num_episodes=6, key=key(53), devices=4)
print(diff, r4.num_devices, float(np.max(np.abs(r1.params.m0 - r4.params.m0))))
"""
    diff, devices, params_diff = run_on_four_devices(script).split()
    assert float(diff) < 1e-5 and int(devices) == 4 and float(params_diff) < 1e-4


def full_objective(m, precision, curvature, mbar, params):
    """Quadratic + expected KL for a dense local precision (written out with jnp.linalg)."""
    covariance = jnp.linalg.inv(precision)
    quadratic = 0.5 * (jnp.trace(curvature @ covariance) + (m - mbar) @ curvature @ (m - mbar))
    gam0, n0, l0 = jnp.exp(params.log_gam0), jnp.exp(params.log_n0), jnp.exp(params.log_l0)
    kl = 0.5 * (
        jnp.sum(
            -jax.scipy.special.digamma(0.5 * n0) - jnp.log(2.0) - jnp.log(gam0)
            + n0 * gam0 * jnp.square(m - params.m0) + 1.0 / l0 - 1.0 + n0 * gam0 * jnp.diag(covariance)
        )
        + jnp.linalg.slogdet(precision)[1]
    )  # fmt: skip
    return quadratic + kl


def test_full_covariance_closed_form_is_stationary_and_its_kl_matches_monte_carlo():
    d = 4
    params = global_params(d, 60)
    factor = jax.random.normal(key(61), (d, 3))  # rank 3: one direction without data
    curvature = factor @ factor.T
    mbar = jax.random.normal(key(62), (d,))
    fit = niw.LocalFit(None, curvature @ mbar, factor)
    m_star, gam_star = niw.local_posterior(fit, params)
    dense = gam_star.dense()
    np.testing.assert_allclose(dense, curvature + jnp.diag(params.prior_precision), rtol=1e-12)
    np.testing.assert_allclose(
        m_star, jnp.linalg.solve(dense, curvature @ mbar + params.prior_precision * params.m0)
    )
    np.testing.assert_allclose(gam_star.log_det(), jnp.linalg.slogdet(dense)[1], rtol=1e-12)
    np.testing.assert_allclose(gam_star.inverse_diagonal(), jnp.diag(jnp.linalg.inv(dense)), rtol=1e-10)
    dense_kl = full_objective(m_star, dense, jnp.zeros((d, d)), mbar, params)
    np.testing.assert_allclose(niw.expected_kl(m_star, gam_star, params), dense_kl, rtol=1e-12)
    grad_m, grad_gam = jax.grad(full_objective, argnums=(0, 1))(m_star, dense, curvature, mbar, params)
    assert np.max(np.abs(grad_m)) < 1e-9 and np.max(np.abs(grad_gam + grad_gam.T)) < 1e-9
    # Broken: the diagonal of the same precision is not stationary in the full objective.
    diagonal = jnp.diag(jnp.diag(dense))
    assert (
        np.max(np.abs(jax.grad(full_objective, argnums=1)(m_star, diagonal, curvature, mbar, params))) > 1e-3
    )

    # The expected KL with a full precision, against Monte Carlo over (mu, Sigma).
    mu, tau = draw_phi(key(63), params, 400_000)
    covariance = jnp.linalg.inv(dense)
    samples = 0.5 * (
        -jnp.sum(jnp.log(tau), axis=1)
        - jnp.linalg.slogdet(covariance)[1]
        + tau @ jnp.diag(covariance)
        + jnp.sum(tau * jnp.square(m_star - mu), axis=1)
        - d
    )
    ok, info = within_five_standard_errors(
        np.asarray(samples), float(niw.expected_kl(m_star, gam_star, params))
    )
    assert ok, info


def test_full_covariance_linear_gaussian_head_is_the_exact_conjugate_posterior():
    x = jax.random.normal(key(64), (5, 3))  # correlated design: the diagonal form is not exact
    y = (x @ jnp.array([1.0, -2.0, 0.5]) + jax.random.normal(key(65), (5,)) * 0.3)[:, None]
    params = global_params(3, 66)
    learner = niw.learner(linear_network(3), optimizer=optax.adam(1e-3), covariance="full")
    config = learner.config
    fit = local_fit(
        key(67), params, x, y, network=config.network, unravel=config.unravel,
        likelihood=config.likelihood, settings=config.settings,
    )  # fmt: skip
    mean, precision = niw.local_posterior(fit, params)
    noise_precision = jnp.exp(-2 * params.log_noise)
    exact_precision = noise_precision * x.T @ x + jnp.diag(params.prior_precision)
    exact_mean = jnp.linalg.solve(
        exact_precision, noise_precision * x.T @ y[:, 0] + params.prior_precision * params.m0
    )
    np.testing.assert_allclose(precision.dense(), exact_precision, rtol=1e-10)
    np.testing.assert_allclose(mean, exact_mean, rtol=1e-9)
    # Perturb-and-solve draws: covariance within 5 standard errors (relative sd of a sample
    # variance from n draws is sqrt(2 / n) = 0.003 here).
    draws = niw._draws(key(68), mean, precision, 200_000)
    np.testing.assert_allclose(jnp.cov(draws.T), jnp.linalg.inv(exact_precision), rtol=0.02, atol=2e-4)


def test_differentiable_fit_gradient_matches_finite_differences():
    # A last-layer head on shared features: the fit is differentiated in the shared weights
    # and the noise (the head's expansion point is held), so moving everything but the
    # head's m0 is an exact finite-difference check of the whole meta-gradient.
    learner = niw.learner(
        meta.networks.mlp([1, 3, 1]), optimizer=optax.adam(1e-3), local=niw.last_layer,
        covariance="full", differentiable_fit=True, num_samples=2, init_precision=1.0,
    )  # fmt: skip
    config = learner.config
    source = meta.episodes.sinusoid(shots=4, queries=5)
    episode = jax.tree.map(lambda a: a.astype(jnp.float64), source.sample(key(70)))
    params = learner.init(key(71)).params
    head = jnp.asarray(config.local)
    leaves, treedef = jax.tree.flatten(params)
    direction = jax.tree.unflatten(treedef, [jax.random.normal(jax.random.fold_in(key(72), i), jnp.shape(x))
                                             for i, x in enumerate(leaves)])  # fmt: skip
    direction = direction._replace(m0=jnp.where(head, 0.0, direction.m0))
    body_only = jax.tree.map(jnp.zeros_like, direction)._replace(m0=direction.m0)

    @jax.jit
    def along(h):
        return niw.episode_loss(
            key(73), episode, jax.tree.map(lambda p, v: p + h * v, params, direction), config
        )

    grad = jax.jit(jax.grad(lambda p: niw.episode_loss(key(73), episode, p, config)))(params)
    analytic = sum(
        jnp.sum(g * v) for g, v in zip(jax.tree.leaves(grad), jax.tree.leaves(direction), strict=True)
    )
    numeric = (along(1e-5) - along(-1e-5)) / 2e-5
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)
    # Broken: the stop-gradient fit misses the features' effect on the head's posterior.
    stopped = learner.config._replace(settings=config.settings._replace(differentiable_fit=False))
    grad_stopped = jax.jit(jax.grad(lambda p: niw.episode_loss(key(73), episode, p, stopped)))(params)

    @jax.jit
    def along_body(h):
        moved = jax.tree.map(lambda p, v: p + h * v, params, body_only)
        return niw.episode_loss(key(73), episode, moved, config)

    numeric_body = (along_body(1e-5) - along_body(-1e-5)) / 2e-5
    broken_body = jnp.sum(grad_stopped.m0 * body_only.m0)
    np.testing.assert_allclose(jnp.sum(grad.m0 * body_only.m0), numeric_body, rtol=1e-6)
    assert abs(broken_body - numeric_body) > 1e-2 * abs(numeric_body), (broken_body, numeric_body)
