"""Rao-Blackwellised score terms: each score-function site multiplies only the cost
terms downstream of it.

The ELBO's log weight ``log p(x, z) - log q(z)`` is a sum of site terms, each
elementwise over the site's plates. A REINFORCE site ``z`` needs, for an unbiased
gradient, only the terms that may depend on its value (Williams 1992; Schulman et al.
2015; Pyro's and NumPyro's ``TraceGraph_ELBO``); the others multiply a zero-mean score
and only add variance. Which terms may depend on ``z`` (the rules are conservative):

- a guide term ``log q(g)`` when ``g`` is ``z`` or drawn after it;
- a model term ``log p(m)`` when ``m`` or a latent site the model samples before ``m``
  is ``z`` or drawn after ``z`` in the guide (``m``'s density can only use values
  sampled before it);
- plates: element ``i`` of ``z`` along a plate the term shares (same name and size)
  reaches only element ``i`` of the term, provided every site through which ``z`` may
  reach the term is in that plate too (the guide sites drawn after ``z`` up to the
  term's reach, and for a model term the model latents sampled before it, from ``z``
  on, with their model plates); along any other axis the term counts whole. Plate
  elements are independent only given the sites outside the plate: a global site drawn
  from ``sum_i z_i`` carries every ``z_i`` into every element of a later plate term.
  This is NumPyro's conditional-independence contract for plates (an element of a plate
  never reads another element of the same plate directly); code that breaks it (e.g.
  ``z.mean()`` used inside the plate) cannot be detected and biases the gradient.

Example: a plate of ``N`` local latents ``z_i`` with data ``x_i`` gives ``z_i`` the cost
``log p(z_i) + log p(x_i | z_i) - log q(z_i)`` instead of the whole sum over ``N``, so the
gradient variance grows like ``N`` instead of ``N**2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

sg = jax.lax.stop_gradient


@dataclass(frozen=True)
class PlateArray:
    """A site's elementwise log-density summed over every axis that is not a plate:
    ``values`` has one axis per name in ``plates`` (``()`` for a site outside plates).

    Example: a site in ``plate("data", 5)`` with batch shape ``(5, 3)`` (the 3 not a
    plate) gives ``values`` of shape ``(5,)`` and ``plates == ("data",)``.
    """

    values: jax.Array
    plates: tuple[str, ...]

    def size(self, plate: str) -> int:
        return self.values.shape[self.plates.index(plate)]


def plate_form(log_prob, frames) -> PlateArray:
    """``log_prob`` (``sample_shape + batch_shape``) reduced to the plates in ``frames``
    (NumPyro's ``cond_indep_stack``); a plate whose axis is missing or of another size
    than the plate is summed like any other axis (no independence claimed).

    Example:
        >>> from numpyro.primitives import CondIndepStackFrame
        >>> form = plate_form(jnp.ones((5, 3)), [CondIndepStackFrame("data", -2, 5)])
        >>> form.values.shape, form.plates
        ((5,), ('data',))
    """
    log_prob = jnp.asarray(log_prob)
    ndim = log_prob.ndim
    names = {}
    for frame in frames:
        axis = None if frame.dim is None else ndim + frame.dim
        if axis is not None and 0 <= axis < ndim and log_prob.shape[axis] == frame.size:
            names[axis] = frame.name
    summed = tuple(axis for axis in range(ndim) if axis not in names)
    return PlateArray(jnp.sum(log_prob, axis=summed), tuple(names[axis] for axis in sorted(names)))


def plate_set(form: PlateArray) -> frozenset:
    """The ``(name, size)`` pairs of ``form``'s plates."""
    return frozenset((plate, form.size(plate)) for plate in form.plates)


def align(term: PlateArray, target: PlateArray, keep=None) -> jax.Array:
    """``term`` as seen by each element of ``target``: summed over the axes the two do
    not share (or that are not in ``keep``, a set of ``(name, size)``, when given),
    broadcastable to ``target.values.shape``.

    Example: a term on plate ``("data",)`` of size 5 and a target outside plates give the
    term's total, shape ``()``; the other way round, the target's 5 elements each see the
    whole term, shape ``(1,)`` broadcast.
    """
    shared = [
        p
        for p in term.plates
        if p in target.plates
        and term.size(p) == target.size(p)
        and (keep is None or (p, term.size(p)) in keep)
    ]
    summed = tuple(axis for axis, p in enumerate(term.plates) if p not in shared)
    values = jnp.sum(term.values, axis=summed)
    in_target_order = sorted(shared, key=target.plates.index)
    values = jnp.transpose(values, [shared.index(p) for p in in_target_order])
    return values.reshape([target.size(p) if p in shared else 1 for p in target.plates])


@dataclass(frozen=True)
class Carrier:
    """A site through which a score site's value may reach a term: its guide position and
    its plates (``plate_set``). A guide site carries from the sites drawn before it
    (``from_model=False``); a model latent, with its model plates, from its own guide
    position on (``from_model=True``: the model may place it in other plates than the guide)."""

    position: float
    plates: frozenset
    from_model: bool

    def carries(self, site_position: int, reach: float) -> bool:
        after = site_position <= self.position if self.from_model else site_position < self.position
        return after and self.position <= reach


@dataclass(frozen=True)
class Term:
    """One cost term, the latest guide position it may depend on (every score site at a
    guide position ``<= reach`` may influence it) and the sites that may carry that
    influence (:class:`Carrier`)."""

    cost: PlateArray
    reach: float
    carriers: tuple = ()

    def independent_plates(self, site_position: int):
        """The ``(name, size)`` plates along which element ``i`` of a score site at
        ``site_position`` reaches only element ``i`` of this term: those of every carrier."""
        keep = None
        for carrier in self.carriers:
            if carrier.carries(site_position, self.reach):
                keep = carrier.plates if keep is None else keep & carrier.plates
        return keep


@dataclass(frozen=True)
class ScoreSite:
    """A REINFORCE site of the guide run: its guide position, unscaled ``log q`` in plate
    form (what its score differentiates) and its baseline (``None`` for none)."""

    name: str
    position: int
    log_q: PlateArray
    baseline: jax.Array | None


def model_reach(model_latents, guide_positions) -> list[float]:
    """For each model site in model order, the latest guide position among the latent
    sites sampled at or before it (``-1`` before any latent; ``inf`` for a latent the
    guide did not draw).

    ``model_latents`` names each model site's latent (``None`` for an observed site).

    Example:
        >>> model_reach([None, "z", None], {"z": 3})
        [-1.0, 3, 3]
    """
    reach, latest = [], -1.0
    for name in model_latents:
        if name is not None:
            latest = max(latest, guide_positions.get(name, float("inf")))
        reach.append(latest)
    return reach


def downstream_cost(site: ScoreSite, terms) -> jax.Array:
    """The sum of the terms that may depend on ``site``, one entry per element of its
    plate form, ``site.log_q.values.shape``."""
    cost = jnp.zeros(site.log_q.values.shape)
    for term in terms:
        if term.reach >= site.position:
            cost = cost + align(term.cost, site.log_q, term.independent_plates(site.position))
    return cost


def score_terms(sites, terms) -> jax.Array:
    """Value 0; gradient ``sum_z sum_i (C_zi - b_zi) grad log q(z_i)`` with ``C_zi`` the
    downstream cost of element ``i`` of site ``z``, plus the least-squares step that pulls
    a learned baseline ``b_zi`` toward ``C_zi``."""
    total = jnp.zeros(())
    for site in sites:
        log_q = site.log_q.values
        cost = sg(downstream_cost(site, terms))
        score = log_q - sg(log_q)
        if site.baseline is None:
            total = total + jnp.sum(cost * score)
            continue
        baseline = _broadcast_baseline(site, jnp.asarray(site.baseline, cost.dtype))
        squared = jnp.square(cost - baseline)
        total = total + jnp.sum((cost - baseline) * score) - jnp.sum(squared - sg(squared))
    return total


def _broadcast_baseline(site: ScoreSite, baseline: jax.Array) -> jax.Array:
    shape = site.log_q.values.shape
    try:
        return jnp.broadcast_to(baseline, shape)
    except ValueError:
        raise ValueError(
            f"site '{site.name}': the baseline has shape {baseline.shape}, which does not broadcast "
            f"to the site's plates {site.log_q.plates} of shape {shape}; give one value or one per "
            "plate element"
        ) from None
