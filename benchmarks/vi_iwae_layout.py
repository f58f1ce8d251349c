"""Where the IWAE time goes: one batched tensor vs an objective written per image.

The VAE of ``benchmarks/vi.py``; the gradient of the IWAE(5) loss at batch 1024 written
five ways: ppl on the plated model (``iwae(.., plate="batch")``, one batched tensor), ppl
per image averaged with ``mean_over_data``, the hand-written
loss on one (K, B, latent) noise tensor, the same hand-written loss written per image
and vmapped over images (own key per image), and per image with all noise drawn at once.
Median ms per gradient over interleaved repeats, after compile.

    python benchmarks/vi_iwae_layout.py
"""

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

import ppl

sys.path.insert(0, os.path.dirname(__file__))
import vi as vae  # noqa: E402

PARTICLES, BATCH = 5, 1024


def per_image(params, image, eps):
    loc, scale = vae.encode(params, image)
    z = loc + scale * eps
    logits = vae.mlp(params["decoder"], z)
    log_lik = -jnp.sum(jnp.logaddexp(0.0, jnp.where(image > 0.5, -logits, logits)), axis=-1)
    log_prior = jnp.sum(-0.5 * z**2 - 0.5 * jnp.log(2 * jnp.pi), -1)
    log_q = jnp.sum(-0.5 * eps**2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi), -1)
    return logsumexp(log_lik + log_prior - log_q) - jnp.log(PARTICLES)


def per_image_keys(params, images, key):
    def one(image, key):
        eps = jax.random.normal(key, (PARTICLES, vae.LATENT))
        return per_image(params, image, eps)

    return -jnp.mean(jax.vmap(one)(images, jax.random.split(key, images.shape[0])))


def per_image_one_draw(params, images, key):
    eps = jax.random.normal(key, (images.shape[0], PARTICLES, vae.LATENT))
    return -jnp.mean(jax.vmap(per_image, (None, 0, 0))(params, images, eps))


def image_model(params, x):
    """One image (no plate), for the per-datum layout ``mean_over_data``."""
    z = ppl.sample("z", ppl.dist.Normal(jnp.zeros(vae.LATENT), 1.0).to_event(1))
    ppl.sample("x", ppl.dist.Bernoulli(logits=vae.mlp(params["decoder"], z)).to_event(1), obs=x)


def image_guide(params, x):
    loc, scale = vae.encode(params, x)
    ppl.sample("z", ppl.dist.Normal(loc, scale).to_event(1))


def main():
    train, _ = vae.digits()
    params, images, key = vae.init_params(jax.random.key(0)), train[:BATCH], jax.random.key(0)
    plated = vae.PPL_OBJECTIVES["iwae5"]
    per_image = ppl.vi.mean_over_data(ppl.vi.objectives.iwae(image_model, image_guide, PARTICLES))
    layouts = {
        "ppl_plate": lambda k, p, x: plated.value_and_grad_estimate(k, p, x),
        "ppl_mean_over_data": lambda k, p, x: per_image.value_and_grad_estimate(k, p, x),
        "hand_one_tensor": lambda k, p, x: jax.value_and_grad(vae.hand_loss)(p, x, k, PARTICLES),
        "hand_per_image_vmap": lambda k, p, x: jax.value_and_grad(per_image_keys)(p, x, k),
        "hand_per_image_one_draw": lambda k, p, x: jax.value_and_grad(per_image_one_draw)(p, x, k),
    }
    compiled = {name: jax.jit(fn) for name, fn in layouts.items()}
    for fn in compiled.values():
        jax.block_until_ready(fn(key, params, images))
    times = {name: [] for name in compiled}
    for _ in range(5):
        for name, fn in compiled.items():
            start = time.perf_counter()
            for _ in range(20):
                out = fn(key, params, images)
            jax.block_until_ready(out)
            times[name].append(1000 * (time.perf_counter() - start) / 20)
    result = {name: float(np.median(t)) for name, t in times.items()}
    for name, ms in result.items():
        print(f"{name:<26} {ms:7.2f} ms")
    with open(os.path.join(os.path.dirname(__file__), "results", "vi_iwae_layout.json"), "w") as f:
        json.dump({"batch": BATCH, "particles": PARTICLES, "ms_per_gradient": result}, f, indent=1)


if __name__ == "__main__":
    main()
