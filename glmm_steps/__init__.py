"""Tested steps of the mixed-model workflow: config, simulate, fit, extract, plot.

Every Snakemake rule calls one function from this package; none of them imports
Snakemake, so the same steps run from a notebook or a plain Python loop.
"""

__version__ = "0.1.0"
