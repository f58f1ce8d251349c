"""Islands of one diffusion-sampler call read back as independent runs."""

import numpy as np
from scipy.special import logsumexp


def independent_runs(result, num_runs: int):
    """Island ``j`` of a run with ``num_runs`` equal islands as an independent run: particles
    ``(num_runs, n, d)``, normalised weights ``(num_runs, n)`` and log-evidence ``log Z_j``
    ``(num_runs,)``, read back from the merged weights (``merged_j = w_j Z_j / sum_k Z_k``)."""
    log_weights = np.asarray(result.log_weights, np.float64).reshape(num_runs, -1)
    particles = np.asarray(result.particles).reshape(*log_weights.shape, -1)
    log_z = logsumexp(log_weights, axis=1) + result.log_evidence + np.log(num_runs)
    weights = np.exp(log_weights - logsumexp(log_weights, axis=1, keepdims=True))
    return particles, weights, log_z
