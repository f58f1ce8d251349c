"""Empirical Bayes and compound estimation."""

from ppl.eb import binomial, paired, robust

__all__ = ["binomial", "paired", "robust"]
