"""VAE on binarised 8x8 digits: ppl vs a hand-written JAX loss vs NumPyro SVI.

Data: scikit-learn's bundled digits (1797 x 64), binarised at >= 8, shuffled with
``numpy.random.default_rng(0)``; the first 1500 images train, the other 297 test.
Model: z ~ N(0, I_8), x ~ Bernoulli(logits = MLP(z)) (8 -> 64 -> 64 -> 64, tanh);
guide: z ~ N(mu(x), sigma(x)) with an MLP 64 -> 64 -> 16. The three systems share
the MLP code and the initial parameters, and use Adam(1e-3).

- hand-written: the reparameterised ELBO written by hand, ``jax.value_and_grad``;
- ppl: ``ppl.vi.objectives.elbo(model, guide)`` and ``iwae(model, guide, 5, plate="batch")``
  on the model written in a data plate scaled by 1/B (the bound per image, on one batched
  tensor);
- NumPyro: ``SVI(model, guide, Trace_ELBO())`` (and ``RenyiELBO(alpha=0, num_particles=5)``,
  its model unscaled: RenyiELBO would temper the bound by a scale inside the plate)
  with the same model in a plate.

Reported: ms per training step after compile (median of interleaved repeats) at batch
64 and 1024, compile time, and after training, the test -ELBO and the IWAE-1000 bound
(nats per image), both computed by one evaluator (hand-written JAX).

    python benchmarks/vi.py [--quick]
"""

import argparse
import json
import os
import time

# Compile times are measured from scratch: no persistent cache for any system (ppl turns
# JAX's on at import, which would serve the hand-written and NumPyro programs from disk).
os.environ.setdefault("PPL_COMPILATION_CACHE", "0")

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from jax.scipy.special import logsumexp
from numpyro import handlers
from numpyro.infer import SVI, RenyiELBO, Trace_ELBO
from sklearn.datasets import load_digits

import ppl
from ppl import dist

LATENT, HIDDEN, PIXELS = 8, 64, 64


def digits():
    images = (load_digits().data >= 8).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(images))
    return jnp.asarray(images[order[:1500]]), jnp.asarray(images[order[1500:]])


def init_mlp(key, sizes):
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (fan_in, fan_out)) / np.sqrt(fan_in), "b": jnp.zeros(fan_out)}
        for k, fan_in, fan_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp(layers, x):
    for layer in layers[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]


def init_params(key):
    dec_key, enc_key = jax.random.split(key)
    return {
        "decoder": init_mlp(dec_key, [LATENT, HIDDEN, HIDDEN, PIXELS]),
        "encoder": init_mlp(enc_key, [PIXELS, HIDDEN, 2 * LATENT]),
    }


def encode(params, x):
    out = mlp(params["encoder"], x)
    return out[..., :LATENT], jnp.exp(0.5 * out[..., LATENT:])


# ---------------------------------------------------------------- hand-written JAX


def log_weights(params, x, key, num_particles):
    """log p(x, z_k) - log q(z_k | x), (num_particles, batch)."""
    loc, scale = encode(params, x)
    eps = jax.random.normal(key, (num_particles, *loc.shape))
    z = loc + scale * eps
    logits = mlp(params["decoder"], z)
    log_lik = -jnp.sum(jnp.logaddexp(0.0, jnp.where(x > 0.5, -logits, logits)), axis=-1)
    log_prior = jnp.sum(-0.5 * z**2 - 0.5 * jnp.log(2 * jnp.pi), axis=-1)
    log_q = jnp.sum(-0.5 * eps**2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi), axis=-1)
    return log_lik + log_prior - log_q


def hand_loss(params, x, key, num_particles=1):
    log_w = log_weights(params, x, key, num_particles)
    return -jnp.mean(logsumexp(log_w, axis=0) - jnp.log(num_particles))


@jax.jit
def evaluate(params, x, key):
    """Test -ELBO and -IWAE-1000 (nats per image), the common evaluator."""
    elbo = -hand_loss(params, x, key)
    chunks = [log_weights(params, x, jax.random.fold_in(key, i), 100) for i in range(10)]
    log_w = jnp.concatenate(chunks)
    iwae = jnp.mean(logsumexp(log_w, axis=0) - jnp.log(1000))
    return -elbo, -iwae


# ---------------------------------------------------------------- ppl


def vae_model(params, x):
    """The model of a batch: every site in the data plate, scaled to the batch mean."""
    with ppl.plate("batch", x.shape[0]), handlers.scale(scale=1.0 / x.shape[0]):
        z = ppl.sample("z", dist.Normal(jnp.zeros(LATENT), 1.0).to_event(1))
        ppl.sample("x", dist.Bernoulli(logits=mlp(params["decoder"], z)).to_event(1), obs=x)


def vae_guide(params, x):
    loc, scale = encode(params, x)
    with ppl.plate("batch", x.shape[0]), handlers.scale(scale=1.0 / x.shape[0]):
        ppl.sample("z", dist.Normal(loc, scale).to_event(1))


PPL_OBJECTIVES = {
    "elbo": ppl.vi.objectives.elbo(vae_model, vae_guide),
    # The bound per image (log-mean-exp over particles for each element of the plate).
    "iwae5": ppl.vi.objectives.iwae(vae_model, vae_guide, 5, plate="batch"),
}

# ---------------------------------------------------------------- NumPyro


def flat_names(params):
    return {
        f"{net}_{i}_{k}": v for net in params for i, layer in enumerate(params[net]) for k, v in layer.items()
    }


def unflatten(flat, like):
    return {
        net: [{k: flat[f"{net}_{i}_{k}"] for k in layer} for i, layer in enumerate(like[net])] for net in like
    }


def make_numpyro(init, objective_name):
    def params_from_store():
        return unflatten({name: numpyro.param(name, value) for name, value in flat_names(init).items()}, init)

    # RenyiELBO keeps a handlers.scale inside its log-mean-exp (a tempered bound), so its
    # model is unscaled: the loss is the batch sum, the same Adam steps up to Adam's eps.
    def batch_scale(x):
        return 1.0 / x.shape[0] if objective_name == "elbo" else 1.0

    def model(x):
        params = params_from_store()
        with numpyro.plate("batch", x.shape[0]), handlers.scale(scale=batch_scale(x)):
            z = numpyro.sample("z", dist.Normal(jnp.zeros(LATENT), 1.0).to_event(1))
            numpyro.sample("x", dist.Bernoulli(logits=mlp(params["decoder"], z)).to_event(1), obs=x)

    def guide(x):
        params = params_from_store()
        loc, scale = encode(params, x)
        with numpyro.plate("batch", x.shape[0]), handlers.scale(scale=batch_scale(x)):
            numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return model, guide


# ---------------------------------------------------------------- steps


def make_steps(init, objective_name):
    optimizer = optax.adam(1e-3)
    num_particles = 1 if objective_name == "elbo" else 5

    @jax.jit
    def hand_step(state, x, key):
        params, opt_state = state
        loss, grads = jax.value_and_grad(hand_loss)(params, x, key, num_particles)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    objective = PPL_OBJECTIVES[objective_name]

    @jax.jit
    def ppl_step(state, x, key):
        params, opt_state = state
        value, grads = objective.value_and_grad_estimate(key, params, x)
        updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, grads), opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), -value

    model, guide = make_numpyro(init, objective_name)
    loss = Trace_ELBO() if objective_name == "elbo" else RenyiELBO(alpha=0.0, num_particles=5)
    svi = SVI(model, guide, optimizer, loss=loss)

    def numpyro_step(state, x, key):
        return svi.update(state, x)

    states = {
        "hand": (init, optimizer.init(init)),
        "ppl": (init, optimizer.init(init)),
        "numpyro": svi.init(jax.random.key(0), jnp.zeros((64, PIXELS))),
    }
    steps = {"hand": hand_step, "ppl": ppl_step, "numpyro": numpyro_step}
    get_params = {
        "hand": lambda s: s[0],
        "ppl": lambda s: s[0],
        "numpyro": lambda s: unflatten(svi.get_params(s), init),
    }
    return steps, states, get_params


def time_steps(steps, states, train, batch_size, repeats, num_steps):
    """Compile time and median ms per step of ``num_steps`` steps run inside one jitted
    ``lax.scan`` per system (no Python dispatch per step), interleaving the systems."""
    index = jax.random.randint(jax.random.key(0), (num_steps, batch_size), 0, train.shape[0])
    batches = train[index]
    keys = jax.random.split(jax.random.key(1), num_steps)
    runners = {
        name: jax.jit(
            lambda state, batches, keys, step=step: jax.lax.scan(
                lambda s, xs: step(s, xs[0], xs[1]), state, (batches, keys)
            )
        )
        for name, step in steps.items()
    }
    compile_s, per_step = {}, {name: [] for name in steps}
    for name, run in runners.items():
        start = time.perf_counter()
        jax.block_until_ready(run(states[name], batches, keys))
        compile_s[name] = time.perf_counter() - start
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            jax.block_until_ready(run(states[name], batches, keys))
            per_step[name].append(1000 * (time.perf_counter() - start) / num_steps)
    return compile_s, {name: float(np.median(v)) for name, v in per_step.items()}


def train(steps, states, get_params, train_x, test_x, num_steps, batch_size=100):
    """Train each system for ``num_steps`` minibatch steps (one jitted scan), then score
    it with the common evaluator."""
    index = jax.vmap(lambda k: jax.random.choice(k, train_x.shape[0], (batch_size,), replace=False))(
        jax.random.split(jax.random.key(10_000), num_steps)
    )
    keys = jax.random.split(jax.random.key(20_000), num_steps)
    results = {}
    for name, step in steps.items():
        start = time.perf_counter()
        run = jax.jit(
            lambda state, index, keys, step=step: jax.lax.scan(
                lambda s, xs: step(s, train_x[xs[0]], xs[1]), state, (index, keys)
            )[0]
        )
        state = jax.block_until_ready(run(states[name], index, keys))
        neg_elbo, neg_iwae = evaluate(get_params[name](state), test_x, jax.random.key(7))
        results[name] = {
            "test_neg_elbo": float(neg_elbo),
            "test_neg_iwae1000": float(neg_iwae),
            "train_seconds_with_compile": time.perf_counter() - start,
        }
        print(name, results[name], flush=True)
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    train_x, test_x = digits()
    init = init_params(jax.random.key(0))
    num_train = 300 if args.quick else 10_000
    repeats, num_timed = (1, 20) if args.quick else (5, 200)
    out = {"jax": jax.__version__, "numpyro": numpyro.__version__, "train_steps": num_train, "objectives": {}}
    for objective_name in ("elbo", "iwae5"):
        steps, states, get_params = make_steps(init, objective_name)
        timing = {}
        for batch_size in (64, 1024):
            compile_s, ms = time_steps(steps, states, train_x, batch_size, repeats, num_timed)
            timing[batch_size] = {"compile_s": compile_s, "ms_per_step": ms}
            print(objective_name, batch_size, timing[batch_size], flush=True)
        quality = train(steps, states, get_params, train_x, test_x, num_train)
        out["objectives"][objective_name] = {"timing": timing, "quality": quality}
    path = os.path.join(os.path.dirname(__file__), "results", "vi_quick.json" if args.quick else "vi.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    for objective_name, row in out["objectives"].items():
        for batch_size, t in row["timing"].items():
            ms = t["ms_per_step"]
            print(
                f"{objective_name} batch {batch_size}: ppl {ms['ppl']:.3f} ms, hand {ms['hand']:.3f} ms "
                f"({ms['ppl'] / ms['hand']:.2f}x), numpyro {ms['numpyro']:.3f} ms "
                f"({ms['ppl'] / ms['numpyro']:.2f}x)"
            )


if __name__ == "__main__":
    main()
