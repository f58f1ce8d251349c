"""The common variational objectives, each a short program in the objective language.

Every constructor takes ``model(params, *args)`` and ``guide(params, *args)`` (both
receive the whole parameter pytree and the same data) and returns an
:class:`~ppl.vi.Expectation` over ``(params, *args)``. Read them as templates: each
body is what a user would write. Gradients are unbiased for the expected value of
the returned quantity, whatever estimators the guide's sites use, except where a
docstring says the objective is defined by its gradient (wake-sleep) or needs
reparameterised sites (``"stl"``, ``"dreg"``).

Example:
    >>> import jax, ppl
    >>> from ppl import dist
    >>> def model(params, y):
    ...     z = ppl.sample("z", dist.Normal(0.0, 1.0))
    ...     ppl.sample("y", dist.Normal(z, 1.0), obs=y)
    >>> def guide(params, y):
    ...     ppl.sample("z", dist.Normal(params["loc"], 1.0))
    >>> iwae = ppl.vi.objectives.iwae(model, guide, num_particles=5)
    >>> iwae.estimate(jax.random.key(0), {"loc": 0.5}, 1.0).shape
    ()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from ppl.vi.elements import bound_per_element, density_elements, sim_elements
from ppl.vi.language import (
    Expectation,
    Family,
    density,
    each_replaced_by_the_others,
    expectation,
    leave_one_out,
    log_weight,
    marginal,
    sim,
)
from ppl.vi.sites import unscaled

__all__ = ["diwhvi", "elbo", "hvi", "iwae", "iwhvi", "renyi", "vimco", "wake_p", "wake_q"]

sg = jax.lax.stop_gradient


def logmeanexp(values: jax.Array, axis: int = 0) -> jax.Array:
    """``log mean exp(values)`` along ``axis``."""
    return logsumexp(values, axis=axis) - jnp.log(values.shape[axis])


def _draw(guide, params, args, num_particles, plate):
    """``K`` guide draws: ``(values, log_q)``, ``log_q`` of shape ``(K,)`` or, per element
    of ``plate``, ``(K, B)``."""
    if plate is None:
        return sim(guide, params, *args, particles=num_particles)
    return sim_elements(guide, plate, num_particles, params, *args)


def _score(program, values, params, args, plate):
    """``log p`` of each of ``K`` values under ``program``, ``(K,)`` or ``(K, B)``, and
    the scale of the bound (``1.0`` without a plate)."""
    if plate is None:
        return jax.vmap(lambda v: density(program, v, params, *args))(values), 1.0
    log_p, scale = jax.vmap(
        lambda v: jax.tree.map(jnp.asarray, density_elements(program, v, plate, params, *args))
    )(values)
    return log_p, scale[0]


def _log_weights(model, guide, params, args, num_particles, vectorize=True, plate=None):
    """``log p(x, z_k) - log q(z_k)`` for ``K`` guide draws, ``(K,)`` (or ``(K, B)`` per
    element of ``plate``), and the scale of the bound."""
    if vectorize or plate is not None:
        values, log_q = _draw(guide, params, args, num_particles, plate)
        log_p, scale = _score(model, values, params, args, plate)
        return log_p - log_q, scale
    log_w = []
    for _ in range(num_particles):
        values, log_q = sim(guide, params, *args)
        log_w.append(density(model, values, params, *args) - log_q)
    return jnp.stack(log_w), 1.0


def _bound(log_w, scale, alpha=0.0, plate=None):
    """The Renyi bound of ``K`` log weights (IWAE at ``alpha = 0``), summed over plate
    elements (each score crediting its own element's bound) and multiplied by the
    plate's scale."""
    elements = logmeanexp((1.0 - alpha) * log_w) / (1.0 - alpha)
    return scale * elements if plate is None else bound_per_element(elements, scale)


def _per_element_loo(log_w):
    """VIMCO's baselines per particle and element, ``(K, B)``: the element's bound with
    particle ``k``'s log weight replaced by the mean of the others."""
    return jax.vmap(logmeanexp)(each_replaced_by_the_others(log_w))


def _check_plate(name, plate, guide):
    if plate is not None and isinstance(guide, Family):
        raise ValueError(f"{name}: plate={plate!r} needs a guide function, not a Family")


def _built_from(model: Callable, guide, objective: Expectation) -> Expectation:
    """``objective`` remembering its model and (plain function) guide, for ``VIResult``."""
    objective.model = model
    objective.guide = None if isinstance(guide, Family) else guide
    return objective


def elbo(model: Callable, guide) -> Expectation:
    """``E_q[log p(x, z) - log q(z)]``; ``guide`` may be a :class:`~ppl.vi.Family`.

    Score-function sites are Rao-Blackwellised: each multiplies only the terms of the
    log weight downstream of it (:func:`~ppl.vi.log_weight`)."""

    @expectation
    def objective(params, *args):
        return log_weight(model, guide, params, *args)[1]

    return _built_from(model, guide, objective)


def iwae(
    model: Callable,
    guide,
    num_particles: int,
    gradient: str = "standard",
    vectorize: bool = True,
    plate: str | None = None,
):
    """Importance-weighted bound ``E[log (1/K) sum_k p(x, z_k) / q(z_k)]``.

    Args:
        gradient: ``"standard"`` (any estimators), ``"stl"`` (sticking the landing:
            ``log q`` evaluated at stopped parameters; reparameterised guides only;
            unbiased for ``K = 1``, lower variance near the optimum, a known small
            bias for ``K > 1``) or ``"dreg"`` (doubly reparameterised, Tucker et al.
            2019: unbiased, guide gradient ``sum_k w_k^2 d log w_k / dz_k dz_k/dphi``;
            reparameterised guides whose parameters the model does not use).
        vectorize: draw particles with one ``vmap``-ed ``sim``; ``False`` uses ``K``
            separate ``sim`` calls, which lets ``enum``/``mvd`` sites enumerate jointly
            (with ``plate`` the particles are always drawn at once).
        plate: the name of a data plate holding every sample site of model and guide:
            the bound is taken per element, ``scale * sum_b log (1/K) sum_k w_kb``, on one
            batched tensor (:mod:`ppl.vi.elements`; NumPyro's ``RenyiELBO`` does the
            same), tighter than the whole-batch bound and with no ``vmap`` over data. The
            plate's scale (``N / B`` of a subsampled plate, a ``handlers.scale``) multiplies
            each element's bound; ``scale = 1 / B`` gives the batch mean.

    Example::

        per_image = ppl.vi.objectives.iwae(model, guide, 5, plate="data")
        value, grads = per_image.value_and_grad_estimate(key, params, images)
    """
    if gradient not in ("standard", "stl", "dreg"):
        raise ValueError(f"iwae: gradient must be 'standard', 'stl' or 'dreg', got {gradient!r}")
    if gradient != "standard" and isinstance(guide, Family):
        raise ValueError(f"iwae: gradient={gradient!r} needs a guide with an exact density, not a Family")
    _check_plate("iwae", plate, guide)

    @expectation
    def standard(params, *args):
        log_w, scale = _log_weights(model, guide, params, args, num_particles, vectorize, plate)
        return _bound(log_w, scale, plate=plate)

    @expectation
    def path_only(params, *args):
        values, _ = _draw(guide, params, args, num_particles, plate)
        frozen = sg(params)
        log_q_stopped, _ = _score(guide, values, frozen, args, plate)
        if gradient == "stl":
            log_p, scale = _score(model, values, params, args, plate)
            return _bound(log_p - log_q_stopped, scale, plate=plate)
        # DReG: the guide's gradient flows only through z (model and q at stopped
        # parameters), weighted by w_k^2; the model's gradient is IWAE's sum w_k grad log p.
        log_p_path, scale = _score(model, values, frozen, args, plate)
        log_w_path = log_p_path - log_q_stopped
        log_p_model, _ = _score(model, sg(values), params, args, plate)
        weights = jax.nn.softmax(sg(log_w_path), axis=0)
        # Per element the densities are unscaled (the scale multiplies the bound), so
        # only the whole-batch form has a scale excess to remove.
        excess = (
            0.0 if plate is not None else jnp.sum(weights * _scale_excess(guide, sg(values), params, args))
        )
        return (
            scale
            * (
                jnp.sum(logmeanexp(sg(log_w_path)))
                + jnp.sum(jnp.square(weights) * (log_w_path - sg(log_w_path)))
                + jnp.sum(weights * (log_p_model - sg(log_p_model)))
            )
            - excess
        )

    return _built_from(model, guide, standard if gradient == "standard" else path_only)


def _scale_excess(guide, values, params, args) -> jax.Array:
    """``(K,)``: ``log q_scaled - log q`` at fixed ``values``, value 0, gradient in ``params``.

    DReG turns the score term ``-w_k grad log q(z_k)`` into a path term; that identity
    holds for the sampling density only. Under NumPyro's ``scale`` the objective's
    ``log q`` is ``scale * log q``, and the excess ``(scale - 1) * grad log q`` stays a
    plain partial derivative at fixed ``z`` (zero for unscaled guides).
    """

    def excess(v):
        return density(guide, v, params, *args) - density(unscaled(guide), v, params, *args)

    per_particle = jax.vmap(excess)(values)
    return per_particle - sg(per_particle)


def hvi(model: Callable, guide: Callable, keep: Sequence[str]) -> Expectation:
    """Hierarchical VI: the ELBO of the guide's marginal over ``keep``, with
    ``log q(kept)`` replaced by ``log q(kept | aux)`` (one auxiliary draw)."""
    return elbo(model, marginal(guide, keep, particles=1))


def iwhvi(model: Callable, guide: Callable, keep: Sequence[str], num_aux: int) -> Expectation:
    """Importance-weighted HVI: ``log q(kept)`` estimated with ``num_aux`` auxiliary
    draws (the drawn one and ``num_aux - 1`` fresh ones)."""
    return elbo(model, marginal(guide, keep, particles=num_aux))


def diwhvi(model: Callable, guide: Callable, keep: Sequence[str], num_particles: int, num_aux: int):
    """Doubly importance-weighted HVI: IWAE over ``num_particles`` outer draws of an
    IWHVI marginal with ``num_aux`` auxiliary draws each."""
    return iwae(model, marginal(guide, keep, particles=num_aux), num_particles)


def vimco(model: Callable, guide: Callable, num_particles: int, plate: str | None = None) -> Expectation:
    """IWAE with VIMCO's leave-one-out baselines (Mnih & Rezende 2016): particle
    ``k``'s score term uses the bound with ``log w_k`` replaced by the mean of the
    others. Meant for score-function (discrete) guide sites. ``plate``: as for
    :func:`iwae` (the replacement is made per element)."""
    _check_plate("vimco", plate, guide)

    @expectation
    def objective(params, *args):
        log_w, scale = _log_weights(model, guide, params, args, num_particles, plate=plate)
        if plate is not None:
            return bound_per_element(logmeanexp(log_w), scale, loo=_per_element_loo(log_w))
        return leave_one_out(log_w, reduce=logmeanexp)

    return _built_from(model, guide, objective)


def renyi(model: Callable, guide, alpha: float, num_particles: int, plate: str | None = None) -> Expectation:
    """Renyi bound ``E[1/(1-alpha) log (1/K) sum_k w_k^(1-alpha)]`` (alpha = 0: IWAE;
    alpha -> 1: the ELBO). Score-function sites get their full score term, unlike
    NumPyro's pathwise-only ``RenyiELBO``. ``plate``: as for :func:`iwae`."""
    if alpha == 1.0:
        raise ValueError("renyi: alpha = 1 is the ELBO; use ppl.vi.objectives.elbo")
    _check_plate("renyi", plate, guide)

    @expectation
    def objective(params, *args):
        log_w, scale = _log_weights(model, guide, params, args, num_particles, plate=plate)
        return _bound(log_w, scale, alpha, plate)

    return _built_from(model, guide, objective)


def _self_normalised(model, guide, params, args, num_particles):
    """Guide draws at stopped parameters and their self-normalised weights."""
    values, log_q = sim(guide, sg(params), *args, particles=num_particles)
    values = sg(values)
    log_p = jax.vmap(lambda v: density(model, v, params, *args))(values)
    return values, log_p, jax.nn.softmax(sg(log_p - log_q))


def wake_p(model: Callable, guide: Callable, num_particles: int) -> Expectation:
    """Reweighted wake-sleep, model update: ``sum_k w_k log p(x, z_k)`` with
    self-normalised weights of ``K`` guide draws. Defined by its gradient (the IWAE
    gradient for the model's parameters); the guide gets none."""

    @expectation
    def objective(params, *args):
        _, log_p, weights = _self_normalised(model, guide, params, args, num_particles)
        return jnp.sum(weights * log_p)

    return _built_from(model, guide, objective)


def wake_q(model: Callable, guide: Callable, num_particles: int) -> Expectation:
    """Reweighted wake-sleep, guide update: ``sum_k w_k log q(z_k)``, the gradient of
    ``-KL(p(z|x) || q)`` estimated by self-normalised importance sampling (biased for
    finite ``K``, as in Bornschein & Bengio 2015). The model gets no gradient."""

    @expectation
    def objective(params, *args):
        values, _, weights = _self_normalised(model, guide, params, args, num_particles)
        log_q = jax.vmap(lambda v: density(guide, v, params, *args))(values)
        return jnp.sum(weights * log_q)

    return _built_from(model, guide, objective)
