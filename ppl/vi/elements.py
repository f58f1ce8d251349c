"""Log densities per element of a data plate, for multi-sample objectives that take
the log-mean-exp over particles separately for each datum on one batched tensor.

When every sample site of a model and its guide sits in one plate ``"data"`` of size
``B`` (a VAE's images, a batch of independent series), the log weight of a particle is a
sum of ``B`` independent terms, and the importance-weighted bound is tighter and cheaper
per datum::

    sum_b log (1/K) sum_k exp(log w_kb)      instead of    log (1/K) sum_k exp(sum_b log w_kb)

:func:`sim_elements` draws ``K`` particles of the whole batch at once and returns
``log q`` per particle and element, ``(K, B)``; :func:`density_elements` scores values
under a model per element, ``(B,)``, and returns the plate's common scale. Both log
densities are *without* NumPyro's ``scale``: a subsampled plate's ``N / B`` or a
``handlers.scale(1 / B)`` multiplies the bound per element, not each log weight inside
the log-mean-exp (which would temper the bound). This is NumPyro's ``RenyiELBO``
contract for a data plate, except that NumPyro keeps a ``handlers.scale`` inside.

Example::

    def model(params, x):
        with ppl.plate("data", x.shape[0]):
            z = ppl.sample("z", dist.Normal(jnp.zeros(8), 1.0).to_event(1))
            ppl.sample("x", dist.Bernoulli(logits=decoder(params, z)).to_event(1), obs=x)

    @ppl.vi.expectation
    def iwae(params, x):
        values, log_q = sim_elements(guide, "data", 5, params, x)   # log_q: (5, B)
        log_p, scale = jax.vmap(lambda v: density_elements(model, v, "data", params, x))(values)
        return bound_per_element(logsumexp(log_p - log_q, axis=0) - jnp.log(5), scale[0])

which is what ``ppl.vi.objectives.iwae(model, guide, 5, plate="data")`` builds
(:func:`bound_per_element` returns ``scale * sum_b`` of its elements and lets each
score-function site's element credit only its own element's bound).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ppl.errors import ModelError
from ppl.vi.language import _STACK, Family, _current, _ElementCost
from ppl.vi.rao_blackwell import PlateArray, plate_form
from ppl.vi.sites import SiteRecord, callable_name, is_autoguide, run_guide, scored_sites, unscaled_log_prob

__all__ = ["bound_per_element", "density_elements", "sim_elements"]

sg = jax.lax.stop_gradient


def _element_sum(program, name: str, form: PlateArray, frames, plate: str) -> jax.Array:
    """A site's log-density in plate form summed over every plate but ``plate``: ``(B,)``."""
    if plate not in form.plates:
        raise ModelError(
            f"site '{name}' of {callable_name(program)} is not inside plate '{plate}' (its plates: "
            f"{[frame.name for frame in frames]}, log-density over plates of shape {form.values.shape}): "
            "a per-element bound needs every sample site in the data plate; leave plate=None for the "
            "whole-batch bound"
        )
    others = tuple(axis for axis, other in enumerate(form.plates) if other != plate)
    return jnp.sum(form.values, axis=others)


def _common_scale(program, scales: Mapping[str, Any]):
    """The one scale every site shares (``1.0`` for none); a clear error if concrete
    scales differ (a per-element bound cannot weigh the sites of one element differently)."""
    scales = {name: 1.0 if scale is None else scale for name, scale in scales.items()}
    for name, scale in scales.items():
        if jnp.ndim(scale) != 0:
            raise ValueError(
                f"{callable_name(program)}: site '{name}' has a scale of shape {jnp.shape(scale)}; a "
                "per-element bound needs one scalar scale for the whole plate"
            )
    concrete = {name: float(s) for name, s in scales.items() if not isinstance(s, jax.core.Tracer)}
    if len(set(concrete.values())) > 1:
        raise ValueError(
            f"{callable_name(program)}: the sites of the data plate have different scales {concrete}; "
            "a per-element bound needs one scale for the whole plate (a subsampled plate's N/B)"
        )
    return next(iter(scales.values()), 1.0)


def density_elements(
    target: Callable, values: Mapping[str, Any], plate: str, *args: Any, **kwargs: Any
) -> tuple[jax.Array, Any]:
    """``log p(values, observations)`` of a plain model (or guide) per element of
    ``plate``, unscaled: ``(log_p of shape (B,), scale)``.

    Example::

        log_p, scale = density_elements(model, {"z": z}, "data", params, x)   # (B,)
    """
    autoguides, scales = (_STACK[-1].autoguides if _STACK else ()), {}
    log_p = jnp.zeros(())
    for name, site in scored_sites(target, values, args, kwargs, autoguides):
        frames = site["cond_indep_stack"]
        form = plate_form(unscaled_log_prob(site), frames)
        log_p = log_p + _element_sum(target, name, form, frames, plate)
        scales[name] = site.get("scale")
    return log_p, _common_scale(target, scales)


def sim_elements(
    guide: Callable, plate: str, particles: int, *args: Any, **kwargs: Any
) -> tuple[dict, jax.Array]:
    """``particles`` draws of a guide function, each scored per element of ``plate``:
    ``(values, log_q)`` with a leading particle axis on every value and ``log_q`` of
    shape ``(K, B)``, unscaled (the bound's scale is the model's, from
    :func:`density_elements`; the guide's sites must share one scale too). Runs inside
    an objective (:func:`ppl.vi.expectation`); score-function sites get their score
    terms as with :func:`ppl.vi.sim`.
    """
    if isinstance(guide, Family):
        raise ValueError(
            "sim_elements needs a guide function; marginal/normalize families have no per-element density"
        )
    if int(particles) < 1:
        raise ValueError(f"sim_elements: particles must be >= 1, got {particles}")
    context = _current("sim_elements")
    rng_key, prefix = context.next_call()
    if is_autoguide(guide) and guide not in context.autoguides:
        context.autoguides.append(guide)

    def one(key):
        run = run_guide(guide, args, kwargs, key, prefix, {}, branching="error")
        log_q, records = jnp.zeros(()), dict(run.records)
        for name, (_, unscaled) in run.plate_forms.items():
            element_log_q = _element_sum(guide, name, unscaled, run.frames[name], plate)
            log_q = log_q + element_log_q
            # The score of each element, for bound_per_element's per-element credit (a site
            # with a learned baseline keeps its whole score: it is credited whole).
            record = records[prefix + name]
            if record.baseline is None:
                records[prefix + name] = SiteRecord(record.kind, element_log_q)
        _common_scale(guide, run.scales)
        return run.values, log_q, records

    values, log_q, records = jax.vmap(one)(jax.random.split(rng_key, int(particles)))
    context.records.update(records)
    context.element_records.extend(records)
    return values, log_q


def bound_per_element(elements: jax.Array, scale, loo: jax.Array | None = None) -> jax.Array:
    """``scale * sum_b elements_b``, a bound per element of the data plate of the
    :func:`sim_elements` draws in this objective, returned as the objective's value: the
    score of a score-function site's element ``b`` then multiplies only ``elements_b``
    (and, with ``loo`` of shape ``(K, B)``, VIMCO's leave-one-out baseline of particle
    ``k`` and element ``b``) instead of the whole sum, so the gradient variance grows like
    ``B`` instead of ``B**2``. Runs inside an objective.

    Example::

        values, log_q = sim_elements(guide, "data", 5, params, x)
        ...
        return bound_per_element(logsumexp(log_w, axis=0) - jnp.log(5), scale)
    """
    context = _current("bound_per_element")
    elements = jnp.asarray(elements)
    if elements.ndim != 1:
        raise ValueError(f"bound_per_element: elements must have shape (B,), got {elements.shape}")
    if loo is not None and (jnp.ndim(loo) != 2 or jnp.shape(loo)[1:] != elements.shape):
        raise ValueError(
            f"bound_per_element: loo must have shape (K, {elements.shape[0]}), got {jnp.shape(loo)}"
        )
    total = scale * jnp.sum(elements)
    context.costs.append(
        _ElementCost(total, elements, scale, tuple(context.element_records), None if loo is None else sg(loo))
    )
    return total
