"""What a cluster scheduler needs to know about the workflow's jobs.

Two things live here, both free of Snakemake so they can be tested directly:
the resources a rule asks the scheduler for (the Snakefile's defaults, overridden
per rule by the config's ``resources`` key, grown on each retry), and the check
that a SLURM run has a SLURM to submit to.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

# Resources a retry multiplies: a job the scheduler killed for running out of time
# or memory would only be killed again with the same request.
GROWS_ON_RETRY = ("mem_mb", "runtime")

# Executors that submit through `sbatch` (the SLURM executor plugin's name).
SLURM_EXECUTORS = ("slurm",)


def rule_resources(config: dict[str, Any], rule: str, defaults: dict[str, int], attempt: int = 1) -> dict[str, int]:
    """The resources ``rule`` requests on its ``attempt``-th try (1 = first).

    Takes the checked config (its ``resources.<rule>`` entry overrides ``defaults``
    key by key) and the Snakefile's ``defaults`` (e.g. ``mem_mb``, ``runtime`` in
    minutes). Returns a new dict in which ``mem_mb`` and ``runtime`` are multiplied
    by ``attempt``; other resources (``cpus_per_task``) stay as they are."""
    values = {**defaults, **config.get("resources", {}).get(rule, {})}
    return {name: value * attempt if name in GROWS_ON_RETRY else value for name, value in values.items()}


def missing_scheduler(executor: str | None, which: Callable[[str], str | None] = shutil.which) -> str | None:
    """Why a run with ``executor`` (the Snakemake executor plugin's name, None when
    local) cannot submit jobs, or None if it can.

    A SLURM run needs ``sbatch`` on PATH; without it the plugin would fail each job
    separately with a shell error. ``which`` finds a program (``shutil.which``)."""
    if executor in SLURM_EXECUTORS and which("sbatch") is None:
        return (
            "error: the SLURM profile needs a SLURM cluster: 'sbatch' is not on PATH "
            "(run locally with --profile profiles/default)"
        )
    return None
