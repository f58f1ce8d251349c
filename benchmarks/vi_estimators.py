"""Gradient estimators side by side on models with an exact log-likelihood.

Two models of binarised 8x8 digits (same data split as ``benchmarks/vi.py``):

- a 10-component Bernoulli mixture, c ~ Categorical(pi), x | c ~ Bernoulli(theta_c),
  guide q(c | x) = softmax(linear(x)): log p(x) = logsumexp_c by enumeration;
- a sigmoid belief net with 8 binary latents, h ~ Bernoulli(sigmoid(b)),
  x | h ~ Bernoulli(sigmoid(W h + c)), guide q(h | x) = Bernoulli(sigmoid(V x + d)):
  log p(x) by enumerating the 256 states of h.

For each guide estimator (enum, REINFORCE, REINFORCE with a learned input-dependent
baseline, MVD; and VIMCO(5) on the IWAE(5) objective) we report, at one common point
(the parameters and fitted baseline reached by the learned-baseline run), on 100 test
images: the relative bias of the mean of 2000 gradient
estimates against the exact gradient (enumeration) and the largest per-coordinate
z-score, and the summed
per-coordinate variance of one estimate; then, after training model and guide
jointly with Adam(3e-3), batch 100, the same number of steps for every estimator:
the test ELBO gap log p(x) - ELBO (= KL(q || p(.|x)), exact) in nats per image.

Rao-Blackwellisation (``--rao-blackwell`` runs only this part and adds it to the saved
results): the summed per-coordinate variance of one REINFORCE ELBO gradient, today's
estimator (the score of every site times the whole log weight: ``sim`` + ``density``)
against the Rao-Blackwellised one (``objectives.elbo``: each score times the terms
downstream of it) and NumPyro's ``TraceGraph_ELBO``, on a plate of N = 100 local
latents with a global mean, and on both digit models at their initial parameters.

    python benchmarks/vi_estimators.py [--quick] [--rao-blackwell]
"""

import argparse
import itertools
import json
import os
import time

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from jax.scipy.special import logsumexp
from sklearn.datasets import load_digits

import ppl
from ppl import dist

PIXELS, COMPONENTS, HIDDEN_UNITS = 64, 10, 8
OPTIMIZER = optax.adam(3e-3)


def digits():
    images = (load_digits().data >= 8).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(images))
    return jnp.asarray(images[order[:1500]]), jnp.asarray(images[order[1500:]])


def bernoulli_log_lik(logits, x):
    return -jnp.sum(jnp.logaddexp(0.0, jnp.where(x > 0.5, -logits, logits)), axis=-1)


# ------------------------------------------------------------------ mixture


def mixture_init(key):
    k1, k2 = jax.random.split(key)
    return {
        "pi": jnp.zeros(COMPONENTS),
        "theta": 0.5 * jax.random.normal(k1, (COMPONENTS, PIXELS)),
        "enc": 0.01 * jax.random.normal(k2, (PIXELS, COMPONENTS)),
        "enc_b": jnp.zeros(COMPONENTS),
        "baseline": {"w": jnp.zeros(PIXELS), "b": jnp.zeros(())},
    }


def mixture_model(params, x):
    c = ppl.sample("c", dist.Categorical(logits=params["pi"]))
    ppl.sample("x", dist.Bernoulli(logits=params["theta"][c]).to_event(1), obs=x)


def mixture_guide(grad):
    def guide(params, x):
        baseline = x @ params["baseline"]["w"] + params["baseline"]["b"]
        spec = ppl.vi.reinforce(baseline=baseline) if grad == "baseline" else grad
        ppl.sample("c", dist.Categorical(logits=x @ params["enc"] + params["enc_b"]), infer={"grad": spec})

    return guide


def mixture_exact(params, x):
    """(log p(x), ELBO) per image, exact."""
    log_joint = (
        jax.nn.log_softmax(params["pi"]) + jax.vmap(lambda t: bernoulli_log_lik(t, x))(params["theta"]).T
    )
    log_q = jax.nn.log_softmax(x @ params["enc"] + params["enc_b"])
    return logsumexp(log_joint, axis=-1), jnp.sum(jnp.exp(log_q) * (log_joint - log_q), axis=-1)


# ------------------------------------------------------------------ sigmoid belief net

STATES = jnp.array(list(itertools.product([0.0, 1.0], repeat=HIDDEN_UNITS)))


def sbn_init(key):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    # Biases start small but not at exactly 0: NumPyro's Bernoulli(logits).log_prob
    # has a wrong gradient at logits == 0 (max(x, 0) and |x| both take slope 1 there).
    return {
        "b": 0.01 * jax.random.normal(k3, (HIDDEN_UNITS,)),
        "W": 0.5 * jax.random.normal(k1, (HIDDEN_UNITS, PIXELS)),
        "c": 0.01 * jax.random.normal(k4, (PIXELS,)),
        "V": 0.01 * jax.random.normal(k2, (PIXELS, HIDDEN_UNITS)),
        "d": jnp.zeros(HIDDEN_UNITS),
        "baseline": {"w": jnp.zeros(PIXELS), "b": jnp.zeros(())},
    }


def sbn_model(params, x):
    with ppl.plate("units", HIDDEN_UNITS):
        h = ppl.sample("h", dist.Bernoulli(logits=params["b"]))
    ppl.sample("x", dist.Bernoulli(logits=h @ params["W"] + params["c"]).to_event(1), obs=x)


def sbn_guide(grad):
    def guide(params, x):
        baseline = x @ params["baseline"]["w"] + params["baseline"]["b"]
        spec = ppl.vi.reinforce(baseline=baseline) if grad == "baseline" else grad
        with ppl.plate("units", HIDDEN_UNITS):
            ppl.sample("h", dist.Bernoulli(logits=x @ params["V"] + params["d"]), infer={"grad": spec})

    return guide


def sbn_exact(params, x):
    log_prior = jnp.sum(
        STATES * jax.nn.log_sigmoid(params["b"]) + (1 - STATES) * jax.nn.log_sigmoid(-params["b"]), 1
    )
    log_lik = jax.vmap(lambda h: bernoulli_log_lik(h @ params["W"] + params["c"], x))(STATES)  # (256, batch)
    log_joint = log_prior[:, None] + log_lik
    logits = x @ params["V"] + params["d"]  # (batch, H)
    log_q = STATES @ jax.nn.log_sigmoid(logits).T + (1 - STATES) @ jax.nn.log_sigmoid(-logits).T
    return logsumexp(log_joint, axis=0), jnp.sum(jnp.exp(log_q) * (log_joint - log_q), axis=0)


MODELS = {
    "bernoulli_mixture": (mixture_model, mixture_guide, mixture_init, mixture_exact),
    "sigmoid_belief_net": (sbn_model, sbn_guide, sbn_init, sbn_exact),
}
ESTIMATORS = ("enum", "reinforce", "baseline", "mvd", "vimco5")


def objective_for(model, guide_factory, estimator):
    if estimator == "vimco5":
        per_datum = ppl.vi.objectives.vimco(model, guide_factory("reinforce"), 5)
    else:
        per_datum = ppl.vi.objectives.elbo(model, guide_factory(estimator))
    return ppl.vi.mean_over_data(per_datum)


def without_baseline(tree):
    return {k: v for k, v in tree.items() if k != "baseline"}


def bias_and_variance(objective, exact_objective, params, x, num=2000):
    keys = jax.random.split(jax.random.key(1), num)
    grads = jax.jit(jax.vmap(objective.grad_estimate, (0, None, None)))(keys, params, x)
    flat = jax.vmap(lambda g: jax.flatten_util.ravel_pytree(without_baseline(g))[0])(grads)
    exact = jax.flatten_util.ravel_pytree(without_baseline(jax.grad(exact_objective)(params, x)))[0]
    mean, var = flat.mean(0), flat.var(0, ddof=1)
    # Standard errors are floored at float32 resolution: a coordinate whose 2000 draws
    # are identical (a zero-variance estimator, or a near-deterministic guide) compares
    # to rounding error, not to 0.
    se = jnp.maximum(jnp.sqrt(var / num), 1e-5 * (1.0 + jnp.abs(exact)))
    return {
        "relative_error_of_mean": float(jnp.linalg.norm(mean - exact) / jnp.linalg.norm(exact)),
        "max_abs_z": float(jnp.max(jnp.abs(mean - exact) / se)),
        "total_variance": float(jnp.sum(var)),
    }


def train_gap(objective, exact, params, train_x, test_x, steps):
    result = ppl.vi.fit(
        objective,
        params,
        train_x,
        optimizer=OPTIMIZER,
        steps=steps,
        key=jax.random.key(3),
        num_samples=1,
        batch_size=100,
    )
    log_p, elbo = exact(result.params, test_x)
    return result.params, {
        "test_elbo_gap": float(jnp.mean(log_p - elbo)),
        "test_log_p": float(jnp.mean(log_p)),
        "test_elbo": float(jnp.mean(elbo)),
    }


# ------------------------------------------------------------------ Rao-Blackwellisation
# mu ~ N(0, 1), z_i ~ Bernoulli(1/2), x_i ~ N(mu + 2 z_i, 1), i < N;
# guide mu ~ N(m, exp(log_s)) (reparameterised), z_i ~ Bernoulli(sigmoid(a_i)).
PLATE_SIZE = 100


def plate_data(key):
    z = jax.random.bernoulli(key, 0.5, (PLATE_SIZE,))
    return 0.7 + 2.0 * z + jax.random.normal(jax.random.fold_in(key, 1), (PLATE_SIZE,))


def plate_model(params, x):
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    with ppl.plate("data", x.shape[0]):
        z = ppl.sample("z", dist.Bernoulli(0.5))
        ppl.sample("x", dist.Normal(mu + 2.0 * z, 1.0), obs=x)


def plate_guide(params, x):
    ppl.sample("mu", dist.Normal(params["m"], jnp.exp(params["log_s"])))
    with ppl.plate("data", x.shape[0]):
        ppl.sample("z", dist.Bernoulli(logits=params["a"]), infer={"grad": ppl.vi.reinforce()})


def plate_model_numpyro(x):
    plate_model({}, x)


def numpyro_plate_guide(x):
    m = numpyro.param("m", 0.0)
    log_s = numpyro.param("log_s", 0.0)
    a = numpyro.param("a", jnp.zeros(x.shape[0]))
    plate_guide({"m": m, "log_s": log_s, "a": a}, x)


def whole_value_elbo(model, guide):
    """Today's estimator: every score term multiplies the whole log weight."""

    @ppl.vi.expectation
    def objective(params, *args):
        values, log_q = ppl.vi.sim(guide, params, *args)
        return ppl.vi.density(model, values, params, *args) - log_q

    return objective


def total_variance(grad_fn, params, x, num=2000):
    keys = jax.random.split(jax.random.key(5), num)
    grads = jax.jit(jax.vmap(grad_fn, (0, None, None)))(keys, params, x)
    flat = jax.vmap(lambda g: jax.flatten_util.ravel_pytree(without_baseline(g))[0])(grads)
    return float(jnp.sum(flat.var(0, ddof=1)))


def rao_blackwell_rows(test_x):
    """Total gradient variance, whole value vs Rao-Blackwellised (vs TraceGraph_ELBO)."""
    x = plate_data(jax.random.key(4))
    params = {"m": jnp.array(0.5), "log_s": jnp.array(-1.0), "a": 0.3 * jnp.sign(x - 1.7)}
    trace_graph = numpyro.infer.TraceGraph_ELBO()

    def numpyro_grad(key, params, x):
        return jax.grad(lambda p: -trace_graph.loss(key, p, plate_model_numpyro, numpyro_plate_guide, x))(
            params
        )

    rows = {
        "plate_100": {
            "whole_value": total_variance(
                whole_value_elbo(plate_model, plate_guide).grad_estimate, params, x
            ),
            "rao_blackwell": total_variance(
                ppl.vi.objectives.elbo(plate_model, plate_guide).grad_estimate, params, x
            ),
            "numpyro_trace_graph": total_variance(numpyro_grad, params, x),
        }
    }
    for model_name, (model, guide_factory, init, _) in MODELS.items():
        guide = guide_factory("reinforce")
        rb, whole = (
            ppl.vi.mean_over_data(objective)
            for objective in (ppl.vi.objectives.elbo(model, guide), whole_value_elbo(model, guide))
        )
        point = init(jax.random.key(0))
        rows[model_name] = {
            "whole_value": total_variance(whole.grad_estimate, point, test_x[:100]),
            "rao_blackwell": total_variance(rb.grad_estimate, point, test_x[:100]),
        }
    for name, row in rows.items():
        print("rao_blackwell", name, row, flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rao-blackwell", action="store_true", help="only the Rao-Blackwellisation rows")
    args = parser.parse_args()
    steps = 200 if args.quick else 3000
    train_x, test_x = digits()
    path = os.path.join(
        os.path.dirname(__file__),
        "results",
        "vi_estimators_quick.json" if args.quick else "vi_estimators.json",
    )
    if args.rao_blackwell:
        with open(path) as f:
            out = json.load(f)
        out["rao_blackwell"] = rao_blackwell_rows(test_x)
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
        return
    out = {"train_steps": steps, "models": {}}
    for model_name, (model, guide_factory, init, exact) in MODELS.items():
        params = init(jax.random.key(0))

        def exact_elbo(p, x, exact=exact):
            return jnp.mean(exact(p, x)[1])

        rows, trained = {}, {}
        for estimator in ESTIMATORS:
            objective = objective_for(model, guide_factory, estimator)
            start = time.perf_counter()
            trained[estimator], rows[estimator] = train_gap(objective, exact, params, train_x, test_x, steps)
            rows[estimator]["train_seconds_with_compile"] = time.perf_counter() - start
        # Bias and variance at one realistic point for every estimator: the parameters
        # (and fitted baseline) reached by the learned-baseline run.
        point = trained["baseline"]
        for estimator in ESTIMATORS[:-1]:
            objective = objective_for(model, guide_factory, estimator)
            rows[estimator].update(bias_and_variance(objective, exact_elbo, point, test_x[:100]))
        for estimator, row in rows.items():
            print(model_name, estimator, row, flush=True)
        out["models"][model_name] = rows
    out["rao_blackwell"] = rao_blackwell_rows(test_x)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
