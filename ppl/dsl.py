"""Alias kept for code written before the runtime layout: use :mod:`ppl.model.dsl`
(or ``ppl.sample``, ``ppl.plate``, ...)."""

from ppl.model.dsl import deterministic, factor, param, plate, sample  # noqa: F401
