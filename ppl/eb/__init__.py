"""Empirical Bayes and compound estimation."""

from ppl.eb import binomial

__all__ = ["binomial"]
