"""Every NumPyro example model compiles in ppl unchanged, and its log density is NumPyro's.

The reference is NumPyro's own ``initialize_model(...).potential_fn`` (which handles
``scan``, enumeration and masks its own way) at random unconstrained points: the two
must agree to float32 rounding, jitted with the data traced. This is exact: no Monte Carlo error enters.
One difference is deliberate: the entries of ``obs_mask``'s ``*_unobserved`` site that
are observed (unused) get a standard normal density in ppl, flat in NumPyro.
"""

import warnings

import jax
import numpy as np
import pytest
from numpyro.infer.util import initialize_model
from scipy.stats import norm

import ppl
from ppl.model.compile import unflatten
from tests.numpyro.models import MODELS
from tests.seeds import key

CONSTANT_ARGS = {"ucbadmit": ["dept"], "impute": ["y"], "positive_only": ["y"]}


@jax.jit
def _logdensity(compiled, u):
    return jax.vmap(compiled.logdensity)(u)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_log_density_equals_numpyro(name):
    model, args, kwargs = MODELS[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = ppl.compile(model, *args, **kwargs)
    messages = " ".join(str(w.message) for w in caught)
    for argument in CONSTANT_ARGS.get(name, []):
        assert f"'{argument}'" in messages and "constants" in messages
    if name not in CONSTANT_ARGS:
        assert "constants" not in messages
    info = initialize_model(key(0), model, model_args=args, model_kwargs=kwargs)
    u = jax.random.uniform(key(1), (4, compiled.dim), minval=-1.5, maxval=1.5)
    expected = jax.jit(jax.vmap(lambda row: -info.potential_fn(unflatten(row, compiled.layout))))(u)
    if name == "impute":  # ppl gives obs_mask's unused entries a N(0, 1) density (make_logdensity)
        observed = ~np.isnan(args[1])
        unused = jax.vmap(lambda row: unflatten(row, compiled.layout)["y_unobserved"])(u)[:, observed]
        expected = expected + norm.logpdf(np.asarray(unused)).sum(axis=1)
    np.testing.assert_allclose(_logdensity(compiled, u), expected, rtol=2e-5, atol=2e-4)


def test_static_names_constants_without_a_warning():
    model, args, kwargs = MODELS["ucbadmit"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled = ppl.compile(model, *args, static=("dept",), **kwargs)
    assert compiled.dim == 3 + 6
    with pytest.raises(ValueError, match="not called with argument"):
        ppl.compile(model, *args, static=("depts",), **kwargs)


def test_enumerated_sites_are_reported():
    model, args, kwargs = MODELS["gmm"]
    compiled = ppl.compile(model, *args, **kwargs)
    assert compiled.enumerated == ("z",)
    assert compiled.dims["z"] == ("data",)
