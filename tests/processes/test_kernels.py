"""NNGP / NTK kernels against exact references.

* Closed forms (ReLU, Erf) against adaptive 2-D quadrature (scipy) to 1e-8, and the
  library's Gauss-Hermite path against the closed forms.
* Kernels of Dense and Conv stacks against Monte-Carlo Gram matrices of finite random
  networks (width 1024 for every layer that feeds a nonlinearity; narrower layers enter
  the output kernel linearly, so their width changes only the variance, not the mean).
  Tolerance: 5 Monte-Carlo standard errors (estimated from the networks) plus 0.003 for
  the O(1/width) finite-width bias; a kernel with one ``W_std`` 15 % off must fail it.
* NTK against the mean empirical NTK (Jacobian products) of wide finite networks.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from ppl.processes import activations, nngp
from tests.four_devices import run_on_four_devices
from tests.seeds import key

COVARIANCES = [(1.3, 0.7, 0.5), (2.0, 0.5, -0.9), (0.4, 0.4, 0.399), (1.0, 3.0, 0.0)]


def _reference(f, g, a, b, c):
    """``E[f(u) g(v)]`` by adaptive quadrature over ``z1, z2`` standard normal."""
    along = c / np.sqrt(a)
    across = np.sqrt(max(b - along**2, 0.0))

    def integrand(z2, z1):
        u, v = np.sqrt(a) * z1, along * z1 + across * z2
        return f(u) * g(v) * np.exp(-0.5 * (z1 * z1 + z2 * z2)) / (2 * np.pi)

    value, error = integrate.dblquad(integrand, -12, 12, -12, 12, epsabs=1e-13, epsrel=1e-12)
    return value


def _reference_relu(a, b, c):
    """ReLU: integrate only where both are positive (the integrand is smooth there)."""
    along = c / np.sqrt(a)
    across = np.sqrt(max(b - along**2, 1e-300))

    def integrand(z2, z1):
        u, v = np.sqrt(a) * z1, along * z1 + across * z2
        return u * v * np.exp(-0.5 * (z1 * z1 + z2 * z2)) / (2 * np.pi)

    value, _ = integrate.dblquad(
        integrand, 0, 12, lambda z1: -along * z1 / across, 12, epsabs=1e-13, epsrel=1e-12
    )
    return value


@pytest.mark.parametrize("a, b, c", COVARIANCES)
def test_closed_forms_equal_adaptive_quadrature(a, b, c):
    relu_t, relu_dot = activations.relu_expectations(jnp.array(a), jnp.array(b), jnp.array(c))
    assert abs(float(relu_t) - _reference_relu(a, b, c)) < 1e-8
    # E[1(u>0) 1(v>0)]: the orthant probability 1/4 + arcsin(rho) / 2 pi.
    assert abs(float(relu_dot) - (0.25 + np.arcsin(c / np.sqrt(a * b)) / (2 * np.pi))) < 1e-12
    erf_t, erf_dot = activations.erf_expectations(jnp.array(a), jnp.array(b), jnp.array(c))
    from scipy.special import erf

    def derf(x):
        return 2 / np.sqrt(np.pi) * np.exp(-x * x)

    assert abs(float(erf_t) - _reference(erf, erf, a, b, c)) < 1e-8
    assert abs(float(erf_dot) - _reference(derf, derf, a, b, c)) < 1e-8


def test_gauss_hermite_path_against_closed_forms():
    a, b, c = (jnp.array([t[i] for t in COVARIANCES]) for i in range(3))
    erf_closed = activations.erf_expectations(a, b, c)
    erf_quad = activations.gauss_hermite_expectations(jax.scipy.special.erf, a, b, c)
    np.testing.assert_allclose(erf_quad[0], erf_closed[0], atol=1e-10)
    # erf' is a Gaussian bump: at variance 3 its quadrature error is ~5e-7.
    np.testing.assert_allclose(erf_quad[1], erf_closed[1], atol=1e-6)
    identity = activations.gauss_hermite_expectations(lambda x: x, a, b, c, degree=4)
    np.testing.assert_allclose(identity[0], c, atol=1e-13)
    # ReLU is not smooth: the quadrature converges slowly (documented), but converges.
    relu_quad = activations.gauss_hermite_expectations(jax.nn.relu, a, b, c)
    np.testing.assert_allclose(relu_quad[0], activations.relu_expectations(a, b, c)[0], atol=5e-3)


def _central_difference(f, args, i, eps=1e-6):
    up, down = list(args), list(args)
    up[i], down[i] = up[i] + eps, down[i] - eps
    return (f(*up) - f(*down)) / (2 * eps)


@pytest.mark.parametrize("name", ["relu", "erf", "tanh"])
def test_kernel_gradients_are_exact_and_finite_on_the_diagonal(name):
    if name == "relu":
        fn = lambda a, b, c: activations.relu_expectations(a, b, c)[0]  # noqa: E731
    elif name == "erf":
        fn = lambda a, b, c: activations.erf_expectations(a, b, c)[0]  # noqa: E731
    else:
        fn = lambda a, b, c: activations.gauss_hermite_expectations(jnp.tanh, a, b, c, 64)[0]  # noqa: E731
    args = (jnp.array(1.3), jnp.array(0.7), jnp.array(0.5))
    grads = jax.grad(fn, (0, 1, 2))(*args)
    for i in range(3):
        assert abs(float(grads[i]) - float(_central_difference(fn, args, i))) < 1e-6
    diagonal = jax.grad(fn, (0, 1, 2))(jnp.array(0.8), jnp.array(0.8), jnp.array(0.8))
    assert all(np.isfinite(float(g)) for g in diagonal)
    # Along the diagonal T(a, a, a) is the variance map: its total derivative.
    total = sum(float(g) for g in diagonal)
    along = _central_difference(lambda s: fn(s, s, s), [jnp.array(0.8)], 0)
    assert abs(total - float(along)) < 1e-6


def test_relu_layer_diagonal_is_half_the_variance():
    x = jax.random.normal(key(0), (5, 3))
    net = nngp.serial(nngp.Dense(8, W_std=1.7, b_std=0.4), nngp.Relu(), nngp.Dense(1, W_std=1.0))
    expected = 0.5 * (1.7**2 * jnp.sum(x * x, axis=1) / 3 + 0.4**2)
    np.testing.assert_allclose(net.kernel(x, diagonal=True), expected, rtol=1e-13)


def _stacks():
    dense = nngp.serial(
        nngp.Dense(1024, W_std=1.5, b_std=0.3),
        nngp.Relu(),
        nngp.Dense(1024, W_std=1.2, b_std=0.2),
        nngp.Erf(),
        nngp.Dense(256, W_std=1.1, b_std=0.1),
    )
    conv2d = nngp.serial(
        nngp.Conv(1024, (3, 3), "SAME", W_std=1.4, b_std=0.2),
        nngp.Relu(),
        nngp.Conv(16, (3, 3), "VALID", W_std=1.3, b_std=0.1),
        nngp.Erf(),
        nngp.Flatten(),
        nngp.Dense(256, W_std=1.2),
    )
    conv1d_pool = nngp.serial(
        nngp.Conv(1024, (3,), "SAME", W_std=1.4, b_std=0.2),
        nngp.Relu(),
        nngp.Conv(16, (2,), "VALID", W_std=1.3, b_std=0.1),
        nngp.Gelu(),
        nngp.GlobalAvgPool(),
        nngp.Dense(256, W_std=1.2),
    )
    return {
        "dense": (dense, (4, 3)),
        "conv2d_flatten": (conv2d, (3, 4, 4, 2)),
        "conv1d_pool": (conv1d_pool, (3, 6, 2)),
    }


def _perturbed(net):
    """The same stack with its first W_std 15 % too large (a deliberately wrong kernel)."""
    first = net.layers[0]
    import dataclasses

    return nngp.serial(dataclasses.replace(first, W_std=first.W_std * 1.15), *net.layers[1:])


def _monte_carlo_gram(net, x, num_networks, k):
    def one(network_key):
        params = net.init(network_key, x.shape[1:])
        f = net.apply(params, x)  # (n, outputs): independent readouts of one network
        return f @ f.T / f.shape[-1]

    grams = jax.lax.map(one, jax.random.split(k, num_networks))
    return np.asarray(grams.mean(0)), np.asarray(grams.std(0) / np.sqrt(num_networks))


@pytest.mark.parametrize("name", ["dense", "conv2d_flatten", "conv1d_pool"])
def test_nngp_equals_finite_network_gram(name):
    net, shape = _stacks()[name]
    x = jax.random.normal(key(1), shape)
    mean, se = _monte_carlo_gram(net, x, 150, key(2))
    tolerance = 5 * se + 3e-3
    assert np.all(np.abs(mean - np.asarray(net.kernel(x))) < tolerance)
    assert not np.all(np.abs(mean - np.asarray(_perturbed(net).kernel(x))) < tolerance)


def _empirical_ntk(net, x, num_networks, k):
    def one(network_key):
        params = net.init(network_key, x.shape[1:])
        jac = jax.jacrev(lambda p: net.apply(p, x)[:, 0])(params)
        flat = jnp.concatenate([leaf.reshape(x.shape[0], -1) for leaf in jax.tree.leaves(jac)], axis=1)
        return flat @ flat.T

    grams = jax.lax.map(one, jax.random.split(k, num_networks))
    return np.asarray(grams.mean(0)), np.asarray(grams.std(0) / np.sqrt(num_networks))


@pytest.mark.parametrize("name", ["dense", "conv1d_pool"])
def test_ntk_equals_mean_empirical_ntk(name):
    net, shape = _stacks()[name]
    net = nngp.serial(*net.layers[:-1], nngp.Dense(1, W_std=1.1, b_std=0.1))
    x = jax.random.normal(key(3), shape)
    mean, se = _empirical_ntk(net, x, 30, key(4))
    theta = np.asarray(net.kernel(x, get="ntk"))
    tolerance = 5 * se + 3e-3 * np.abs(theta).max()
    assert np.all(np.abs(mean - theta) < tolerance)
    # The NNGP is not the NTK: the same check fails against it.
    assert not np.all(np.abs(mean - np.asarray(net.kernel(x))) < tolerance)


def test_tiles_diagonal_and_cross_kernels_agree():
    net = nngp.mlp(3, "erf", W_std=1.3, b_std=0.2)
    x1 = jax.random.normal(key(5), (11, 4))
    x2 = jax.random.normal(key(6), (7, 4))
    whole = net.kernel(x1, x2, get=("nngp", "ntk"))
    tiled = net.kernel(x1, x2, get=("nngp", "ntk"), block_size=3)
    for a, b in zip(whole, tiled, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=0)
    gram = net.kernel(x1)
    np.testing.assert_allclose(gram, gram.T, rtol=1e-14)
    np.testing.assert_allclose(net.kernel(x1, diagonal=True, block_size=4), jnp.diagonal(gram), rtol=1e-13)
    assert np.linalg.eigvalsh(np.asarray(gram)).min() > 0


def test_same_kernel_on_one_and_four_devices():
    script = """
import jax, numpy as np
jax.config.update("jax_enable_x64", True)
from ppl.processes import nngp
net = nngp.serial(nngp.Conv(4, (3, 3), W_std=1.2, b_std=0.1), nngp.Relu(), nngp.Flatten(), nngp.Dense(1))
x = jax.random.normal(jax.random.key(0), (10, 5, 5, 2))
one = np.asarray(net.kernel(x, block_size=3, devices=1))
four = np.asarray(net.kernel(x, block_size=3, devices=4))
print(jax.device_count(), np.array_equal(one, four), np.abs(one - four).max())
"""
    devices, identical, _ = run_on_four_devices(script).split()
    assert devices == "4" and identical == "True"


def test_kernels_are_differentiable_in_the_variances():
    x = jax.random.normal(key(7), (5, 2))

    def total(w_std):
        return jnp.sum(nngp.mlp(2, "relu", W_std=w_std, b_std=0.1).kernel(x))

    grad = jax.grad(total)(1.3)
    assert abs(float(grad) - float(_central_difference(total, [1.3], 0))) < 1e-6


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: nngp.mlp(0), "depth must be an integer >= 1"),
        (lambda: nngp.mlp(2, "softsign"), "activation must be one of"),
        (lambda: nngp.Dense(4, W_std=-1.0), "W_std must be a finite scalar >= 0"),
        (lambda: nngp.Dense(4, b_std=float("nan")), "b_std must be a finite scalar >= 0"),
        (lambda: nngp.serial(), "at least one layer"),
        (lambda: nngp.Conv(4, (3, 3), padding="FULL"), "padding must be 'SAME' or 'VALID'"),
    ],
)
def test_bad_architectures_are_named(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()


def test_bad_inputs_are_named():
    net = nngp.mlp(1)
    with pytest.raises(
        ValueError, match=r"x1 and x2 must have the same feature shape: x1 \(3, 2\), x2 \(4, 5\)"
    ):
        net.kernel(jnp.ones((3, 2)), jnp.ones((4, 5)))
    with pytest.raises(ValueError, match=r"x2 has 1 non-finite entries \(first at index \(1, 0\)\)"):
        net.kernel(jnp.ones((3, 2)), jnp.ones((2, 2)).at[1, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="leading batch axis"):
        net.kernel(jnp.ones(3))
    conv = nngp.serial(nngp.Conv(4, (3, 3)), nngp.Relu(), nngp.Flatten(), nngp.Dense(1))
    with pytest.raises(
        ValueError, match=r"x1 has shape \(3, 2\): Conv with filter_shape \(3, 3\) needs 2 spatial"
    ):
        conv.kernel(jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="no Flatten"):
        nngp.serial(nngp.Conv(4, (3,)), nngp.Relu(), nngp.Dense(1)).kernel(jnp.ones((2, 5, 1)))
    with pytest.raises(ValueError, match="get must be"):
        net.kernel(jnp.ones((3, 2)), get="nnpg")


def test_finite_network_output_law_matches_the_kernel_in_distribution():
    """A KS test that f(x0) of random finite networks is N(0, K(x0, x0))."""
    net = nngp.serial(nngp.Dense(1024, W_std=1.5, b_std=0.2), nngp.Erf(), nngp.Dense(1, W_std=1.3))
    x0 = jax.random.normal(key(8), (1, 3))
    outputs = jax.vmap(lambda k: net.apply(net.init(k, (3,)), x0)[0, 0])(jax.random.split(key(9), 1000))
    scale = float(jnp.sqrt(net.kernel(x0)[0, 0]))
    assert stats.kstest(np.asarray(outputs), stats.norm(0, scale).cdf).pvalue > 1e-3


def test_relu_gram_under_jit_equals_eager():
    """Under jit XLA may round ``ab - c^2`` differently in two places; the diagonal must not
    pick up ``sqrt(fallback)`` (it once gained 1 / 2 pi here, inside empirical Bayes)."""
    x = jnp.asarray(np.sort(np.random.default_rng(0).uniform(-3, 3, 30))[:, None])

    def gram(raw):
        std = {name: jax.nn.softplus(value) for name, value in raw.items()}
        k = nngp.mlp(3, "relu", W_std=std["W_std"], b_std=std["b_std"]).kernel(x)
        return jnp.linalg.cholesky(k + 0.01 * jnp.eye(30)), k

    raw = {name: np.log(np.expm1(value)) for name, value in {"W_std": 1.5, "b_std": 1.0}.items()}
    lower, jitted = jax.jit(gram)(raw)
    np.testing.assert_allclose(jitted, gram(raw)[1], rtol=1e-6, atol=0)
    np.testing.assert_allclose(lower @ lower.T, jitted + 0.01 * jnp.eye(30), rtol=1e-6, atol=0)
