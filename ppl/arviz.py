"""Alias kept for code written before the runtime layout: use :mod:`ppl.runtime.arviz`
(and :func:`ppl.to_inference_data`, :func:`ppl.save`, :func:`ppl.load`)."""

from ppl.runtime.arviz import from_groups, load, save, to_dataset  # noqa: F401
from ppl.runtime.results import to_inference_data  # noqa: F401
