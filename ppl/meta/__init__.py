"""Few-shot meta-learning: hierarchical Normal-Inverse-Wishart meta-learning
(:mod:`ppl.meta.niw`) and its baselines, on episodes of support and query sets.

- baselines in the same harness: :func:`~ppl.meta.baselines.maml`,
  :func:`~ppl.meta.baselines.pretrain_finetune`, :func:`~ppl.meta.baselines.protonet`;
- episodes: :class:`~ppl.meta.episodes.Episodes`, generators and checks (:mod:`ppl.meta.episodes`);
- networks and likelihoods (:mod:`ppl.meta.networks`);
- the kernel protocol every method follows and the driver :func:`train` (:mod:`ppl.meta.training`);
- predictions and their metrics (:mod:`ppl.meta.predictive`).
"""

from ppl.meta import baselines, episodes, networks, niw, predictive, training
from ppl.meta.baselines import maml, pretrain_finetune, protonet
from ppl.meta.training import MetaLearner, TrainResult, train

__all__ = [
    "MetaLearner",
    "TrainResult",
    "baselines",
    "episodes",
    "maml",
    "networks",
    "niw",
    "predictive",
    "pretrain_finetune",
    "protonet",
    "train",
    "training",
]
