"""The baselines of ``ppl.meta.baselines`` against exact oracles (hand-computed MAML steps,
finite-difference meta-gradients, ProtoNet distances in NumPy) and in the training driver."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ppl.meta import baselines, networks, training
from ppl.meta.episodes import Episodes, EpisodeSource, sample_episodes
from ppl.runtime.devices import plan_devices
from tests.seeds import key, seed


@pytest.fixture
def float64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def linear(w0):
    """``x @ w`` with ``w`` starting at ``w0`` (the MAML oracles are closed forms for it)."""
    return networks.Network(lambda _: {"w": jnp.asarray(w0)}, lambda params, x: x @ params["w"])


def line_sample(k):
    """``y = a x`` with ``a ~ U[1, 2]``, ``x ~ U[-1, 1]``: 5 support and 10 query points."""
    a_key, x_key = jax.random.split(k)
    a = jax.random.uniform(a_key, minval=1.0, maxval=2.0)
    x = jax.random.uniform(x_key, (15, 1), minval=-1.0, maxval=1.0)
    return Episodes(x[:5], a * x[:5], x[5:], a * x[5:])


def blobs_sample(k):
    """2-way classification in the plane: class centres ``+-(1.5, 1.5)`` in a random order."""
    order_key, x_key = jax.random.split(k)
    centres = jnp.array([[1.5, 1.5], [-1.5, -1.5]])[jax.random.permutation(order_key, 2)]
    labels = jnp.array([0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1], dtype=jnp.int32)
    x = centres[labels] + 0.5 * jax.random.normal(x_key, (14, 2))
    return Episodes(x[:6], labels[:6], x[6:], labels[6:])


LINE = EpisodeSource(line_sample, "line")
BLOBS = EpisodeSource(blobs_sample, "blobs", num_classes=2)


# --- MAML against closed forms ---------------------------------------------------------


def mse_grad(w, x, y):
    """Gradient of ``mean((x w - y)^2)`` in ``w``."""
    return 2.0 / len(x) * x.T @ (x @ w - y)


def maml_outer(w, episodes, lr, steps):
    """Mean over episodes of the query MSE after ``steps`` SGD steps (NumPy)."""
    losses = []
    for sx, sy, qx, qy in zip(*episodes, strict=True):
        adapted = w
        for _ in range(steps):
            adapted = adapted - lr * mse_grad(adapted, sx, sy)
        losses.append(np.mean((qx @ adapted - qy) ** 2))
    return np.mean(losses)


def linear_episodes(rng, num=2, shots=4, queries=6, dim=2):
    w_true = rng.normal(size=(num, dim, 1))
    sx, qx = rng.normal(size=(num, shots, dim)), rng.normal(size=(num, queries, dim))
    return Episodes(sx, sx @ w_true, qx, qx @ w_true + 0.1 * rng.normal(size=(num, queries, 1)))


@pytest.mark.parametrize("steps", [1, 2])
def test_maml_adapts_by_sgd_on_the_support_mse(float64, steps):
    rng = np.random.default_rng(seed(0))
    w0 = rng.normal(size=(2, 1))
    episodes = linear_episodes(rng)
    learner = baselines.maml(linear(w0), optimizer=optax.sgd(1.0), inner_steps=steps, inner_lr=0.1, noise=0.5)
    prediction = learner.predict(key(0), learner.init(key(1)).params, jax.tree.map(jnp.asarray, episodes))
    for e in range(2):
        adapted = w0
        for _ in range(steps):
            adapted = adapted - 0.1 * mse_grad(adapted, episodes.support_x[e], episodes.support_y[e])
        np.testing.assert_allclose(prediction.means[e, 0], (episodes.query_x[e] @ adapted)[:, 0], rtol=1e-12)
    assert prediction.means.shape == (2, 1, 6) and float(prediction.noise) == 0.5


@pytest.mark.parametrize("steps", [1, 2])
def test_maml_meta_gradient_matches_finite_differences_and_first_order_does_not(float64, steps):
    rng = np.random.default_rng(seed(1))
    w0 = rng.normal(size=(2, 1))
    episodes = linear_episodes(rng)
    lr, h = 0.3, 1e-6
    numeric = np.zeros_like(w0)
    for i in range(w0.size):
        step = np.zeros_like(w0)
        step.flat[i] = h
        numeric.flat[i] = (
            maml_outer(w0 + step, episodes, lr, steps) - maml_outer(w0 - step, episodes, lr, steps)
        ) / (2 * h)

    def meta_gradient(first_order):
        # SGD with learning rate 1: the parameter change is minus the meta-gradient.
        learner = baselines.maml(
            linear(w0), optimizer=optax.sgd(1.0), inner_steps=steps, inner_lr=lr, first_order=first_order
        )
        state = learner.init(key(0))
        new, info = jax.jit(learner.update)(key(1), state, jax.tree.map(jnp.asarray, episodes))
        assert bool(info.finite)
        np.testing.assert_allclose(info.loss, maml_outer(w0, episodes, lr, steps), rtol=1e-12)
        # log_noise (0 at the start) gets only its Gaussian NLL gradient, 1 - mean(residual^2).
        np.testing.assert_allclose(
            state.params["log_noise"] - new.params["log_noise"], 1 - info.loss, rtol=1e-10
        )
        return np.asarray(state.params["net"]["w"] - new.params["net"]["w"])

    np.testing.assert_allclose(meta_gradient(False), numeric, rtol=1e-6, atol=1e-9)
    # First-order MAML drops the (I - lr H_support) factors: it fails the same check, by a
    # wide margin (relative difference >= 0.03 for one step on 2000 draws of these episodes).
    first_order = meta_gradient(True)
    assert not np.allclose(first_order, numeric, rtol=1e-6, atol=1e-9)
    assert np.max(np.abs(first_order - numeric)) > 1e-3 * np.max(np.abs(numeric))


def test_maml_update_is_the_same_through_a_device_plan():
    learner = baselines.maml(linear(np.ones((1, 1), np.float32)), optimizer=optax.sgd(0.1), noise=1.0)
    episodes = sample_episodes(LINE, key(2), 3)
    state = learner.init(key(0))
    update = jax.jit(learner.update, static_argnums=3)
    plain, _ = update(key(1), state, episodes)
    spread, _ = update(key(1), state, episodes, plan_devices(3))
    np.testing.assert_allclose(plain.params["net"]["w"], spread.params["net"]["w"], rtol=1e-6)


# --- ProtoNet against NumPy ------------------------------------------------------------


def test_protonet_logits_are_minus_squared_distances_to_class_means():
    rng = np.random.default_rng(seed(3))
    sx = rng.normal(size=(1, 6, 3)).astype(np.float32)
    sy = np.array([[0, 1, 2, 0, 1, 2]], np.int32)
    qx = rng.normal(size=(1, 4, 3)).astype(np.float32)
    qy = np.array([[0, 1, 2, 1]], np.int32)
    w = rng.normal(size=(3, 2)).astype(np.float32)
    learner = baselines.protonet(linear(w), optimizer=optax.sgd(1.0), num_classes=3)
    state = learner.init(key(0))
    prediction = jax.jit(learner.predict)(key(1), state.params, Episodes(sx, sy, qx, qy))

    prototypes = np.stack([(sx[0] @ w)[sy[0] == c].mean(axis=0) for c in range(3)])
    logits = -(((qx[0] @ w)[:, None, :] - prototypes[None]) ** 2).sum(-1)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(np.log(prediction.probabilities[0]), log_probs, rtol=1e-4, atol=1e-5)
    _, info = jax.jit(learner.update)(key(2), state, Episodes(sx, sy, qx, qy))
    np.testing.assert_allclose(info.loss, -log_probs[np.arange(4), qy[0]].mean(), rtol=1e-5)


def test_protonet_is_exact_on_a_separable_episode_with_an_identity_embedding():
    rng = np.random.default_rng(seed(4))
    centres = 10.0 * np.eye(3)
    sy, qy = np.repeat(np.arange(3), 2), np.repeat(np.arange(3), 5)
    sx, qx = centres[sy] + rng.normal(size=(6, 3)), centres[qy] + rng.normal(size=(15, 3))
    episodes = Episodes(*(np.asarray(a)[None] for a in (sx, sy.astype(np.int32), qx, qy.astype(np.int32))))
    episodes = episodes._replace(
        support_x=episodes.support_x.astype(np.float32), query_x=episodes.query_x.astype(np.float32)
    )
    learner = baselines.protonet(linear(np.eye(3, dtype=np.float32)), optimizer=optax.sgd(1.0), num_classes=3)
    prediction = learner.predict(key(0), learner.init(key(1)).params, episodes)
    assert prediction.probabilities.shape == (1, 15, 3)
    assert float(prediction.metrics(episodes.query_y)["accuracy"][0]) == 1.0


# --- Training in the driver ------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_maml():
    learner = baselines.maml(networks.mlp([1, 8, 1]), optimizer=optax.adam(1e-2), inner_lr=0.1)
    return training.train(learner, LINE, steps=200, num_episodes=4, key=key(5), progress_bar=False)


def test_maml_loss_decreases_and_noise_is_fitted(trained_maml):
    losses = trained_maml.losses
    assert losses.shape == (200,) and np.all(np.isfinite(losses))
    # On y = a x the adapted query MSE falls by more than 10x (measured about 20x over seeds).
    assert losses[-20:].mean() < 0.25 * losses[:20].mean()
    noise = float(jnp.exp(trained_maml.params["log_noise"]))
    assert noise < 0.5  # from 1 towards the residual scale (about 0.15)
    prediction = trained_maml.predict(key(6), sample_episodes(LINE, key(7), 3))
    assert prediction.means.shape == (3, 1, 10)
    np.testing.assert_allclose(prediction.noise, noise, rtol=1e-6)


@pytest.fixture(scope="module")
def trained_pretrain():
    learner = baselines.pretrain_finetune(
        networks.mlp([1, 8, 1]), optimizer=optax.adam(1e-2), finetune_steps=0
    )
    return training.train(learner, LINE, steps=10, num_episodes=4, key=key(8), progress_bar=False)


def test_pretrain_finetune_with_no_steps_predicts_the_pretrained_network(trained_pretrain):
    assert np.all(np.isfinite(trained_pretrain.losses))
    episodes = sample_episodes(LINE, key(9), 3)
    prediction = trained_pretrain.predict(key(10), episodes)
    net = networks.mlp([1, 8, 1])
    expected = jax.vmap(jax.vmap(net.apply, in_axes=(None, 0)), in_axes=(None, 0))(
        trained_pretrain.params["net"], episodes.query_x
    )
    np.testing.assert_allclose(prediction.means[:, 0], expected[..., 0], rtol=1e-6, atol=1e-6)
    tuned = baselines.pretrain_finetune(net, optimizer=optax.adam(1e-2), finetune_steps=3, finetune_lr=0.1)
    moved = tuned.predict(key(10), trained_pretrain.params, episodes)
    assert np.max(np.abs(moved.means - prediction.means)) > 1e-4


@pytest.mark.parametrize(
    "make",
    [
        lambda: baselines.maml(
            networks.mlp([2, 8, 2]), "categorical", optimizer=optax.adam(1e-2), num_classes=2
        ),
        lambda: baselines.pretrain_finetune(
            networks.mlp([2, 8, 2]),
            "categorical",
            optimizer=optax.adam(1e-2),
            num_classes=2,
            finetune_steps=2,
        ),
        lambda: baselines.protonet(networks.mlp([2, 8, 4]), optimizer=optax.adam(1e-2), num_classes=2),
    ],
    ids=["maml", "pretrain_finetune", "protonet"],
)
def test_classifiers_train_and_predict(make):
    learner = make()
    result = training.train(learner, BLOBS, steps=10, num_episodes=4, key=key(11), progress_bar=False)
    assert result.losses.shape == (10,) and np.all(np.isfinite(result.losses))
    assert sorted(result.params) == ["net"]
    episodes = sample_episodes(BLOBS, key(12), 3)
    prediction = result.predict(key(13), episodes)
    assert prediction.probabilities.shape == (3, 8, 2)
    np.testing.assert_allclose(prediction.probabilities.sum(-1), 1.0, rtol=1e-5)


# --- Errors ----------------------------------------------------------------------------

ADAM = optax.adam(1e-3)
NET = networks.mlp([1, 4, 1])


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: baselines.protonet(NET, "gaussian", optimizer=ADAM, num_classes=2), "classification only"),
        (lambda: baselines.protonet(NET, optimizer=ADAM), "num_classes"),
        (lambda: baselines.maml(NET, optimizer=ADAM, inner_steps=0), "inner_steps"),
        (lambda: baselines.maml(NET, optimizer=ADAM, inner_steps=1.5), "inner_steps"),
        (lambda: baselines.maml(NET, optimizer=ADAM, inner_lr=0.0), "inner_lr"),
        (lambda: baselines.maml(NET, optimizer=ADAM, inner_lr=float("nan")), "inner_lr"),
        (lambda: baselines.maml(NET, "poisson", optimizer=ADAM), "likelihood"),
        (lambda: baselines.maml(NET, "categorical", optimizer=ADAM), "num_classes"),
        (lambda: baselines.maml(NET, optimizer=ADAM, num_classes=3), "num_classes"),
        (lambda: baselines.maml(NET, "categorical", optimizer=ADAM, num_classes=2, noise=1.0), "noise"),
        (lambda: baselines.maml(NET, optimizer=ADAM, noise=-1.0), "noise"),
        (lambda: baselines.maml(NET, optimizer=None), "optimizer"),
        (lambda: baselines.pretrain_finetune(NET, optimizer=ADAM, finetune_steps=-1), "finetune_steps"),
        (lambda: baselines.pretrain_finetune(NET, optimizer=ADAM, finetune_lr=-0.1), "finetune_lr"),
    ],
)
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_network_of_the_wrong_width_raises_when_traced():
    learner = baselines.maml(networks.mlp([1, 4, 3]), optimizer=ADAM)
    with pytest.raises(ValueError, match=r"output shape \(1,\)"):
        jax.eval_shape(learner.update, key(0), learner.init(key(1)), sample_episodes(LINE, key(2), 2))
