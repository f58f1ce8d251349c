"""Scale mixtures of NNGPs: a prior on the last-layer variance.

Model (Lee, Yun, Yang & Lee, ICLR 2022; the authors' conjugate form)::

    s2 ~ scale_prior                      # any positive NumPyro distribution
    y | s2 ~ N(0, s2 (K + noise_variance I))   # K: the kernel with last-layer variance 1

The data enter only through ``n C`` (points times outputs) and ``q = tr(y^T K_e^{-1} y)``,
with ``K_e = K + noise_variance I`` factorised once. Posterior over the scale, by method:

* ``"closed_form"`` (inverse-gamma prior): ``s2 | y ~ IG(alpha + nC/2, beta + q/2)``; the
  marginal is a Student-t process and a new point is ``t_{2 alpha + nC}(mu, ((2 beta + q)
  / (2 alpha + nC)) s^2)``.
* ``"quadrature"`` (the reference for any prior): trapezoid rule over ``log s2`` on the
  region where the log posterior is within 60 nats of its maximum (found on a coarse
  grid of 4001 points spanning ``log(q / nC) +- 40``), 2049 nodes: the error is far below
  1e-8 for smooth priors.
* ``"importance"`` (the paper's method): self-normalised importance sampling with the
  prior as proposal; its effective sample size is reported, with a warning below 10 % of
  the draws (it collapses as ``n`` grows).
* ``"nuts"``: NUTS on ``log s2`` through :func:`ppl.nuts` (MCMC; ``ppl`` models can put the
  same prior anywhere).

Predictions average ``N(mu, s2 s^2)`` over the scale posterior, for the latent ``f(x*)``
(``s^2 = k** - k*^T K_e^{-1} k*``) and for a new observation (``s^2 + noise_variance``).

Example:
    >>> import jax.numpy as jnp
    >>> from ppl import dist
    >>> from ppl.processes import nngp, scale_mixture
    >>> x = jnp.linspace(-1, 1, 8)[:, None]; y = jnp.sin(3 * x[:, 0])
    >>> post = scale_mixture.regression(nngp.mlp(2, "relu"), x, y, scale_prior=dist.InverseGamma(2.0, 2.0),
    ...                                 noise_variance=0.01)
    >>> post.posterior.method
    'closed_form'
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, logsumexp
from numpyro import distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.util import promote_shapes

from ppl.errors import warn
from ppl.model.dsl import factor, sample
from ppl.processes import gp
from ppl.runtime.keys import validate_key
from ppl.runtime.results import Draws

__all__ = [
    "METHODS",
    "BurrXII",
    "ScaleMixturePrediction",
    "ScaleMixtureRegression",
    "ScalePosterior",
    "log_marginal_likelihood",
    "regression",
    "scale_posterior",
    "student_t_process",
]

METHODS = ("closed_form", "quadrature", "importance", "nuts")
COARSE_NODES, FINE_NODES, COARSE_HALF_WIDTH, DROP = 4001, 2049, 40.0, 60.0


class BurrXII(dist.Distribution):
    """Burr type XII on ``(0, inf)``: density ``c d x^(c-1) (1 + x^c)^(-d-1)`` (scipy's
    ``burr12(c, d)``), the heavy-tailed scale prior of the paper."""

    arg_constraints = {"c": constraints.positive, "d": constraints.positive}
    support = constraints.positive
    reparametrized_params = ["c", "d"]

    def __init__(self, c, d, *, validate_args=None):
        self.c, self.d = promote_shapes(c, d)
        super().__init__(jnp.broadcast_shapes(jnp.shape(c), jnp.shape(d)), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        u = jax.random.uniform(key, sample_shape + self.batch_shape)
        return jnp.expm1(-jnp.log1p(-u) / self.d) ** (1 / self.c)

    def log_prob(self, value):
        log_x = jnp.log(value)
        return (
            jnp.log(self.c)
            + jnp.log(self.d)
            + (self.c - 1) * log_x
            - (self.d + 1) * jnp.logaddexp(0.0, self.c * log_x)
        )

    def tree_flatten(self):
        return (self.c, self.d), None

    @classmethod
    def tree_unflatten(cls, aux_data, params):
        return cls(*params)


class ScalePosterior(NamedTuple):
    """The posterior over the last-layer variance ``s2``.

    Attributes:
        method: one of :data:`METHODS`.
        variances: atoms ``(J,)``: quadrature nodes, importance draws or NUTS draws
            (closed form: empty).
        log_weights: normalised log weights of the atoms ``(J,)``.
        ess: effective sample size of the atoms (``J`` for NUTS draws, their ESS from
            ArviZ is in ``sample_stats``; ``inf`` for closed form and quadrature).
        concentration, rate: the inverse-gamma posterior (closed form only, else ``nan``).
        log_normalizer: ``log int prior(s2) s2^(-nC/2) exp(-q / 2 s2) ds2`` (estimated by
            importance sampling; ``nan`` for NUTS).
    """

    method: str
    variances: Any
    log_weights: Any
    ess: Any
    concentration: Any = float("nan")
    rate: Any = float("nan")
    log_normalizer: Any = float("nan")

    def mean(self):
        """``E[s2 | y]``."""
        if self.method == "closed_form":
            return self.rate / (self.concentration - 1)
        return jnp.sum(jnp.exp(self.log_weights) * self.variances)

    def sample(self, key, num_samples: int):
        """``(num_samples,)`` draws of ``s2``."""
        if self.method == "closed_form":
            return dist.InverseGamma(self.concentration, self.rate).sample(key, (num_samples,))
        index = jax.random.categorical(key, self.log_weights, shape=(num_samples,))
        return self.variances[index]


def _check_prior(prior) -> None:
    if not isinstance(prior, dist.Distribution):
        raise TypeError(
            f"scale_prior must be a NumPyro distribution over the variance, got {type(prior).__name__}"
        )
    if prior.batch_shape != () or prior.event_shape != ():
        raise ValueError(
            f"scale_prior must be a scalar distribution, got batch shape {prior.batch_shape}, "
            f"event shape {prior.event_shape}"
        )
    with jax.ensure_compile_time_eval():  # the support is a constant, also inside jit
        positive = bool(prior.support(jnp.asarray(1.0))) and not bool(prior.support(jnp.asarray(-1.0)))
    if not positive:
        raise ValueError(
            f"scale_prior must have support on the positive reals (a variance), got support {prior.support}"
        )


def _log_target(prior, log_variance, quadratic, count):
    """``log [prior(s2) s2^(-count/2) exp(-q / 2 s2) s2]`` at ``s2 = exp(log_variance)``."""
    return (
        prior.log_prob(jnp.exp(log_variance))
        + log_variance * (1 - 0.5 * count)
        - 0.5 * quadratic * jnp.exp(-log_variance)
    )


@jax.jit
def _quadrature(prior, quadratic, count):
    dtype = jnp.result_type(quadratic, float)
    centre = jnp.log(jnp.maximum(quadratic, jnp.finfo(dtype).tiny) / count)
    coarse = centre + jnp.linspace(-COARSE_HALF_WIDTH, COARSE_HALF_WIDTH, COARSE_NODES, dtype=dtype)
    values = _log_target(prior, coarse, quadratic, count)
    values = jnp.where(jnp.isnan(values), -jnp.inf, values)
    inside = values > jnp.max(values) - DROP
    first = jnp.maximum(jnp.argmax(inside) - 1, 0)
    last = jnp.minimum(COARSE_NODES - jnp.argmax(inside[::-1]), COARSE_NODES - 1)
    nodes = jnp.linspace(coarse[first], coarse[last], FINE_NODES, dtype=dtype)
    step = nodes[1] - nodes[0]
    ends = jnp.zeros(FINE_NODES, dtype).at[0].set(jnp.log(0.5)).at[-1].set(jnp.log(0.5))
    log_mass = _log_target(prior, nodes, quadratic, count) + jnp.log(step) + ends
    log_norm = logsumexp(log_mass)
    at_edge = (first == 0) | (last == COARSE_NODES - 1)
    return jnp.exp(nodes), log_mass - log_norm, log_norm, at_edge


@functools.partial(jax.jit, static_argnames="num_samples")
def _importance(prior, quadratic, count, key, num_samples):
    variances = prior.sample(key, (num_samples,))
    log_w = -0.5 * count * jnp.log(variances) - 0.5 * quadratic / variances
    log_total = logsumexp(log_w)
    ess = jnp.exp(2 * log_total - logsumexp(2 * log_w))
    return variances, log_w - log_total, ess, log_total - jnp.log(num_samples)


def _nuts(prior, quadratic, count, key, num_samples, chains):
    from ppl.mcmc import nuts  # a family's public API, used where that is the point

    def scale_model(quadratic, count):
        variance = sample("variance", prior)
        factor("likelihood", -0.5 * count * jnp.log(variance) - 0.5 * quadratic / variance)

    draws = nuts(
        scale_model,
        quadratic,
        count,
        key=key,
        chains=chains,
        warmup=num_samples,
        draws=num_samples,
        progress_bar=False,
    )
    variances = jnp.asarray(draws.samples["variance"]).reshape(-1)
    log_w = jnp.full(variances.shape, -jnp.log(variances.shape[0]))
    return variances, log_w, float(variances.shape[0])


def scale_posterior(
    scale_prior, quadratic, count, *, method: str = "auto", key=None, num_samples: int = 1000, chains: int = 4
) -> ScalePosterior:
    """The posterior over ``s2`` from the sufficient statistics ``q`` and ``count = n C``.

    Args:
        scale_prior: a positive scalar NumPyro distribution (:class:`BurrXII` included).
        method: ``"auto"`` (closed form for ``InverseGamma``, else quadrature) or one of
            :data:`METHODS`.
        key: needed by ``"importance"`` and ``"nuts"``.
        num_samples: importance draws, or NUTS warmup and draws per chain.
    """
    _check_prior(scale_prior)
    if method == "auto":
        method = "closed_form" if isinstance(scale_prior, dist.InverseGamma) else "quadrature"
    if method not in METHODS:
        raise ValueError(f"method must be 'auto' or one of {METHODS}, got {method!r}")
    empty = jnp.zeros((0,))
    if method == "closed_form":
        if not isinstance(scale_prior, dist.InverseGamma):
            raise ValueError(
                f"method='closed_form' needs an InverseGamma scale_prior, got {type(scale_prior).__name__}"
            )
        alpha, beta = scale_prior.concentration, scale_prior.rate
        a, b = alpha + 0.5 * count, beta + 0.5 * quadratic
        log_norm = gammaln(a) - gammaln(alpha) + alpha * jnp.log(beta) - a * jnp.log(b)
        return ScalePosterior(method, empty, empty, jnp.inf, a, b, log_norm)
    if method == "quadrature":
        variances, log_w, log_norm, at_edge = _quadrature(scale_prior, quadratic, count)
        if bool(at_edge):
            warn(
                "scale quadrature: the posterior over log s2 reaches the edge of the search grid "
                f"(log(q / nC) +- {COARSE_HALF_WIDTH:g}); the scale prior may be far from the data's scale"
            )
        return ScalePosterior(method, variances, log_w, jnp.inf, log_normalizer=log_norm)
    key = validate_key(key, "key")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if method == "importance":
        variances, log_w, ess, log_norm = _importance(scale_prior, quadratic, count, key, int(num_samples))
        if float(ess) < 0.1 * num_samples:
            warn(
                f"importance sampling over the scale with the prior as proposal: effective sample size "
                f"{float(ess):.1f} of {num_samples} draws; use method='quadrature' (exact in 1-D)"
            )
        return ScalePosterior(method, variances, log_w, ess, log_normalizer=log_norm)
    variances, log_w, ess = _nuts(scale_prior, quadratic, count, key, int(num_samples), chains)
    return ScalePosterior(method, variances, log_w, ess)


def log_marginal_likelihood(conditioned: gp.Conditioned, posterior: ScalePosterior):
    """``log p(y) = log_normalizer - (nC / 2) log 2 pi - (C / 2) log |K_e|``: the scale
    posterior's normalising constant times the Gaussian factors that do not involve ``s2``."""
    count = conditioned.num_points * conditioned.num_outputs
    return (
        posterior.log_normalizer
        - 0.5 * count * jnp.log(2 * jnp.pi)
        - 0.5 * conditioned.num_outputs * conditioned.log_det
    )


class ScaleMixturePrediction(NamedTuple):
    """Predictive at test inputs, averaged over the scale posterior.

    Attributes:
        mean: ``(m,)`` or ``(m, C)``.
        latent_variance: ``(m,)`` variance of ``f(x*)`` (``E[s2 | y] s^2``).
        observed_variance: ``(m,)`` variance of a new ``y*``.
        unit_latent_variance, unit_observed_variance: ``s^2`` per unit ``s2`` ``(m,)``.
        posterior: the :class:`ScalePosterior`.
    """

    mean: Any
    latent_variance: Any
    observed_variance: Any
    unit_latent_variance: Any
    unit_observed_variance: Any
    posterior: ScalePosterior

    def log_density(self, y, *, observed: bool = True):
        """Pointwise predictive log density of ``y`` ``(m,)`` or ``(m, C)``: Student-t in
        closed form, else the mixture over the scale atoms."""
        unit = self.unit_observed_variance if observed else self.unit_latent_variance
        y = jnp.asarray(y)
        if y.ndim == 2:
            unit = unit[:, None]
        post = self.posterior
        if post.method == "closed_form":
            scale = jnp.sqrt(post.rate / post.concentration * unit)
            return dist.StudentT(2 * post.concentration, self.mean, scale).log_prob(y)
        atoms = post.variances.reshape((-1,) + (1,) * y.ndim)
        weights = post.log_weights.reshape(atoms.shape)
        return logsumexp(weights + dist.Normal(self.mean, jnp.sqrt(atoms * unit)).log_prob(y), axis=0)


class ScaleMixtureRegression(NamedTuple):
    """A scale-mixture process posterior (from :func:`regression`)."""

    kernel: Any
    x_train: Any
    conditioned: gp.Conditioned
    squeeze: bool
    posterior: ScalePosterior

    @property
    def log_marginal_likelihood(self):
        """``log p(y)`` with the scale integrated out (an estimate for ``"importance"``,
        ``nan`` for ``"nuts"``)."""
        return log_marginal_likelihood(self.conditioned, self.posterior)

    def predict(self, x_test) -> ScaleMixturePrediction:
        """Predictive mean, variances and log densities at ``x_test``."""
        k_cross = gp.kernel_matrix(self.kernel, x_test, self.x_train)
        mean, unit = gp.predict(
            self.conditioned, k_cross, gp.kernel_matrix(self.kernel, x_test, diagonal=True)
        )
        unit_observed = unit + self.conditioned.noise_variance
        scale = self.posterior.mean()
        return ScaleMixturePrediction(
            mean[:, 0] if self.squeeze else mean,
            scale * unit,
            scale * unit_observed,
            unit,
            unit_observed,
            self.posterior,
        )

    def sample(self, key, x_test, num_samples: int, *, jitter: float = gp.DEFAULT_JITTER) -> dict:
        """Joint posterior draws at ``x_test``: ``{"variance": (S,), "f": (S, m[, C]),
        "y": (S, m[, C])}`` (``f`` jointly Gaussian given each drawn ``s2``; ``jitter`` is
        added to the test posterior covariance before its Cholesky factor, absolute)."""
        key = validate_key(key, "key")
        k_scale, k_f, k_y = jax.random.split(key, 3)
        k_test = gp.kernel_matrix(self.kernel, x_test)
        k_cross = gp.kernel_matrix(self.kernel, x_test, self.x_train)
        mean, _ = gp.predict(self.conditioned, k_cross, jnp.diagonal(k_test))
        half = jax.scipy.linalg.solve_triangular(self.conditioned.lower, k_cross.T, lower=True)
        covariance = k_test - half.T @ half
        lower = gp.cholesky(covariance, jitter, name="the test posterior covariance")
        variance = self.posterior.sample(k_scale, num_samples)
        shape = (num_samples, *mean.shape)
        f = mean + jnp.sqrt(variance)[:, None, None] * jnp.einsum(
            "ij,sjc->sic", lower, jax.random.normal(k_f, shape)
        )
        noise = jnp.sqrt(variance * self.conditioned.noise_variance)[:, None, None] * jax.random.normal(
            k_y, shape
        )
        if self.squeeze:
            return {"variance": variance, "f": f[..., 0], "y": (f + noise)[..., 0]}
        return {"variance": variance, "f": f, "y": f + noise}

    def to_arviz(self, key, x_test, num_samples: int = 1000, *, jitter: float = gp.DEFAULT_JITTER):
        """ArviZ data: ``posterior`` (``variance``, ``f`` with dim ``test_point``) and
        ``posterior_predictive`` (``y``), one chain of ``num_samples`` draws."""
        draws = jax.tree.map(
            lambda a: np.asarray(a)[None], self.sample(key, x_test, num_samples, jitter=jitter)
        )
        dims = {"f": ("test_point",), "y": ("test_point",)}
        if not self.squeeze:
            dims = {name: ("test_point", "output") for name in dims}
        result = Draws(
            samples={"variance": draws["variance"], "f": draws["f"]},
            dims=dims,
            attrs={"inference": f"scale_mixture ({self.posterior.method})"},
        )
        return result.to_arviz(posterior_predictive={"y": draws["y"]}, dims=dims)


def regression(
    kernel,
    x_train,
    y_train,
    *,
    scale_prior,
    noise_variance,
    method: str = "auto",
    key=None,
    num_samples: int = 1000,
    jitter: float = gp.DEFAULT_JITTER,
) -> ScaleMixtureRegression:
    """Condition the scale mixture ``s2 ~ scale_prior, f | s2 ~ GP(0, s2 K)`` on data.

    Args:
        kernel: a :class:`~ppl.processes.nngp.Network` with last-layer ``W_std = 1`` (the
            scale is ``s2``), or ``k(x1, x2)``.
        x_train, y_train: ``(n, ...)`` and ``(n,)`` or ``(n, C)`` (``C`` outputs share ``s2``:
            one-hot labels for classification by regression).
        scale_prior: e.g. ``dist.InverseGamma(alpha, beta)`` (Student-t process),
            :class:`BurrXII`, ``dist.HalfCauchy``, ``dist.LogNormal``, ``dist.Gamma``.
        noise_variance: noise per unit scale (``y | s2 ~ N(0, s2 (K + noise_variance I))``).
        method, key, num_samples: see :func:`scale_posterior`.
        jitter: absolute diagonal jitter (:mod:`ppl.processes.gp`).
    """
    k_train = gp.kernel_matrix(kernel, x_train)
    conditioned = gp.condition(k_train, y_train, noise_variance, jitter)
    count = conditioned.num_points * conditioned.num_outputs
    posterior = scale_posterior(
        scale_prior, conditioned.quadratic, count, method=method, key=key, num_samples=num_samples
    )
    return ScaleMixtureRegression(
        kernel, jnp.asarray(x_train), conditioned, jnp.ndim(y_train) == 1, posterior
    )


def student_t_process(
    kernel, x, *, alpha, beta, noise_variance=0.0, jitter: float = gp.DEFAULT_JITTER, devices: int = 1
):
    """The Student-t process at ``x`` as a NumPyro distribution: the marginal of
    ``s2 ~ IG(alpha, beta)``, ``y | s2 ~ N(0, s2 (K + noise_variance I))``, i.e.
    ``MultivariateStudentT(2 alpha, 0, (beta / alpha) (K + noise_variance I))``. For
    ``ppl.sample("y", student_t_process(net, x, alpha=2., beta=2.), obs=y)``."""
    k = gp.prior(kernel, x, noise_variance=noise_variance, jitter=jitter, devices=devices).scale_tril
    return dist.MultivariateStudentT(2 * alpha, jnp.zeros(k.shape[0], k.dtype), jnp.sqrt(beta / alpha) * k)
