"""Baselines for few-shot meta-learning: MAML, pretrain + fine-tune, and ProtoNet.

Each factory returns a :class:`~ppl.meta.training.MetaLearner`, trained by
:func:`ppl.meta.training.train` in the same harness, on the same episodes and with the
same :class:`~ppl.meta.networks.Network` as the hierarchical NIW method, and predicting
the same :class:`~ppl.meta.predictive.RegressionPrediction` /
:class:`~ppl.meta.predictive.ClassPrediction` types. The meta-parameters are the pytree
``{"net": network_params}``, plus a scalar ``"log_noise"`` for regression (unless a fixed
``noise`` is given).

* :func:`maml` (Finn et al., 2017): the inner loop takes ``inner_steps`` plain SGD steps
  of learning rate ``inner_lr`` on the support loss, starting from the meta-parameters;
  the outer loss is the query loss at the adapted parameters, differentiated through the
  inner loop (second order; ``first_order=True`` stops the gradient of the inner
  gradients, i.e. first-order MAML). Losses are MAML's: the mean squared error for
  regression and the mean cross-entropy for classification. MAML's sinusoid setup is
  ``mlp([1, 40, 40, 1])``, ``inner_lr=0.01``, one inner step, Adam with learning rate
  ``1e-3`` for the outer loop, 10 shots and 25 episodes per meta-step.
* :func:`pretrain_finetune`: one network trained by plain loss minimisation on the
  pooled support and query points of every episode (the per-episode loss is the mean
  loss over all its points; the same MSE / cross-entropy), then fine-tuned at test time
  on each episode's support set with ``finetune_steps`` SGD steps of learning rate
  ``finetune_lr``, and predicting like MAML.
* :func:`protonet` (Snell et al., 2017): the network's output is an embedding; the
  prototypes are the class means of the support embeddings, the logits of a query point
  are minus its squared Euclidean distances to the prototypes, and the loss is the query
  cross-entropy. Classification only.

**Observation noise (regression).** MAML and fine-tuning give a point prediction and no
noise model; the prediction is ``RegressionPrediction(means (E, 1, Q), noise)`` with one
global noise standard deviation ``exp(log_noise)``. ``log_noise`` (starting at 0) is
fitted during meta-training by a separate term added to the objective: the mean Gaussian
negative log-likelihood of the query labels at the *adapted* (MAML) or *fine-tuned*
(pretrain + fine-tune) network's predictions, with ``stop_gradient`` on those
predictions. So the network's meta-gradient is exactly that of the method's own loss,
and the noise is the maximum-likelihood noise of the query residuals after adaptation
(the quantity that matters at test time). With a fixed ``noise`` there is no
``log_noise`` parameter. The loss reported per step (``StepInfo.loss``) is the method's
own loss (query MSE for MAML; pooled MSE for pretrain + fine-tune), without the noise
term.

**Classification with pretrain + fine-tune.** Episode labels are ``0 .. ways - 1`` in a
random order per episode (and the test classes are held out), so the pretrained head's
classes mean nothing on a new episode: pooled training can only learn features, and
fine-tuning on the support set must fit the head. This is expected of this baseline.

Example:
    >>> import jax, optax
    >>> from ppl.meta import baselines, episodes, networks, training
    >>> learner = baselines.maml(networks.mlp([1, 8, 1]), optimizer=optax.adam(1e-3))
    >>> source = episodes.sinusoid(5, 10)
    >>> result = training.train(learner, source, steps=2, num_episodes=2, key=jax.random.key(0))
    >>> batch = episodes.sample_episodes(source, jax.random.key(1), 3)
    >>> result.predict(jax.random.key(2), batch).means.shape
    (3, 1, 10)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ppl.meta import networks
from ppl.meta.episodes import Episodes
from ppl.meta.predictive import ClassPrediction, RegressionPrediction
from ppl.meta.training import MetaLearner, apply_gradient, episode_mean, init_state

__all__ = ["maml", "pretrain_finetune", "protonet"]


# --- Argument checks -------------------------------------------------------------------


def _check_int(method: str, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{method}: {name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{method}: {name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _check_positive(method: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{method}: {name} must be a finite number > 0, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{method}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_network(method: str, network) -> networks.Network:
    if not (callable(getattr(network, "init", None)) and callable(getattr(network, "apply", None))):
        raise ValueError(
            f"{method}: network must be a ppl.meta.networks.Network (init, apply), got {network!r}"
        )
    return network


def _check_optimizer(method: str, optimizer) -> optax.GradientTransformation:
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise ValueError(f"{method}: optimizer must be an optax.GradientTransformation, got {optimizer!r}")
    return optimizer


def _check_likelihood(method: str, likelihood, num_classes) -> tuple[bool, int | None]:
    """``(classification, num_classes)`` for a known likelihood, or a ValueError."""
    try:
        lik = networks.likelihood(likelihood)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{method}: {error}") from None
    if lik.name not in ("gaussian", "categorical"):
        raise ValueError(f"{method}: likelihood must be 'gaussian' or 'categorical', got {lik.name!r}")
    if lik.classification:
        if num_classes is None:
            raise ValueError(f"{method}: classification needs num_classes (the ways of each episode)")
        return True, _check_int(method, "num_classes", num_classes, 2)
    if num_classes is not None:
        raise ValueError(
            f"{method}: num_classes is for classification; got {num_classes!r} with a gaussian likelihood"
        )
    return False, None


def _check_noise(method: str, noise, classification: bool) -> float | None:
    if noise is None:
        return None
    if classification:
        raise ValueError(f"{method}: noise is for regression; got {noise!r} with a categorical likelihood")
    return _check_positive(method, "noise", noise)


# --- Losses ----------------------------------------------------------------------------


def _outputs(network: networks.Network, net_params, x: jax.Array) -> jax.Array:
    """``(N, outputs)``: the network at each of the ``N`` inputs ``x``."""
    return jax.vmap(network.apply, in_axes=(None, 0))(net_params, x)


def _check_outputs(method: str, outputs: jax.Array, classification: bool, num_classes: int | None) -> None:
    """Shapes are static: a wrong output width fails when the learner is traced."""
    expected = (num_classes,) if classification else (1,)
    if outputs.shape[1:] != expected:
        raise ValueError(
            f"{method}: the network must output shape {expected} per input "
            f"({'one logit per class' if classification else 'one regression output'}), "
            f"got {outputs.shape[1:]}"
        )


def _point_loss(classification: bool) -> Callable:
    """``(outputs (N, out), y) -> ()``: mean squared error or mean cross-entropy."""
    if classification:
        return lambda outputs, y: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(outputs, y))
    return lambda outputs, y: jnp.mean(jnp.sum(jnp.square(outputs - y), axis=-1))


def _noise_nll(outputs: jax.Array, y: jax.Array, log_noise: jax.Array) -> jax.Array:
    """Mean Gaussian NLL of ``y`` at ``stop_gradient(outputs)``: a gradient in ``log_noise`` only."""
    residual = jax.lax.stop_gradient(outputs) - y
    return jnp.mean(
        0.5 * jnp.square(residual) * jnp.exp(-2.0 * log_noise) + log_noise + 0.5 * math.log(2 * math.pi)
    )


def _init_params(network: networks.Network, key: jax.Array, learn_noise: bool) -> dict:
    params = {"net": network.init(key)}
    if learn_noise:
        params["log_noise"] = jnp.zeros(())
    return params


def _noise(params: dict, noise: float | None) -> jax.Array:
    return jnp.exp(params["log_noise"]) if noise is None else jnp.asarray(noise)


def _sgd_adapter(
    network: networks.Network, loss: Callable, steps: int, lr: float, first_order: bool
) -> Callable:
    """``(net_params, x, y) -> net_params`` after ``steps`` SGD steps on ``loss`` at ``(x, y)``."""

    def support_loss(net_params, x, y):
        return loss(_outputs(network, net_params, x), y)

    def adapt(net_params, x, y):
        def step(current, _):
            grads = jax.grad(support_loss)(current, x, y)
            if first_order:
                grads = jax.lax.stop_gradient(grads)
            return jax.tree.map(lambda p, g: p - lr * g, current, grads), None

        if steps == 0:
            return net_params
        return jax.lax.scan(step, net_params, None, length=steps)[0]

    return adapt


def _adapted_predict(
    method: str, network: networks.Network, adapt: Callable, classification: bool, num_classes, noise
) -> Callable:
    """``predict(key, params, episodes)``: adapt on each support set, then the network."""

    def one(net_params, episode: Episodes):
        adapted = adapt(net_params, episode.support_x, episode.support_y)
        outputs = _outputs(network, adapted, episode.query_x)
        _check_outputs(method, outputs, classification, num_classes)
        return outputs

    def predict(key, params, episodes: Episodes):
        del key  # deterministic
        outputs = jax.vmap(one, in_axes=(None, 0))(params["net"], episodes)  # (E, Q, out)
        if classification:
            return ClassPrediction(jax.nn.softmax(outputs, axis=-1))
        return RegressionPrediction(means=outputs[:, None, :, 0], noise=_noise(params, noise))

    return predict


def _learner(
    name, network, optimizer, episode_fn, predict, classification, num_classes, learn_noise
) -> MetaLearner:
    """A MetaLearner whose update is one Optax step on the mean of ``episode_fn`` over the batch.

    ``episode_fn(episode, params) -> (objective, reported_loss)``.
    """
    value_and_grad = jax.value_and_grad(lambda params, episode: episode_fn(episode, params), has_aux=True)

    def per_episode(key, episode, params):
        del key
        (_, loss), grads = value_and_grad(params, episode)
        return loss, grads

    def init(key):
        return init_state(_init_params(network, key, learn_noise), optimizer)

    def update(key, state, episodes: Episodes, plan=None):
        loss, grads = episode_mean(per_episode, key, episodes, shared=state.params, plan=plan)
        return apply_gradient(state, loss, grads, optimizer)

    return MetaLearner(name, init, update, predict, classification, num_classes)


# --- MAML ------------------------------------------------------------------------------


def maml(
    network: networks.Network,
    likelihood: str = "gaussian",
    *,
    optimizer: optax.GradientTransformation,
    inner_steps: int = 1,
    inner_lr: float = 0.01,
    first_order: bool = False,
    num_classes: int | None = None,
    noise: float | None = None,
) -> MetaLearner:
    """Model-agnostic meta-learning (Finn et al., 2017) as a :class:`~ppl.meta.training.MetaLearner`.

    Per episode, ``inner_steps`` SGD steps of learning rate ``inner_lr`` on the support
    loss from the meta-parameters, then the loss on the query set at the adapted
    parameters; the meta-gradient differentiates through the inner loop (second order),
    or, with ``first_order=True``, treats the inner gradients as constants (FOMAML).
    Losses: mean squared error (regression), mean cross-entropy (classification).

    Args:
        network: a :class:`~ppl.meta.networks.Network`; one output per input for
            regression, ``num_classes`` logits for classification.
        likelihood: ``"gaussian"`` (regression) or ``"categorical"`` (classification).
        optimizer: the Optax outer optimiser (MAML: ``optax.adam(1e-3)``).
        inner_steps: inner SGD steps, ``>= 1`` (also used at prediction).
        inner_lr: inner learning rate, ``> 0`` (MAML's sinusoid: 0.01).
        first_order: first-order MAML.
        num_classes: ways per episode (required for classification).
        noise: a fixed observation noise std for regression predictions; ``None`` fits
            ``log_noise`` to the adapted query residuals (see the module docstring).

    Returns:
        ``MetaLearner("maml", ...)``. Its ``predict(key, params, episodes)`` adapts on each
        episode's support set and returns ``RegressionPrediction(means (E, 1, Q), noise ())``
        or ``ClassPrediction(probabilities (E, Q, C))``.

    Raises:
        ValueError: for an unknown likelihood, ``inner_steps < 1``, ``inner_lr <= 0``, a
            missing or misplaced ``num_classes`` or ``noise``.

    Example:
        >>> import jax, optax
        >>> from ppl.meta import networks
        >>> learner = maml(networks.mlp([1, 8, 1]), optimizer=optax.adam(1e-3), inner_steps=2)
        >>> state = learner.init(jax.random.key(0))
        >>> sorted(state.params)
        ['log_noise', 'net']
    """
    method = "maml"
    network, optimizer = _check_network(method, network), _check_optimizer(method, optimizer)
    classification, num_classes = _check_likelihood(method, likelihood, num_classes)
    inner_steps = _check_int(method, "inner_steps", inner_steps, 1)
    inner_lr = _check_positive(method, "inner_lr", inner_lr)
    if not isinstance(first_order, bool | np.bool_):
        raise ValueError(f"{method}: first_order must be True or False, got {first_order!r}")
    noise = _check_noise(method, noise, classification)
    learn_noise = not classification and noise is None
    loss = _point_loss(classification)
    adapt = _sgd_adapter(network, loss, inner_steps, inner_lr, bool(first_order))

    def episode_fn(episode: Episodes, params):
        adapted = adapt(params["net"], episode.support_x, episode.support_y)
        outputs = _outputs(network, adapted, episode.query_x)
        _check_outputs(method, outputs, classification, num_classes)
        query_loss = loss(outputs, episode.query_y)
        objective = query_loss + (
            _noise_nll(outputs, episode.query_y, params["log_noise"]) if learn_noise else 0.0
        )
        return objective, query_loss

    predict = _adapted_predict(method, network, adapt, classification, num_classes, noise)
    return _learner(method, network, optimizer, episode_fn, predict, classification, num_classes, learn_noise)


# --- Pretrain + fine-tune --------------------------------------------------------------


def pretrain_finetune(
    network: networks.Network,
    likelihood: str = "gaussian",
    *,
    optimizer: optax.GradientTransformation,
    finetune_steps: int = 10,
    finetune_lr: float = 0.01,
    num_classes: int | None = None,
    noise: float | None = None,
) -> MetaLearner:
    """Pretraining on pooled episodes, then fine-tuning on each support set.

    Meta-training minimises, per episode, the mean loss (MSE or cross-entropy) over all
    its support and query points at one shared network: ordinary training on the pooled
    data. At prediction, ``finetune_steps`` SGD steps of learning rate ``finetune_lr`` on
    each episode's support set, then the network at the query points. ``log_noise`` is
    fitted to the query residuals of the fine-tuned network (``stop_gradient``, as for
    :func:`maml`). For classification the pretrained head means nothing on a new episode
    (labels are per-episode); fine-tuning fits it only partly (module docstring).

    Args:
        network, likelihood, optimizer, num_classes, noise: as for :func:`maml`.
        finetune_steps: fine-tuning SGD steps, ``>= 0`` (0: the pretrained network).
        finetune_lr: fine-tuning learning rate, ``> 0``.

    Returns:
        ``MetaLearner("pretrain_finetune", ...)``, predicting like :func:`maml`.

    Raises:
        ValueError: for an unknown likelihood, ``finetune_steps < 0``, ``finetune_lr <= 0``,
            a missing or misplaced ``num_classes`` or ``noise``.

    Example:
        >>> import jax, optax
        >>> from ppl.meta import networks
        >>> learner = pretrain_finetune(networks.mlp([1, 8, 1]), optimizer=optax.adam(1e-3), finetune_steps=2)
        >>> learner.name
        'pretrain_finetune'
    """
    method = "pretrain_finetune"
    network, optimizer = _check_network(method, network), _check_optimizer(method, optimizer)
    classification, num_classes = _check_likelihood(method, likelihood, num_classes)
    finetune_steps = _check_int(method, "finetune_steps", finetune_steps, 0)
    finetune_lr = _check_positive(method, "finetune_lr", finetune_lr)
    noise = _check_noise(method, noise, classification)
    learn_noise = not classification and noise is None
    loss = _point_loss(classification)
    finetune = _sgd_adapter(network, loss, finetune_steps, finetune_lr, first_order=True)

    def episode_fn(episode: Episodes, params):
        x = jnp.concatenate([episode.support_x, episode.query_x])
        y = jnp.concatenate([episode.support_y, episode.query_y])
        outputs = _outputs(network, params["net"], x)
        _check_outputs(method, outputs, classification, num_classes)
        pooled_loss = loss(outputs, y)
        if not learn_noise:
            return pooled_loss, pooled_loss
        tuned = finetune(jax.lax.stop_gradient(params["net"]), episode.support_x, episode.support_y)
        query_outputs = _outputs(network, tuned, episode.query_x)
        return pooled_loss + _noise_nll(query_outputs, episode.query_y, params["log_noise"]), pooled_loss

    predict = _adapted_predict(method, network, finetune, classification, num_classes, noise)
    return _learner(method, network, optimizer, episode_fn, predict, classification, num_classes, learn_noise)


# --- Prototypical networks -------------------------------------------------------------


def _proto_logits(network: networks.Network, net_params, episode: Episodes, num_classes: int) -> jax.Array:
    """``(Q, C)``: minus the squared distances of the query embeddings to the prototypes.

    A class absent from the support set gets the zero prototype (not NaN).
    """
    support = _outputs(network, net_params, episode.support_x)  # (K, D)
    query = _outputs(network, net_params, episode.query_x)  # (Q, D)
    if support.ndim != 2:
        raise ValueError(
            f"protonet: the network must output a vector embedding per input, got {support.shape[1:]}"
        )
    one_hot = jax.nn.one_hot(episode.support_y, num_classes, dtype=support.dtype)  # (K, C)
    counts = jnp.sum(one_hot, axis=0)
    prototypes = (one_hot.T @ support) / jnp.maximum(counts, 1.0)[:, None]  # (C, D)
    return -jnp.sum(jnp.square(query[:, None, :] - prototypes[None, :, :]), axis=-1)


def protonet(
    network: networks.Network,
    likelihood: str = "categorical",
    *,
    optimizer: optax.GradientTransformation,
    num_classes: int | None = None,
) -> MetaLearner:
    """Prototypical networks (Snell et al., 2017); classification only.

    The network's output ``(D,)`` is the embedding; prototypes are the class means of
    the support embeddings; a query point's logits are minus its squared Euclidean
    distances to the ``num_classes`` prototypes; the loss is the mean query
    cross-entropy.

    Args:
        network: a :class:`~ppl.meta.networks.Network` with vector outputs (embeddings).
        likelihood: must be ``"categorical"`` (accepted for a signature like :func:`maml`'s).
        optimizer: the Optax optimiser.
        num_classes: ways per episode, ``>= 2`` (required).

    Returns:
        ``MetaLearner("protonet", ...)``; ``predict`` returns
        ``ClassPrediction(probabilities (E, Q, C))``, the softmax of the logits.

    Raises:
        ValueError: for a regression likelihood (ProtoNet has no regression variant) or
            without ``num_classes``.

    Example:
        >>> import optax
        >>> from ppl.meta import networks
        >>> protonet(networks.mlp([64, 16, 8]), optimizer=optax.adam(1e-3), num_classes=5).classification
        True
    """
    method = "protonet"
    network, optimizer = _check_network(method, network), _check_optimizer(method, optimizer)
    if (likelihood.name if isinstance(likelihood, networks.Likelihood) else likelihood) != "categorical":
        raise ValueError(
            f"protonet: is classification only (likelihood 'categorical'), got likelihood {likelihood!r}"
        )
    _, num_classes = _check_likelihood(method, likelihood, num_classes)

    def episode_fn(episode: Episodes, params):
        logits = _proto_logits(network, params["net"], episode, num_classes)
        query_loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, episode.query_y))
        return query_loss, query_loss

    def predict(key, params, episodes: Episodes):
        del key
        logits = jax.vmap(lambda episode: _proto_logits(network, params["net"], episode, num_classes))(
            episodes
        )
        return ClassPrediction(jax.nn.softmax(logits, axis=-1))

    return _learner(method, network, optimizer, episode_fn, predict, True, num_classes, False)
