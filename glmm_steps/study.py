"""Simulation studies on paper: replicate seeds, design sweeps and batches.

A dataset with ``replicates: N`` is a study. Replicate ``i`` (0-based) is simulated
from :func:`replicate_seed` ``(base_seed, i)``; a ``sweep`` crosses design values into
named design points, all simulated from the same replicate seeds (common random
numbers, so differences between designs are not blurred by independent noise); each
model of the dataset fits its replicates in batches of ``batch_size`` per job. This
module is bookkeeping on the config only: no I/O, no fitting.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from glmm_steps.errors import ConfigError, GlmmError, abbreviate

BASE_DESIGN = "base"  # the name of a study's only design point when nothing is swept

# A swept key's label in design names drops these container keys: `levels.hospital_id.n`
# reads as `hospital_id.n`, `outcomes.bp.coefficients.time` as `bp.coefficients.time`.
_CONTAINERS = ("levels", "outcomes")


def replicate_seed(base_seed: int, index: int) -> int:
    """Seed of replicate ``index`` (0-based) of a study with ``base_seed``.

    It is the first 64 bits of ``numpy.random.SeedSequence(base_seed, spawn_key=(index,))``,
    which is child ``index`` of ``SeedSequence(base_seed).spawn(n)``, shifted right by one
    bit so it fits a signed 64-bit integer (CSV and JSON readers). It depends on these two
    numbers only: replicate 7 keeps its seed when a study grows from 50 to 500 replicates."""
    state = np.random.SeedSequence(int(base_seed), spawn_key=(int(index),)).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def replicate_seeds(base_seed: int, n: int) -> list[int]:
    """Seeds of replicates ``0 .. n-1`` (see :func:`replicate_seed`)."""
    return [replicate_seed(base_seed, i) for i in range(n)]


def batch_ranges(n: int, size: int) -> list[tuple[int, int]]:
    """Replicates ``0 .. n-1`` cut into batches of ``size``: (first, last) pairs, inclusive."""
    return [(first, min(first + size, n) - 1) for first in range(0, n, size)]


def batch_name(first: int, last: int) -> str:
    """A batch's name in paths: its replicate range, ``0-99``."""
    return f"{first}-{last}"


def parse_batch_name(name: str) -> tuple[int, int]:
    """(first, last) of a batch named by :func:`batch_name`."""
    first, last = name.split("-")
    return int(first), int(last)


@dataclass(frozen=True)
class DesignPoint:
    """One design of a study: its name, the swept values that make it (empty for the
    base design) and the complete ``simulate:`` mapping to simulate it from."""

    name: str
    values: dict[str, float]
    spec: dict[str, Any]


def _label(key: str) -> str:
    parts = key.split(".")
    return ".".join(parts[1:]) if parts[0] in _CONTAINERS and len(parts) > 1 else key


def _format(value: float) -> str:
    # Integral values print without a decimal point (n=5, not n=5.0) so a name reads as written.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def design_name(values: dict[str, float]) -> str:
    """The stable name of a design point: ``label=value`` per swept key, joined by
    commas in sweep order (``hospital_id.n=5``), or ``base`` when nothing is swept.
    It depends only on the swept values, so adding a value keeps the other names."""
    if not values:
        return BASE_DESIGN
    return ",".join(f"{_label(k)}={_format(v)}" for k, v in values.items())


def _child(node: Any, part: str, where: str, walked: str) -> Any:
    if isinstance(node, dict):
        if part in node:
            return node[part]
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if (isinstance(item, dict) and item.get("name") == part) or part == str(i):
                return item
    raise ConfigError(where, f"the design has no '{walked}'")


def set_key(spec: dict[str, Any], key: str, value: float, where: str) -> dict[str, Any]:
    """A copy of the ``simulate:`` mapping ``spec`` with dotted ``key`` set to ``value``.

    Segments walk mappings by key and lists by an element's ``name`` (or index), so
    ``levels.hospital_id.n`` is the ``n`` of the level named hospital_id. The last
    segment may add a key (a coefficient the base design leaves out); everything above
    it must exist. ``where`` names the key in errors (ConfigError)."""
    out = copy.deepcopy(spec)
    parts = key.split(".")
    node: Any = out
    for i, part in enumerate(parts[:-1]):
        node = _child(node, part, where, ".".join(parts[: i + 1]))
    last = parts[-1]
    if isinstance(node, dict):
        node[last] = value
    else:
        item = _child(node, last, where, key)
        node[node.index(item)] = value
    return out


def design_points(spec: dict[str, Any], sweep: dict[str, list[float]], where: str) -> list[DesignPoint]:
    """Every design point of a study: the ``simulate:`` mapping ``spec`` with each
    combination of the ``sweep`` values (keys crossed, in the order written). Without
    a sweep, the single point ``base``. ``where`` is the sweep's key path for errors."""
    if not sweep:
        return [DesignPoint(BASE_DESIGN, {}, copy.deepcopy(spec))]
    keys = list(sweep)
    points = []
    for combo in itertools.product(*(sweep[k] for k in keys)):
        values = dict(zip(keys, combo))
        point = spec
        for k, v in values.items():
            point = set_key(point, k, v, f"{where}.{k}")
        points.append(DesignPoint(design_name(values), values, point))
    return points


def batch_jobs(replicates: int, batch_size: int, n_designs: int) -> int:
    """Batch jobs one model of a study makes: batches per design times designs."""
    return len(batch_ranges(replicates, batch_size)) * n_designs


_TARGET = re.compile(
    r"studies/(?P<model>[^/]+)/(?P<design>[^/]+)/"
    r"(?:replicates/rep-(?P<index>\d+)|batches/(?P<batch>\d+-\d+))(?:/|$)"
)


def check_targets(plan: Any, targets: list[str]) -> None:
    """Refuse, in one line, a file asked for on the command line under a study's
    replicates or batches that the config's studies do not have (``rep-5000`` of a
    50-replicate study, ``batches/0-999999999``): Snakemake would otherwise accept
    the first and expand the second into a billion seeds. ``plan`` is the checked
    config (glmm_steps.config.Plan); arguments that are not such paths are ignored."""
    for target in targets:
        if target.startswith("-"):
            continue
        rel = os.path.relpath(target, plan.results)
        m = _TARGET.match(rel.replace(os.sep, "/"))
        if m is None:
            continue
        model, design = m["model"], m["design"]
        if model not in plan.study_models:
            raise GlmmError(
                f"{target}: {abbreviate(model)} is not a model of a study in this config "
                f"(study models: {', '.join(plan.study_models) or 'none'})"
            )
        if design not in plan.design_names(model):
            raise GlmmError(
                f"{target}: {abbreviate(design)} is not a design point of {model}'s study "
                f"({', '.join(plan.design_names(model))})"
            )
        n = plan.config["datasets"][plan.dataset_of(model)]["replicates"]
        if m["index"] is not None and int(m["index"]) >= n:
            raise GlmmError(f"{target}: {model}'s study has replicates 0-{n - 1} (replicates: {n})")
        batches = [b.name for b in plan.batches_of(model) if b.design == design]
        if m["batch"] is not None and m["batch"] not in batches:
            shown = ", ".join(batches[:3]) + (", ..." if len(batches) > 3 else "")
            raise GlmmError(f"{target}: not a batch of {model}'s study (its batches: {shown})")
