"""Neural processes on 1-D GP meta-learning: CNP, latent NP and a martingale-posterior NP (MPNP).

**Tasks** (:func:`gp_tasks`, :func:`sample_tasks`; the generator of MPNP's data pipeline,
ported into the authors' NPF code from juho-lee/bnp): per task ``x ~ U(-2, 2)`` at
:data:`MAX_POINTS` = 50 slots, ``num_context ~ U{3..47}``, ``num_extra ~ U{3..50 - num_context}``;
``f ~ GP(0, k)`` with one of::

    rbf        s^2 exp(-d^2 / (2 l^2))
    matern52   s^2 (1 + sqrt5 r + 5 r^2 / 3) exp(-sqrt5 r),   r = |d| / l
    periodic   s^2 exp(-2 sin^2(pi |d| / p) / l^2)

``l ~ U(0.1, 0.6)``, ``s ~ U(0.1, 1.0)``, ``p ~ U(0.1, 0.5)``, and
``y ~ N(0, K + sigma_eps^2 I)`` with ``sigma_eps`` = :data:`NOISE_STD` = 0.02. With
``noise="student_t"``, ``y += tau * t_2.1`` with ``tau = 0.15 U(0, 1)`` drawn **per point**.
Targets include the context (bnp's training convention; NPF's ``mask_tar`` marks only the
extra points): the context is slots
``0 .. num_context - 1``, the targets are slots ``0 .. num_context + num_extra - 1``. Training
losses use all targets; :func:`oracle_log_likelihood` and ``log_likelihood`` report the
**context LL** over the context points and the **target LL** over the target points that are
not in the context, both as means per point of marginal (per-point) predictive log-densities.

**Oracle** (:func:`oracle_log_likelihood`): the GP with the task's true kernel and
hyperparameters and Gaussian noise 0.02, exact for ``noise="gaussian"``. Under Student-t
noise it is no longer the true predictive (the noise is not Gaussian): it is reported as
the *Gaussian-noise oracle*, and a model can beat it.

**Models** (mean aggregation, ReLU MLPs; the decoder gives ``mean`` and
``sigma = min_sigma + (1 - min_sigma) softplus(raw)``, ``min_sigma = 0.1``, as in NPF):

* :func:`cnp`: ``r = mean_i h(x_i, y_i)`` over the context; ``y* ~ N(g(x*, r))``; loss
  ``-mean_targets log N``.
* :func:`latent_np`: a deterministic path ``r`` and a latent path
  ``z ~ N(mu(s), 0.1 + 0.9 sigmoid(.))``, ``s = mean_i h'(x_i, y_i)``; ELBO with
  ``q(z | context U targets)`` against ``p(z | context)``, both terms divided by the number of
  targets (NPF's NP for ``K = 1``; with ``K > 1`` the K-sample ELBO is averaged, where bnp
  trains the importance-weighted bound). Evaluation: ``log mean_k p(y_i | x_i, r, z_k)`` per
  point, ``z_k ~ p(z | context)``.
* :func:`mpnp` (Lee, Yun, Nam, Fong & Lee, ICLR 2023, arXiv 2304.09431): the CNP's encoder
  and decoder plus a **generator of pseudo-context representations**: an ISAB (induced set
  attention block, Set Transformer) over the set ``{context representations} U {noise
  vectors eps_j ~ N(0, I)}`` (``num_pseudo`` of them, i.i.d., so the pseudo-context is
  exchangeable), whose outputs at the noise slots are ``R'`` (``num_pseudo x r_dim``). The
  function parameter is the mean of ``R_c U R'^(k)`` (amortised inference by the encoder on
  context plus pseudo-context), ``k = 1..K`` (``num_samples``). Loss, weights 1 / 1 / 0.1::

      L_marg   = -mean_i log (1/K) sum_k p(y_i | theta(R_c U R'^(k)))
      L_amort  = -ll(Y_T | theta(R_T))                (the encoder given the whole task)
      L_pseudo = -(1/K) sum_k ll(Y_T | theta(R'^(k)))

  ``ll`` summed over the targets and divided by their number; ``L_marg`` is the per-point
  mixture over pseudo-context draws (as bnp's BNP trains), exactly what evaluation reports:
  ``log mean_k p(y_i | theta(R_c U R'^(k)))`` per point.

  Deviations from the paper, stated because the paper's method section and equations could
  not be read here (only its abstract, introduction and the Figure-1 description: pseudo
  *representations* from an ISAB, combined with the context representations): the loss is
  the three-term reconstruction in ``shared/notes`` (section 4.1, marked unverified) with a
  third-party re-implementation's weights; ``L_amort`` conditions on the whole task (one of
  the two readings in the notes) and has no pseudo-context; the number of pseudo points is a
  fixed setting (``num_pseudo``), not tied to the context size; the ISAB has no layer norm;
  mean aggregation only (MPNP, not the attentive MPANP); small networks and CPU budgets.

**Training** (:func:`fit`): Adam, one batch per step drawn on the fly from
``fold_in(key, step)`` (or a minibatch of fixed tasks), looped with
:func:`ppl.runtime.loop.scan_in_chunks`, so the same key gives the same parameters with or
without the progress bar. A non-finite loss stops training with the step named.

Shapes: a batch holds ``B`` tasks of :data:`MAX_POINTS` slots, ``(B, 50)`` arrays with boolean
masks; ``x`` is 1-D (no feature axis).

Example:
    >>> import jax
    >>> from ppl.processes import neural_process as npr
    >>> tasks = npr.gp_tasks("rbf")
    >>> model = npr.cnp(hidden=16, r_dim=16)
    >>> params, losses = npr.fit(model, tasks, key=jax.random.key(0), steps=5, batch_size=4)
    >>> batch = npr.sample_tasks(tasks, jax.random.key(1), 3)
    >>> context_ll, target_ll = model.log_likelihood(params, jax.random.key(2), batch)
    >>> target_ll.shape, npr.oracle_log_likelihood(batch).target_ll.shape
    ((3,), (3,))
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.linalg import cho_solve, solve_triangular
from jax.scipy.special import logsumexp

from ppl.processes.martingale.data import check_count
from ppl.runtime.cache import ByValue, by_value
from ppl.runtime.keys import validate_key
from ppl.runtime.loop import scan_in_chunks, strongly_typed

__all__ = [
    "DEFAULT_OPTIMIZER",
    "KERNELS",
    "MAX_POINTS",
    "MODELS",
    "NOISES",
    "NOISE_STD",
    "GPTasks",
    "NeuralProcess",
    "OracleLogLikelihood",
    "Prediction",
    "TaskBatch",
    "check_batch",
    "cnp",
    "fit",
    "gp_tasks",
    "kernel_matrix",
    "latent_np",
    "mpnp",
    "oracle_log_likelihood",
    "sample_tasks",
]

KERNELS = ("rbf", "matern52", "periodic")
NOISES = ("gaussian", "student_t")
MODELS = ("cnp", "np", "mpnp")
MAX_POINTS = 50
NOISE_STD = 0.02
_MIN_CONTEXT, _MAX_CONTEXT, _MIN_EXTRA = 3, 47, 3
_T_DF, _T_SCALE = 2.1, 0.15
#: ``optax.adam(5e-4)``, NPF's rate: :func:`fit`'s default optimiser.
DEFAULT_OPTIMIZER = optax.adam(5e-4)


# ------------------------------------------------------------------ tasks


class TaskBatch(NamedTuple):
    """A batch of ``B`` 1-D regression tasks, all arrays with leading axis ``B``.

    Attributes:
        x_context, y_context: ``(B, N)`` (padded slots are 0).
        mask_context: ``(B, N)`` bool, the context points.
        x_target, y_target: ``(B, N)``: all points of the task (targets include the context).
        mask_target: ``(B, N)`` bool, the targets (a superset of ``mask_context``).
        kernel: ``(B,)`` int, index into :data:`KERNELS`.
        lengthscale, scale, period: ``(B,)`` true hyperparameters (``period`` unused but
            drawn for non-periodic kernels).
        noise: ``(B,)`` int, index into :data:`NOISES`.
        noise_scale: ``(B, N)`` the per-point scale ``tau`` of the Student-t noise (0 under
            Gaussian noise).
    """

    x_context: Any
    y_context: Any
    mask_context: Any
    x_target: Any
    y_target: Any
    mask_target: Any
    kernel: Any
    lengthscale: Any
    scale: Any
    period: Any
    noise: Any
    noise_scale: Any


class GPTasks(NamedTuple):
    """The task generator's settings (build it with :func:`gp_tasks`; draw with :func:`sample_tasks`).

    Attributes:
        kernel: one of :data:`KERNELS`, or ``"mixed"`` (a kernel drawn uniformly per task).
        noise: one of :data:`NOISES`.
    """

    kernel: str = "rbf"
    noise: str = "gaussian"

    def sample(self, rng_key, batch_size: int) -> TaskBatch:
        """:func:`sample_tasks` with these settings."""
        return sample_tasks(self, rng_key, batch_size)


def gp_tasks(kernel: str = "rbf", noise: str = "gaussian") -> GPTasks:
    """The 1-D GP task generator with ``kernel`` (:data:`KERNELS` or ``"mixed"``) and
    ``noise`` (:data:`NOISES`).

    Raises:
        ValueError: on an unknown kernel or noise name.
    """
    if kernel not in (*KERNELS, "mixed"):
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {(*KERNELS, 'mixed')}")
    if noise not in NOISES:
        raise ValueError(f"unknown noise {noise!r}; choose one of {NOISES}")
    return GPTasks(kernel, noise)


def kernel_matrix(kernel, x1, x2, lengthscale, scale, period):
    """``k(x1, x2)`` of one task, ``(n1, n2)``; ``kernel`` an index into :data:`KERNELS` (may be traced)."""
    distance = jnp.abs(x1[:, None] - x2[None, :])
    variance = scale**2
    rbf = variance * jnp.exp(-0.5 * (distance / lengthscale) ** 2)
    r = math.sqrt(5.0) * distance / lengthscale
    matern = variance * (1.0 + r + r**2 / 3.0) * jnp.exp(-r)
    periodic = variance * jnp.exp(-2.0 * jnp.sin(jnp.pi * distance / period) ** 2 / lengthscale**2)
    return jnp.stack([rbf, matern, periodic])[kernel]


def _sample_task(generator: GPTasks, rng_key) -> TaskBatch:
    keys = [jax.random.fold_in(rng_key, i) for i in range(9)]
    dtype = jnp.zeros(()).dtype  # float64 under jax_enable_x64
    x = jax.random.uniform(keys[0], (MAX_POINTS,), dtype, -2.0, 2.0)
    num_context = jax.random.randint(keys[1], (), _MIN_CONTEXT, _MAX_CONTEXT + 1)
    num_extra = jax.random.randint(keys[2], (), _MIN_EXTRA, MAX_POINTS - num_context + 1)
    if generator.kernel == "mixed":
        kernel = jax.random.randint(keys[3], (), 0, len(KERNELS))
    else:
        kernel = jnp.asarray(KERNELS.index(generator.kernel))
    lengthscale = jax.random.uniform(keys[4], (), dtype, 0.1, 0.6)
    scale = jax.random.uniform(keys[5], (), dtype, 0.1, 1.0)
    period = jax.random.uniform(keys[6], (), dtype, 0.1, 0.5)
    covariance = kernel_matrix(kernel, x, x, lengthscale, scale, period) + NOISE_STD**2 * jnp.eye(MAX_POINTS)
    y = jnp.linalg.cholesky(covariance) @ jax.random.normal(keys[7], (MAX_POINTS,), dtype)
    noise = NOISES.index(generator.noise)
    tau = jnp.zeros(MAX_POINTS, dtype)
    if generator.noise == "student_t":
        tau_key, t_key = jax.random.split(keys[8])
        tau = _T_SCALE * jax.random.uniform(tau_key, (MAX_POINTS,), dtype)
        y = y + tau * jax.random.t(t_key, _T_DF, (MAX_POINTS,), dtype)
    slots = jnp.arange(MAX_POINTS)
    mask_context = slots < num_context
    mask_target = slots < num_context + num_extra
    return TaskBatch(
        jnp.where(mask_context, x, 0.0),
        jnp.where(mask_context, y, 0.0),
        mask_context,
        jnp.where(mask_target, x, 0.0),
        jnp.where(mask_target, y, 0.0),
        mask_target,
        kernel,
        lengthscale,
        scale,
        period,
        jnp.asarray(noise),
        jnp.where(mask_target, tau, 0.0),
    )


@functools.partial(jax.jit, static_argnums=(0, 2))
def _sample_tasks(generator: GPTasks, rng_key, batch_size: int) -> TaskBatch:
    keys = jax.vmap(lambda i: jax.random.fold_in(rng_key, i))(jnp.arange(batch_size))
    return jax.vmap(lambda k: _sample_task(generator, k))(keys)


def sample_tasks(generator: GPTasks, rng_key, batch_size: int) -> TaskBatch:
    """``batch_size`` tasks; task ``i`` is drawn from ``fold_in(rng_key, i)``.

    Returns:
        a :class:`TaskBatch` of ``(batch_size, 50)`` arrays.
    """
    if not isinstance(generator, GPTasks):
        raise TypeError(f"generator must be GPTasks (from gp_tasks), got {type(generator).__name__}")
    gp_tasks(generator.kernel, generator.noise)  # validates the names
    return _sample_tasks(generator, validate_key(rng_key, "rng_key"), check_count("batch_size", batch_size))


def check_batch(batch: TaskBatch, name: str = "batch") -> TaskBatch:
    """``batch`` with arrays, after checking shapes, masks and finiteness.

    Raises:
        TypeError: if ``batch`` is not a :class:`TaskBatch`.
        ValueError: naming the array and the shapes, on mismatched shapes, a task without
            context points or without targets outside the context, targets that do not
            include the context (masks, or ``x`` values), per-task fields out of range, or
            non-finite values at unmasked points. Padded slots are set to 0. The models
            condition on ``y_context``, the oracle on ``y_target`` at the context slots;
            they may differ on purpose (e.g. a context with its values hidden).
    """
    if not isinstance(batch, TaskBatch):
        raise TypeError(f"{name} must be a TaskBatch (from sample_tasks), got {type(batch).__name__}")
    batch = TaskBatch(*(jnp.asarray(a) for a in batch))
    if any(isinstance(leaf, jax.core.Tracer) for leaf in batch):
        return _zero_padding(batch)
    shape = batch.x_target.shape
    if len(shape) != 2:
        raise ValueError(f"{name}.x_target must have shape (num_tasks, num_points), got {shape}")
    for field in ("x_context", "y_context", "mask_context", "y_target", "mask_target", "noise_scale"):
        if getattr(batch, field).shape != shape:
            raise ValueError(
                f"{name}.{field} has shape {getattr(batch, field).shape}, but {name}.x_target has {shape}"
            )
    for field in ("kernel", "lengthscale", "scale", "period", "noise"):
        if getattr(batch, field).shape != shape[:1]:
            raise ValueError(
                f"{name}.{field} must have shape {shape[:1]} (per task), got {getattr(batch, field).shape}"
            )
    for field in ("mask_context", "mask_target"):
        if getattr(batch, field).dtype != jnp.bool_:
            raise ValueError(f"{name}.{field} must be boolean, got dtype {getattr(batch, field).dtype}")
    for field, count in (("kernel", len(KERNELS)), ("noise", len(NOISES))):
        values = np.asarray(getattr(batch, field))
        if not np.issubdtype(values.dtype, np.integer) or np.any((values < 0) | (values >= count)):
            raise ValueError(
                f"{name}.{field} must hold integers in [0, {count}), got {values.dtype} values {values[:5]}"
            )
    for field in ("lengthscale", "scale", "period"):
        values = np.asarray(getattr(batch, field))
        bad = np.flatnonzero(~(values > 0))
        if bad.size:
            raise ValueError(f"{name}.{field} must be > 0; {bad.size} task(s) are not (first: task {bad[0]})")
    mask_context, mask_target = np.asarray(batch.mask_context), np.asarray(batch.mask_target)
    empty = np.flatnonzero(mask_context.sum(axis=1) == 0)
    if empty.size:
        raise ValueError(f"{name} has {empty.size} task(s) with an empty context (first: task {empty[0]})")
    if np.any(mask_context & ~mask_target):
        raise ValueError(f"{name}.mask_target must include the context points (targets include the context)")
    no_targets = np.flatnonzero((mask_target & ~mask_context).sum(axis=1) == 0)
    if no_targets.size:
        raise ValueError(
            f"{name} has {no_targets.size} task(s) without targets outside the context "
            f"(first: task {no_targets[0]})"
        )
    for field, mask in (
        ("x_context", mask_context),
        ("y_context", mask_context),
        ("x_target", mask_target),
        ("y_target", mask_target),
    ):
        values = np.asarray(getattr(batch, field))
        bad = ~np.isfinite(values) & mask
        if bad.any():
            raise ValueError(
                f"{name}.{field} {values.shape} has {int(bad.sum())} non-finite values at unmasked points"
            )
    context, target = np.asarray(batch.x_context), np.asarray(batch.x_target)
    differ = np.flatnonzero((mask_context & (context != target)).any(axis=1))
    if differ.size:
        raise ValueError(
            f"{name}.x_context differs from {name}.x_target at context points in {differ.size} task(s) "
            f"(first: task {differ[0]}); the targets include the context, slot for slot"
        )
    return _zero_padding(batch)


def _zero_padding(batch: TaskBatch) -> TaskBatch:
    """Padded slots set to 0: masked-out values must not reach a gradient (``0 * nan = nan``)."""
    context, target = batch.mask_context, batch.mask_target
    return batch._replace(
        x_context=jnp.where(context, batch.x_context, 0.0),
        y_context=jnp.where(context, batch.y_context, 0.0),
        x_target=jnp.where(target, batch.x_target, 0.0),
        y_target=jnp.where(target, batch.y_target, 0.0),
        noise_scale=jnp.where(target, batch.noise_scale, 0.0),
    )


# ------------------------------------------------------------------ oracle


class OracleLogLikelihood(NamedTuple):
    """The GP's log-likelihoods per task, each ``(B,)``, means per point.

    Attributes:
        context_evidence: ``log N(y_c; 0, K_cc + sigma_eps^2 I) / num_context`` (joint).
        context_ll: ``mean_{i in c} log p(y_i | context)``, per-point marginal predictive
            (what an NP's context LL measures).
        target_ll: ``mean_{i in targets, not c} log p(y_i | context)``, per-point marginal.
    """

    context_evidence: Any
    context_ll: Any
    target_ll: Any


def _oracle_task(x, y, mask_context, mask_extra, kernel, lengthscale, scale, period):
    gram = kernel_matrix(kernel, x, x, lengthscale, scale, period)
    noise = NOISE_STD**2
    pair = mask_context[:, None] & mask_context[None, :]
    eye = jnp.eye(x.shape[0], dtype=gram.dtype)
    # Padded slots become an identity block with y = 0: they add nothing but the 2 pi term.
    lower = jnp.linalg.cholesky(jnp.where(pair, gram + noise * eye, eye))
    y_context = jnp.where(mask_context, y, 0.0)
    alpha = cho_solve((lower, True), y_context)
    num_context = jnp.sum(mask_context)
    evidence = (
        -0.5 * y_context @ alpha
        - jnp.sum(jnp.log(jnp.diagonal(lower)))
        - 0.5 * num_context * jnp.log(2 * jnp.pi)
    )
    cross = jnp.where(mask_context[None, :], gram, 0.0)
    mean = cross @ alpha
    solved = solve_triangular(lower, cross.T, lower=True)
    variance = jnp.diagonal(gram) - jnp.sum(solved**2, axis=0) + noise
    point_ll = -0.5 * (jnp.log(2 * jnp.pi * variance) + (y - mean) ** 2 / variance)
    return (
        evidence / num_context,
        _masked_mean(point_ll, mask_context),
        _masked_mean(point_ll, mask_extra),
    )


def _masked_mean(values, mask, axis=-1):
    return jnp.sum(jnp.where(mask, values, 0.0), axis=axis) / jnp.maximum(jnp.sum(mask, axis=axis), 1)


@jax.jit
def _oracle(batch: TaskBatch) -> OracleLogLikelihood:
    mask_extra = batch.mask_target & ~batch.mask_context
    return OracleLogLikelihood(
        *jax.vmap(_oracle_task)(
            batch.x_target,
            batch.y_target,
            batch.mask_context,
            mask_extra,
            batch.kernel,
            batch.lengthscale,
            batch.scale,
            batch.period,
        )
    )


def oracle_log_likelihood(batch: TaskBatch) -> OracleLogLikelihood:
    """The exact GP log-likelihoods of every task, with its true kernel and hyperparameters
    and Gaussian noise ``sigma_eps = 0.02`` (the *Gaussian-noise oracle* under t-noise,
    where it is not exact). Compute in float64 for 1e-8 agreement."""
    return _oracle(check_batch(batch))


# ------------------------------------------------------------------ networks


class NeuralProcess(NamedTuple):
    """A neural process's static settings (build with :func:`cnp`, :func:`latent_np` or :func:`mpnp`).

    Attributes:
        kind: one of :data:`MODELS`.
        hidden: width of every hidden layer.
        r_dim: size of a representation (and of ``z`` for the latent NP).
        encoder_layers, decoder_layers: hidden layers of the encoders and the decoder.
        num_samples: ``K``: latent draws (NP, training) or pseudo-context draws (MPNP).
        num_pseudo: pseudo-context points per draw (MPNP).
        num_inducing, num_heads: the ISAB's inducing points and attention heads (MPNP).
        loss_weights: ``(marginal, amortisation, pseudo)`` weights (MPNP).
        min_sigma: the decoder's smallest standard deviation.
    """

    kind: str
    hidden: int = 64
    r_dim: int = 64
    encoder_layers: int = 2
    decoder_layers: int = 2
    num_samples: int = 1
    num_pseudo: int = 16
    num_inducing: int = 8
    num_heads: int = 4
    loss_weights: tuple = (1.0, 1.0, 0.1)
    min_sigma: float = 0.1

    def init(self, rng_key) -> dict:
        """Parameters (a dict pytree of arrays) from ``rng_key``."""
        return _init_params(_checked(self), validate_key(rng_key, "rng_key"))

    def loss(self, params, rng_key, batch: TaskBatch):
        """The training loss (a scalar, mean over tasks; see the module docstring)."""
        return _loss(_checked(self), params, validate_key(rng_key, "rng_key"), check_batch(batch))

    def log_likelihood(self, params, rng_key, batch: TaskBatch, num_samples: int = 16):
        """``(context_ll, target_ll)``, each ``(B,)``: per-point marginal predictive log-densities
        averaged over the context points and over the targets not in the context; latent NP
        and MPNP use ``log mean_k`` over ``num_samples`` draws (ignored by the CNP)."""
        batch = check_batch(batch)
        return _log_likelihood(
            _checked(self),
            params,
            validate_key(rng_key, "rng_key"),
            batch,
            check_count("num_samples", num_samples),
        )

    def predict(
        self, params, rng_key, x_context, y_context, x_target, num_samples: int = 16, mask_context=None
    ):
        """Predictive ``mean`` and ``scale``, each ``(num_samples, *x_target.shape)``
        (``num_samples = 1`` for the CNP). ``x_context``, ``y_context``: ``(n,)`` or ``(B, n)``;
        ``x_target``: ``(m,)`` or ``(B, m)``; ``mask_context`` (default all) selects context points."""
        return _predict_checked(
            _checked(self), params, rng_key, x_context, y_context, x_target, num_samples, mask_context
        )


def _checked(model: NeuralProcess) -> NeuralProcess:
    if model.kind not in MODELS:
        raise ValueError(f"NeuralProcess kind must be one of {MODELS}, got {model.kind!r}")
    return model


def _check_model(hidden, r_dim, encoder_layers, decoder_layers, num_samples, **extra):
    for name, value in (
        ("hidden", hidden),
        ("r_dim", r_dim),
        ("encoder_layers", encoder_layers),
        ("decoder_layers", decoder_layers),
        ("num_samples", num_samples),
        *extra.items(),
    ):
        check_count(name, value)


def cnp(
    *, hidden: int = 64, r_dim: int = 64, encoder_layers: int = 2, decoder_layers: int = 2
) -> NeuralProcess:
    """A conditional neural process (Garnelo et al., 2018)."""
    _check_model(hidden, r_dim, encoder_layers, decoder_layers, 1)
    return NeuralProcess("cnp", int(hidden), int(r_dim), int(encoder_layers), int(decoder_layers))


def latent_np(
    *,
    hidden: int = 64,
    r_dim: int = 64,
    encoder_layers: int = 2,
    decoder_layers: int = 2,
    num_samples: int = 1,
) -> NeuralProcess:
    """A latent neural process with deterministic and latent paths, trained by the ELBO
    with ``num_samples`` draws of ``z ~ q(z | context U targets)``."""
    _check_model(hidden, r_dim, encoder_layers, decoder_layers, num_samples)
    return NeuralProcess(
        "np", int(hidden), int(r_dim), int(encoder_layers), int(decoder_layers), int(num_samples)
    )


def mpnp(
    *,
    hidden: int = 64,
    r_dim: int = 64,
    encoder_layers: int = 2,
    decoder_layers: int = 2,
    num_samples: int = 5,
    num_pseudo: int = 16,
    num_inducing: int = 8,
    num_heads: int = 4,
    loss_weights: tuple = (1.0, 1.0, 0.1),
) -> NeuralProcess:
    """A martingale-posterior neural process: ``num_samples`` (``K``) pseudo-context draws of
    ``num_pseudo`` representations each from an ISAB generator (see the module docstring)."""
    _check_model(
        hidden,
        r_dim,
        encoder_layers,
        decoder_layers,
        num_samples,
        num_pseudo=num_pseudo,
        num_inducing=num_inducing,
        num_heads=num_heads,
    )
    if r_dim % num_heads:
        raise ValueError(f"r_dim = {r_dim} must be divisible by num_heads = {num_heads}")
    weights = tuple(float(w) for w in loss_weights)
    if len(weights) != 3 or not all(np.isfinite(w) and w >= 0 for w in weights):
        raise ValueError(
            "loss_weights must be three finite numbers >= 0 (marginal, amortisation, pseudo), "
            f"got {loss_weights!r}"
        )
    return NeuralProcess(
        "mpnp",
        int(hidden),
        int(r_dim),
        int(encoder_layers),
        int(decoder_layers),
        int(num_samples),
        int(num_pseudo),
        int(num_inducing),
        int(num_heads),
        weights,
    )


def _dense_init(rng_key, fan_in, fan_out, gain=2.0):
    weight = jax.random.normal(rng_key, (fan_in, fan_out)) * jnp.sqrt(gain / fan_in)
    return {"w": weight, "b": jnp.zeros(fan_out)}


def _mlp_init(rng_key, sizes):
    return [
        _dense_init(jax.random.fold_in(rng_key, i), a, b)
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
    ]


def _mlp(layers, inputs):
    for layer in layers[:-1]:
        inputs = jax.nn.relu(inputs @ layer["w"] + layer["b"])
    return inputs @ layers[-1]["w"] + layers[-1]["b"]


def _mab_init(rng_key, dim):
    keys = [jax.random.fold_in(rng_key, i) for i in range(5)]
    return {
        "query": _dense_init(keys[0], dim, dim, 1.0),
        "key": _dense_init(keys[1], dim, dim, 1.0),
        "value": _dense_init(keys[2], dim, dim, 1.0),
        "out": _dense_init(keys[3], dim, dim, 1.0),
        "feedforward": _mlp_init(keys[4], [dim, dim, dim]),
    }


def _mab(params, queries, keys, key_mask, num_heads):
    """Multihead attention block (Set Transformer, without layer norm):
    ``H = Q + MHA(Q, K, K)``, ``out = H + rFF(H)``; ``key_mask`` hides padded keys."""
    dim = queries.shape[-1]
    head = dim // num_heads

    def project(layer, inputs):
        return (inputs @ layer["w"] + layer["b"]).reshape(inputs.shape[0], num_heads, head)

    q, k, v = project(params["query"], queries), project(params["key"], keys), project(params["value"], keys)
    logits = jnp.einsum("qhd,khd->hqk", q, k) / jnp.sqrt(head)
    logits = jnp.where(key_mask[None, None, :], logits, -jnp.inf)
    attended = jnp.einsum("hqk,khd->qhd", jax.nn.softmax(logits, axis=-1), v).reshape(queries.shape[0], dim)
    hidden = queries + attended @ params["out"]["w"] + params["out"]["b"]
    return hidden + _mlp(params["feedforward"], hidden)


def _init_params(model: NeuralProcess, rng_key) -> dict:
    """Initial parameters of ``model`` (a dict pytree)."""
    keys = [jax.random.fold_in(rng_key, i) for i in range(8)]
    hidden, r_dim = model.hidden, model.r_dim
    encoder = [2] + [hidden] * model.encoder_layers + [r_dim]
    params = {"encoder": _mlp_init(keys[0], encoder)}
    decoder_in = 1 + r_dim + (r_dim if model.kind == "np" else 0)
    params["decoder"] = _mlp_init(keys[1], [decoder_in] + [hidden] * model.decoder_layers + [2])
    if model.kind == "np":
        params["latent_encoder"] = _mlp_init(keys[2], encoder)
        params["latent_head"] = _mlp_init(keys[3], [r_dim, hidden, 2 * r_dim])
    if model.kind == "mpnp":
        params["generator"] = {
            "context_in": _dense_init(keys[4], r_dim, r_dim, 1.0),
            "noise_in": _dense_init(keys[5], r_dim, r_dim, 1.0),
            "inducing": jax.random.normal(keys[6], (model.num_inducing, r_dim)) / jnp.sqrt(r_dim),
            "induce": _mab_init(jax.random.fold_in(keys[7], 0), r_dim),
            "broadcast": _mab_init(jax.random.fold_in(keys[7], 1), r_dim),
            "out": _dense_init(jax.random.fold_in(keys[7], 2), r_dim, r_dim, 1.0),
        }
    return params


# ------------------------------------------------------------------ one task


def _represent(layers, x, y):
    return _mlp(layers, jnp.stack([x, y], axis=-1))


def _decode(model, params, x_target, representation):
    """Mean and sigma at ``x_target (m,)`` given a representation ``(d,)``."""
    features = jnp.concatenate(
        [x_target[:, None], jnp.broadcast_to(representation, (x_target.shape[0],) + representation.shape)],
        axis=-1,
    )
    out = _mlp(params["decoder"], features)
    sigma = model.min_sigma + (1.0 - model.min_sigma) * jax.nn.softplus(out[:, 1])
    return out[:, 0], sigma


def _normal_log_density(y, mean, sigma):
    return -0.5 * jnp.log(2 * jnp.pi) - jnp.log(sigma) - 0.5 * ((y - mean) / sigma) ** 2


def _latent(params, x, y, mask):
    """``p(z | points)``: mean and standard deviation ``0.1 + 0.9 sigmoid`` (bnp's NP)."""
    summary = _masked_mean(_represent(params["latent_encoder"], x, y), mask[:, None], axis=0)
    out = _mlp(params["latent_head"], summary)
    mean, raw = jnp.split(out, 2)
    return mean, 0.1 + 0.9 * jax.nn.sigmoid(raw)


def _pseudo_representations(model, params, rng_key, representations, mask):
    """``num_pseudo`` pseudo-context representations: an ISAB over context and noise."""
    generator = params["generator"]
    noise = jax.random.normal(rng_key, (model.num_pseudo, model.r_dim), representations.dtype)
    inputs = jnp.concatenate(
        [
            representations @ generator["context_in"]["w"] + generator["context_in"]["b"],
            noise @ generator["noise_in"]["w"] + generator["noise_in"]["b"],
        ]
    )
    input_mask = jnp.concatenate([mask, jnp.ones(model.num_pseudo, bool)])
    induced = _mab(generator["induce"], generator["inducing"], inputs, input_mask, model.num_heads)
    pseudo_inputs = inputs[representations.shape[0] :]  # only the noise slots' outputs are used
    out = _mab(
        generator["broadcast"], pseudo_inputs, induced, jnp.ones(model.num_inducing, bool), model.num_heads
    )
    return out @ generator["out"]["w"] + generator["out"]["b"]


def _pseudo_theta(model, params, rng_key, representations, mask):
    """``(theta(R_c U R'), theta(R'))`` for one pseudo-context draw."""
    pseudo = _pseudo_representations(model, params, rng_key, representations, mask)
    context_sum = jnp.sum(jnp.where(mask[:, None], representations, 0.0), axis=0)
    with_context = (jnp.sum(pseudo, axis=0) + context_sum) / (model.num_pseudo + jnp.sum(mask))
    return with_context, jnp.mean(pseudo, axis=0)


def _task_loss(model, params, rng_key, task: TaskBatch):
    x_c, y_c, m_c, x_t, y_t, m_t = task[:6]
    num_target = jnp.sum(m_t)

    def target_ll(mean, sigma):  # summed over targets, divided by their number
        return jnp.sum(jnp.where(m_t, _normal_log_density(y_t, mean, sigma), 0.0)) / num_target

    representations = _represent(params["encoder"], x_c, y_c)
    if model.kind == "cnp":
        return -target_ll(*_decode(model, params, x_t, _masked_mean(representations, m_c[:, None], axis=0)))
    if model.kind == "np":
        r = _masked_mean(representations, m_c[:, None], axis=0)
        prior_mean, prior_std = _latent(params, x_c, y_c, m_c)
        post_mean, post_std = _latent(params, x_t, y_t, m_t)
        kl = jnp.sum(
            jnp.log(prior_std / post_std)
            + (post_std**2 + (post_mean - prior_mean) ** 2) / (2 * prior_std**2)
            - 0.5
        )

        def reconstruction(k):
            z = post_mean + post_std * jax.random.normal(
                jax.random.fold_in(rng_key, k), post_mean.shape, post_mean.dtype
            )
            return target_ll(*_decode(model, params, x_t, jnp.concatenate([r, z])))

        recon = jnp.mean(jax.vmap(reconstruction)(jnp.arange(model.num_samples)))
        return -(recon - kl / num_target)
    # mpnp
    marginal_weight, amortisation_weight, pseudo_weight = model.loss_weights

    def draw(k):
        with_context, alone = _pseudo_theta(
            model, params, jax.random.fold_in(rng_key, k), representations, m_c
        )
        return _normal_log_density(y_t, *_decode(model, params, x_t, with_context)), target_ll(
            *_decode(model, params, x_t, alone)
        )

    point_ll, ll_pseudo = jax.vmap(draw)(jnp.arange(model.num_samples))  # (K, N), (K,)
    # The per-point mixture over pseudo-context draws: what log_likelihood reports.
    marginal = -_masked_mean(logsumexp(point_ll, axis=0) - jnp.log(model.num_samples), m_t)
    whole = _masked_mean(_represent(params["encoder"], x_t, y_t), m_t[:, None], axis=0)
    amortisation = -target_ll(*_decode(model, params, x_t, whole))
    pseudo_loss = -jnp.mean(ll_pseudo)
    return marginal_weight * marginal + amortisation_weight * amortisation + pseudo_weight * pseudo_loss


def _task_predict(model, params, rng_key, x_c, y_c, m_c, x_t, num_samples):
    """``(mean, sigma)`` of shape ``(S, m)`` (``S = 1`` for the CNP)."""
    representations = _represent(params["encoder"], x_c, y_c)
    if model.kind == "cnp":
        mean, sigma = _decode(model, params, x_t, _masked_mean(representations, m_c[:, None], axis=0))
        return mean[None], sigma[None]
    if model.kind == "np":
        r = _masked_mean(representations, m_c[:, None], axis=0)
        prior_mean, prior_std = _latent(params, x_c, y_c, m_c)

        def one(k):
            z = prior_mean + prior_std * jax.random.normal(
                jax.random.fold_in(rng_key, k), prior_mean.shape, prior_mean.dtype
            )
            return _decode(model, params, x_t, jnp.concatenate([r, z]))

        return jax.vmap(one)(jnp.arange(num_samples))

    def one(k):
        theta, _ = _pseudo_theta(model, params, jax.random.fold_in(rng_key, k), representations, m_c)
        return _decode(model, params, x_t, theta)

    return jax.vmap(one)(jnp.arange(num_samples))


# ------------------------------------------------------------------ batched, jitted


def _task_keys(rng_key, num_tasks):
    return jax.vmap(lambda i: jax.random.fold_in(rng_key, i))(jnp.arange(num_tasks))


def _batch_loss(model, params, rng_key, batch: TaskBatch):
    keys = _task_keys(rng_key, batch.x_target.shape[0])
    return jnp.mean(jax.vmap(lambda k, task: _task_loss(model, params, k, task))(keys, batch))


@functools.partial(jax.jit, static_argnums=0)
def _loss(model, params, rng_key, batch):
    return _batch_loss(model, params, rng_key, batch)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _log_likelihood(model, params, rng_key, batch: TaskBatch, num_samples: int):
    keys = _task_keys(rng_key, batch.x_target.shape[0])
    samples = 1 if model.kind == "cnp" else num_samples

    def task_ll(k, task):
        mean, sigma = _task_predict(
            model, params, k, task.x_context, task.y_context, task.mask_context, task.x_target, samples
        )
        point_ll = logsumexp(_normal_log_density(task.y_target, mean, sigma), axis=0) - jnp.log(samples)
        extra = task.mask_target & ~task.mask_context
        return _masked_mean(point_ll, task.mask_context), _masked_mean(point_ll, extra)

    return jax.vmap(task_ll)(keys, batch)


@functools.partial(jax.jit, static_argnums=(0, 7))
def _predict(model, params, rng_key, x_c, y_c, m_c, x_t, num_samples):
    keys = _task_keys(rng_key, x_c.shape[0])
    mean, sigma = jax.vmap(lambda k, a, b, c, d: _task_predict(model, params, k, a, b, c, d, num_samples))(
        keys, x_c, y_c, m_c, x_t
    )
    return jnp.moveaxis(mean, 1, 0), jnp.moveaxis(sigma, 1, 0)


class Prediction(NamedTuple):
    """Predictive Gaussians: ``mean`` and ``scale``, each ``(num_samples, *x_target.shape)``;
    the predictive is their equal-weight mixture over the first axis."""

    mean: Any
    scale: Any


def _predict_checked(model, params, rng_key, x_context, y_context, x_target, num_samples, mask_context):
    rng_key = validate_key(rng_key, "rng_key")
    num_samples = 1 if model.kind == "cnp" else check_count("num_samples", num_samples)
    x_context, y_context, x_target = (jnp.asarray(a) for a in (x_context, y_context, x_target))
    if x_context.shape != y_context.shape or x_context.ndim not in (1, 2):
        raise ValueError(
            f"x_context {tuple(x_context.shape)} and y_context {tuple(y_context.shape)} must have the same "
            "shape, (num_context,) or (num_tasks, num_context)"
        )
    if x_target.ndim != x_context.ndim or x_target.shape[:-1] != x_context.shape[:-1]:
        raise ValueError(
            f"x_target {tuple(x_target.shape)} must be (num_target,) for one task or (num_tasks, num_target) "
            f"with the tasks of x_context {tuple(x_context.shape)}"
        )
    mask = jnp.ones(x_context.shape, bool) if mask_context is None else jnp.asarray(mask_context, bool)
    if mask.shape != x_context.shape:
        raise ValueError(
            f"mask_context {tuple(mask.shape)} must have the shape of x_context {tuple(x_context.shape)}"
        )
    if x_context.shape[-1] == 0 or not bool(np.all(np.asarray(mask).sum(axis=-1) > 0)):
        raise ValueError(
            f"the context is empty (x_context {tuple(x_context.shape)}): give at least one context point"
        )
    for name, values in (("x_context", x_context), ("y_context", y_context), ("x_target", x_target)):
        if not bool(jnp.all(jnp.isfinite(values))):
            raise ValueError(
                f"{name} {tuple(values.shape)} has {int(jnp.sum(~jnp.isfinite(values)))} non-finite values"
            )
    single = x_context.ndim == 1
    if single:
        x_context, y_context, mask, x_target = x_context[None], y_context[None], mask[None], x_target[None]
    mean, scale = _predict(model, params, rng_key, x_context, y_context, mask, x_target, num_samples)
    if single:
        mean, scale = mean[:, 0], scale[:, 0]
    return Prediction(mean, scale)


# ------------------------------------------------------------------ training


@functools.partial(jax.jit, static_argnames=("model", "generator", "optimizer", "batch_size"))
def _advance(carry, steps, train_key, tasks, *, model, generator, optimizer: ByValue, batch_size):
    """Steps ``steps`` of one chunk; step ``t`` draws its batch and loss from ``fold_in(train_key, t)``."""

    def body(carry, step):
        params, opt_state = carry
        step_key = jax.random.fold_in(train_key, step)
        data_key, loss_key = jax.random.fold_in(step_key, 0), jax.random.fold_in(step_key, 1)
        if generator is not None:
            batch = _sample_tasks(generator, data_key, batch_size)
        else:
            index = jax.random.randint(data_key, (batch_size,), 0, tasks.x_target.shape[0])
            batch = jax.tree.map(lambda a: a[index], tasks)
        loss, grads = jax.value_and_grad(lambda p: _batch_loss(model, p, loss_key, batch))(params)
        updates, opt_state = optimizer.value.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), (loss, optax.tree.norm(grads))

    return jax.lax.scan(body, carry, steps)


def fit(
    model: NeuralProcess,
    tasks,
    *,
    key,
    steps: int,
    batch_size: int,
    optimizer: optax.GradientTransformation = DEFAULT_OPTIMIZER,
    progress_bar: bool | None = None,
):
    """Train ``model`` by Adam on batches of ``tasks``; return ``(params, losses)``.

    Args:
        model: a :class:`NeuralProcess`.
        tasks: a :class:`GPTasks` generator (a fresh batch per step from ``fold_in``) or a
            fixed :class:`TaskBatch` (``batch_size`` tasks drawn with replacement per step).
        key: the run's key; parameters come from ``fold_in(key, 0)``, step ``t``'s batch and
            loss draws from ``fold_in(fold_in(key, 1), t)``.
        steps, batch_size: optimisation steps and tasks per step (integers >= 1).
        optimizer: an Optax transformation, compared by what it computes
            (:func:`ppl.runtime.cache.by_value`): an equal one built anew reuses the compiled loop.
        progress_bar: see :func:`ppl.runtime.loop.progress_enabled`.

    Returns:
        ``(params, losses)`` with ``losses`` a NumPy array ``(steps,)``.

    Raises:
        ValueError: on bad counts or tasks, and if the loss becomes non-finite (naming the step).
    """
    if not isinstance(model, NeuralProcess):
        raise TypeError(
            f"model must be a NeuralProcess (from cnp, latent_np or mpnp), got {type(model).__name__}"
        )
    _checked(model)
    key = validate_key(key)
    steps, batch_size = check_count("steps", steps), check_count("batch_size", batch_size)
    if isinstance(tasks, GPTasks):
        generator, fixed = gp_tasks(tasks.kernel, tasks.noise), None
    elif isinstance(tasks, TaskBatch):
        generator, fixed = None, check_batch(tasks, "tasks")
    else:
        raise TypeError(f"tasks must be GPTasks (from gp_tasks) or a TaskBatch, got {type(tasks).__name__}")
    params = _init_params(model, jax.random.fold_in(key, 0))
    carry = strongly_typed((params, optimizer.init(params)))
    advance = functools.partial(
        _advance,
        train_key=jax.random.fold_in(key, 1),
        tasks=fixed,
        model=model,
        generator=generator,
        optimizer=by_value(optimizer, params),
        batch_size=batch_size,
    )

    def check_losses(carry, outputs, stop):
        losses, grad_norms = outputs
        bad = np.flatnonzero(~(np.isfinite(losses) & np.isfinite(grad_norms)))
        if bad.size:
            step = stop - len(losses) + int(bad[0])
            raise ValueError(
                f"the {model.kind} loss ({losses[bad[0]]}) or its gradient (norm {grad_norms[bad[0]]}) "
                f"became non-finite at step {step} of {steps}; lower the learning rate or check the tasks"
            )

    (params, _), (losses, _) = scan_in_chunks(
        advance,
        carry,
        np.arange(steps),
        progress_bar=progress_bar,
        description=f"fit {model.kind}",
        on_chunk=check_losses,
    )
    return params, losses
