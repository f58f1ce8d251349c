"""Param sites and autoguides: initial values, and the constrained values NumPyro reports.

Guides and models run by ``ppl.vi`` take the value of every param site
(``ppl.param`` / ``numpyro.param``) from the parameter dict, their first argument; it
holds *unconstrained* values (``biject_to(constraint)`` maps them to the site), so an
Optax step can move them anywhere. NumPyro's autoguides are guides of this kind, so
``AutoNormal(model)`` is passed like a hand-written guide::

    guide = AutoNormal(model)                              # model(params, y)
    result = ppl.vi.fit(ppl.vi.objectives.elbo(model, guide), {}, y,
                        optimizer=optax.adam(0.05), steps=1000, key=key)
    result.draws(guide, key, 1000, y, model=model).to_arviz()

:func:`initial_params` adds the initial value of every param site that the parameters
lack (and sets up each autoguide: NumPyro's lazy prototype trace of its model), as
NumPyro's ``SVI.init`` does; :func:`ppl.vi.fit` calls it by itself. Own the loop
(:func:`ppl.vi.fitter`) and you call it once before ``init``. :func:`constrained_params`
gives the values at the sites, what NumPyro's ``SVI.get_params`` returns, for the
autoguide's own methods (``guide.median``, ``guide.quantiles``, ``guide.sample_posterior``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from numpyro import handlers
from numpyro.distributions import constraints as dist_constraints
from numpyro.primitives import Messenger

from ppl.runtime.keys import validate_key
from ppl.vi.language import Expectation
from ppl.vi.sites import UNSET_PARAM, SubstituteParams, callable_name, set_up_autoguide, unconstrain_param

__all__ = ["constrained_params", "initial_params"]


class _CollectParams(Messenger):
    """Record the initial value (unconstrained) of every param site the parameters lack.

    It sits outside the runs of guides and models, so it sees a message after
    :class:`~ppl.vi.sites.SubstituteParams` has marked the name unset; it takes the value the site
    falls back to (its ``init_value``) and clears the mark, so the run goes on.
    """

    def __init__(self):
        super().__init__(fn=None)
        self.initial: dict[str, Any] = {}

    def postprocess_message(self, msg):
        if msg["type"] != "param" or not msg.get(UNSET_PARAM):
            return
        msg[UNSET_PARAM] = False
        name = msg["name"]
        # numpyro.module asks for its parameters without an initial value first (None),
        # then initialises the network and declares them again with one.
        if name in self.initial or msg["value"] is None:
            return
        value = unconstrain_param(msg["value"], msg["kwargs"].get("constraint", dist_constraints.real))
        # Strongly typed, as an optimiser's state will be (jnp.full(..., 0.1) is weakly typed).
        value = jax.tree.map(lambda leaf: jnp.array(leaf, dtype=jnp.result_type(leaf)), value)
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value)):
            raise ValueError(
                f"initial_params: the initial value of param site '{name}' depends on a random draw "
                "or on traced data; give it a value in params"
            )
        self.initial[name] = value


def initial_params(objective: Expectation, params: Any, *args: Any, key: jax.Array) -> Any:
    """``params`` with the initial value of every param site it lacks, unconstrained.

    Runs ``objective(params, *args)`` once, eagerly, with a NumPyro ``seed`` handler
    around it: every autoguide sets itself up (its prototype trace of the model, its
    initial locations drawn with ``key``), and every param site whose name is not in
    ``params`` contributes its initial value, mapped to the unconstrained space of its
    constraint. Values already in ``params`` are kept.

    Args:
        objective: an :class:`~ppl.vi.Expectation` over ``(params, *args)``.
        params: a dict (``{}`` or ``None`` for none yet); another pytree is returned
            unchanged when no param site is missing.
        *args: the data passed to the objective after the parameters.
        key: ``jax.random`` key for the autoguides' initial values and the run.

    Returns:
        a dict: ``params`` and the new entries, each shaped as its site's value.

    Example:
        >>> import jax, ppl
        >>> from ppl import dist
        >>> from numpyro.infer.autoguide import AutoNormal
        >>> def model(params, y):
        ...     ppl.sample("mu", dist.Normal(0.0, 1.0))
        ...     ppl.sample("y", dist.Normal(0.0, 1.0), obs=y)
        >>> guide = AutoNormal(model)
        >>> elbo = ppl.vi.objectives.elbo(model, guide)
        >>> sorted(ppl.vi.initial_params(elbo, {}, 0.5, key=jax.random.key(0)))
        ['mu_auto_loc', 'mu_auto_scale']
    """
    key = validate_key(key)
    params = {} if params is None else params
    collector = _CollectParams()
    setup_key, run_key = jax.random.split(key)
    with handlers.seed(rng_seed=setup_key), collector:
        objective.estimate(run_key, params, *args)
    if not collector.initial:
        return params
    if not isinstance(params, Mapping):
        raise ValueError(
            f"initial_params: param sites {sorted(collector.initial)} need the parameters as a dict, "
            f"got {type(params).__name__}"
        )
    return {**collector.initial, **params}


class _Record(Messenger):
    def __init__(self):
        super().__init__(fn=None)
        self.values: dict[str, Any] = {}

    def postprocess_message(self, msg):
        if msg["type"] == "param":
            self.values[msg["name"]] = msg["value"]


def constrained_params(fn: Callable, params: Mapping, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The value of every param site of ``fn(params, *args, **kwargs)``: what NumPyro's
    ``SVI.get_params`` returns, so the autoguide's own methods work on it.

    ``params`` holds unconstrained values (what :func:`ppl.vi.fit` optimises); each
    site's value is ``biject_to(constraint)(params[name])``, shaped as the site.

    Example::

        values = ppl.vi.constrained_params(guide, result.params, y)
        guide.median(values)                 # {"mu": ...}, as after NumPyro's SVI
        values["mu_auto_scale"]              # positive
    """
    values = param_site_values(fn, params, *args, **kwargs)
    if not values:
        raise ValueError(f"constrained_params: {callable_name(fn)} has no param sites")
    return values


def param_site_values(fn: Callable, params: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`constrained_params`, ``{}`` when ``fn`` has no param sites."""
    recorder = _Record()
    # The run draws the sample sites (with a fixed seed) only to reach every param site;
    # the draws are discarded, and param values do not depend on them.
    with recorder, handlers.seed(rng_seed=0), SubstituteParams(params, fn):
        set_up_autoguide(fn, (params, *args), kwargs)
        fn(params, *args, **kwargs)
    return recorder.values
