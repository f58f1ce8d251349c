"""Few-shot sinusoid regression: hierarchical NIW meta-learning beside MAML.

Two NIW forms: the paper's (every weight per episode, diagonal) and ``NIW head`` (the last
layer per episode with a full local precision, fitted differentiably on shared features).

MAML's 5-shot sinusoid task (amplitude ``U[0.1, 5]``, phase ``U[0, pi]``, ``x ~ U[-5, 5]``)
with MAML's network (``mlp([1, 40, 40, 1])``, ReLU). NIW (``ppl.meta.niw``: a diagonal
Normal-Inverse-Wishart ``q(phi)``, a two-expansion Gauss-Newton fit of each support set
and the closed-form local posterior) and second-order MAML (one inner SGD step of 0.01,
Adam 1e-3, as in the MAML paper) are meta-trained in the same harness on the same
episodes (``ppl.meta.train``, 20000 steps of 25 episodes each; ``--quick``: 150 steps
of 8, the head and MAML only). Both predict on 200 fresh test tasks of 5 support and 100 query points
(``--quick``: 50): the table gives the query MSE of the predictive mean, the predictive
NLL per query point and the coverage of the central 90% interval (mean and 95%
confidence half-width over tasks). NIW's one-episode weight posterior goes to ArviZ.
The figure shows the predictive mean and the central 90% interval of each method on
four test tasks, with the support points and the true function.

Run:  python examples/niw_fewshot.py [--quick] [--out DIR]
Writes DIR/niw_fewshot.png (default DIR: examples/output).
"""

import argparse
import pathlib
import time

import jax
import matplotlib
import numpy as np
import optax

from ppl import meta
from ppl.meta import niw
from ppl.meta.predictive import mean_interval

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SHOTS = 5
QUERIES = 10  # query points per training episode
NUM_PLOTTED = 4
PLOT_QUERIES = 200  # query points of the plotted tasks: noise-free, so they trace the true function


def learners(num_total: int) -> dict[str, meta.MetaLearner]:
    network = meta.networks.mlp([1, 40, 40, 1])
    return {
        # n0 gam0 = 100 at the start (the default 1e4 starts with almost no adaptation and
        # needs many more steps on this task), and a larger step than MAML's; num_total is
        # the number of training episodes, which scales KL(q(phi) || p(phi)).
        "NIW": niw.learner(network, optimizer=optax.adam(3e-3), init_precision=1e2, num_total=num_total),
        # The last layer per episode with a full local precision, the fit differentiated in
        # the shared features (the benchmark's niw_head, with its validated Adam 3e-3).
        "NIW head": niw.learner(
            network,
            optimizer=optax.adam(3e-3),
            local=niw.last_layer,
            covariance="full",
            differentiable_fit=True,
            init_precision=1.0,
            num_total=num_total,
        ),
        "MAML": meta.maml(network, optimizer=optax.adam(1e-3), inner_steps=1, inner_lr=0.01),
    }


def plot(predictions, episodes, out: pathlib.Path) -> pathlib.Path:
    figure, axes = plt.subplots(
        len(predictions), NUM_PLOTTED, figsize=(3.1 * NUM_PLOTTED, 2.6 * len(predictions)), sharex=True
    )
    order = np.argsort(np.asarray(episodes.query_x[..., 0]), axis=1)
    x = np.take_along_axis(np.asarray(episodes.query_x[..., 0]), order, axis=1)
    truth = np.take_along_axis(np.asarray(episodes.query_y[..., 0]), order, axis=1)
    for row, (name, prediction) in zip(axes, predictions.items(), strict=True):
        mean = np.take_along_axis(np.asarray(prediction.mean()), order, axis=1)
        lower, upper = (
            np.take_along_axis(np.asarray(bound), order, axis=1) for bound in prediction.interval(0.9)
        )
        for e, ax in enumerate(row):
            ax.fill_between(x[e], lower[e], upper[e], color="C0", alpha=0.25, label="90% interval")
            ax.plot(x[e], mean[e], color="C0", lw=1.8, label="predictive mean")
            ax.plot(x[e], truth[e], "k--", lw=1.0, label="true function")
            ax.plot(
                episodes.support_x[e, :, 0],
                episodes.support_y[e, :, 0],
                "o",
                color="C3",
                ms=5,
                label="support",
            )
            ax.set_ylim(-6.5, 6.5)
            ax.set_title(f"{name}, test task {e + 1}", fontsize=9)
            if e == 0:
                ax.set_ylabel("y")
        if row is axes[-1]:
            for ax in row:
                ax.set_xlabel("x")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    path = out / "niw_fewshot.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main(quick: bool, out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    steps, num_episodes, num_test = (150, 8, 50) if quick else (20000, 25, 200)
    source = meta.episodes.sinusoid(shots=SHOTS, queries=QUERIES)
    test = meta.episodes.sample_episodes(meta.episodes.sinusoid(SHOTS, 100), jax.random.key(1), num_test)
    shown = meta.episodes.sample_episodes(
        meta.episodes.sinusoid(SHOTS, PLOT_QUERIES), jax.random.key(2), NUM_PLOTTED
    )

    print(
        f"{SHOTS}-shot sinusoid: {steps} meta-steps x {num_episodes} episodes; "
        f"{num_test} test tasks x 100 queries"
    )
    print(f"{'method':8s} {'train s':>8s} {'MSE':>15s} {'NLL':>15s} {'90% coverage':>15s}")
    results, predictions = {}, {}
    for name, learner in learners(steps * num_episodes).items():
        if quick and name == "NIW":
            continue  # the quick run (CI) shows the head and MAML only
        began = time.perf_counter()
        result = meta.train(learner, source, steps=steps, num_episodes=num_episodes, key=jax.random.key(0))
        seconds = time.perf_counter() - began
        metrics = result.predict(jax.random.key(3), test).metrics(test.query_y, level=0.9)
        row = " ".join(
            f"{m:7.3f} +- {h:.3f}" for m, h in (mean_interval(metrics[k]) for k in ("mse", "nll", "coverage"))
        )
        print(f"{name:8s} {seconds:8.1f} {row}")
        results[name] = result
        predictions[name] = result.predict(jax.random.key(4), shown)

    params = results["NIW head"].params
    print(f"\nNIW head: learned noise sd {float(np.exp(params.log_noise)):.3f}")
    episode = jax.tree.map(lambda leaf: leaf[0], test)
    idata = niw.episode_posterior(results["NIW head"], jax.random.key(5), episode, num_samples=200).to_arviz()
    print(f"ArviZ (one test task): posterior {dict(idata.posterior.sizes)}, groups {list(idata.groups())}")

    written = plot(predictions, shown, out)
    print(f"wrote {written} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="150 steps x 8 episodes, 50 test tasks (CI)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("examples/output"))
    options = parser.parse_args()
    main(options.quick, options.out)
