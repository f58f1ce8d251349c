"""A variational autoencoder on binarised 8x8 digits with ppl.vi (ELBO or IWAE).

Data ship with scikit-learn (no download). The model is written for a batch of images
in a data plate scaled by 1/B, as in NumPyro; the IWAE bound is taken per image
(``iwae(..., plate="images")``) on one batched tensor; ``ppl.vi.fit`` draws the
minibatches. Reports the test -ELBO and the IWAE-1000 bound in nats per image
(independent pixels: 25.21) and saves reconstructions.

    python examples/vae_digits.py [--quick] [--objective elbo|iwae] [--out DIR]
"""

import argparse
import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from numpyro import handlers
from sklearn.datasets import load_digits

import ppl
from ppl import dist

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LATENT, HIDDEN, PIXELS = 8, 64, 64


def mlp_init(key, sizes):
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (i, o)) / np.sqrt(i), "b": jnp.zeros(o)}
        for k, i, o in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp(layers, x):
    for layer in layers[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]


def model(params, images):
    with ppl.plate("images", images.shape[0]), handlers.scale(scale=1.0 / images.shape[0]):
        z = ppl.sample("z", dist.Normal(jnp.zeros(LATENT), 1.0).to_event(1))
        ppl.sample("image", dist.Bernoulli(logits=mlp(params["decoder"], z)).to_event(1), obs=images)


def guide(params, images):
    out = mlp(params["encoder"], images)
    with ppl.plate("images", images.shape[0]), handlers.scale(scale=1.0 / images.shape[0]):
        ppl.sample("z", dist.Normal(out[:, :LATENT], jnp.exp(0.5 * out[:, LATENT:])).to_event(1))


# Means over the batch (the plate's scale 1/B): the ELBO, and the IWAE bound per image.
TEST_ELBO = ppl.vi.objectives.elbo(model, guide)
TEST_IWAE = ppl.vi.objectives.iwae(model, guide, 1000, plate="images")


@jax.jit
def test_bounds(params, images, key):
    """-ELBO and -IWAE(1000) in nats per image (one estimate per image)."""
    elbo_key, iwae_key = jax.random.split(key)
    return -TEST_ELBO.estimate(elbo_key, params, images), -TEST_IWAE.estimate(iwae_key, params, images)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--objective", choices=["elbo", "iwae"], default="elbo")
    parser.add_argument("--out", default=".")
    args = parser.parse_args()
    images = (load_digits().data >= 8).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(images))
    train, test = jnp.asarray(images[order[:1500]]), jnp.asarray(images[order[1500:]])

    dec_key, enc_key = jax.random.split(jax.random.key(0))
    params = {
        "decoder": mlp_init(dec_key, [LATENT, HIDDEN, HIDDEN, PIXELS]),
        "encoder": mlp_init(enc_key, [PIXELS, HIDDEN, 2 * LATENT]),
    }
    objective = (
        ppl.vi.objectives.elbo(model, guide)
        if args.objective == "elbo"
        else ppl.vi.objectives.iwae(model, guide, 5, plate="images")
    )
    steps = 300 if args.quick else 10_000
    result = ppl.vi.fit(
        objective,
        params,
        train,
        optimizer=optax.adam(1e-3),
        steps=steps,
        key=jax.random.key(1),
        batch_size=100,
    )
    neg_elbo, neg_iwae = test_bounds(result.params, test, jax.random.key(2))
    print(
        f"objective {args.objective}, {steps} steps: train objective (last 100 steps) "
        f"{float(np.mean(result.objective[-100:])):.2f}"
    )
    print(
        f"test -ELBO {float(neg_elbo):.2f} nats/image, test -IWAE(1000) {float(neg_iwae):.2f} "
        "(independent pixels: 25.21)"
    )

    codes = jax.vmap(lambda image: mlp(result.params["encoder"], image)[:LATENT])(test[:8])
    recon = jax.nn.sigmoid(jax.vmap(lambda z: mlp(result.params["decoder"], z))(codes))
    fig, axes = plt.subplots(2, 8, figsize=(8, 2))
    for i in range(8):
        axes[0, i].imshow(test[i].reshape(8, 8), cmap="gray_r")
        axes[1, i].imshow(recon[i].reshape(8, 8), cmap="gray_r")
        axes[0, i].axis("off")
        axes[1, i].axis("off")
    path = os.path.join(args.out, "vae_digits.png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
