"""Processes that end when their work ends: a step's job and the Snakemake run.

Two waits followed the work of every process of a run. Python's exit runs its final
garbage collections over every object still alive, most of them the loaded libraries'
(pandas, scipy, matplotlib, Snakemake: 0.1-0.5 s per process here); and Snakemake's
scheduler arms, each round, a non-daemon ``threading.Timer`` of the
``--max-jobs-per-timespan`` span (1 s by default; Snakemake cannot parse a shorter one:
"100ms" reads as 100 minutes), whose last one Python's exit waits for. A study's
pipeline at 1,000 replicates spent about as long in these waits as in its fits.
"""

from __future__ import annotations

import gc
import threading


def freeze_loaded() -> None:
    """Move every object alive now (in a step's process: the libraries it imported) out
    of the garbage collector's reach (``gc.freeze``): the collections during the step's
    work and at its exit no longer walk them. They stay alive, as loaded modules do
    anyway, until the process ends; objects created later are collected as usual."""
    gc.freeze()


def end_run() -> None:
    """For Snakemake's onsuccess and onerror: cancel the scheduler's pending job-rate
    timers (nothing is left to schedule) and freeze the heap (:func:`freeze_loaded`), so
    the process exits as soon as the run is over."""
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()
    freeze_loaded()
