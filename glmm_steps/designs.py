"""The design elements of a power study beyond nested random intercepts.

A trialist's design (simr's use cases) has more than nested levels and a repeated
covariate: treatment arms assigned at some level with an allocation ratio, covariates
measured at some level, random slopes, factors crossed with the nesting (raters by
items), unbalanced cluster sizes and missing data. This module holds those elements
as small frozen specs, builds the rows of a design from them (:func:`rows`) and removes
the rows a replicate loses to dropout or missingness (:func:`apply_missing`);
:mod:`glmm_steps.simulate` draws the outcomes on those rows.

Everything that describes *who is in the study* is fixed by the design, not by the
replicate seed: arm allocation (interleaved by the ratio, so every prefix of units is
as balanced as the ratio allows), covariate values and unbalanced sizes drawn from a
distribution come from generators seeded by the element's name. So, as in simr, a
study's replicates share one design and differ in random effects, noise and missing
rows; a design without missing data has the same rows in every replicate, which lets
a study refit one model structure (:mod:`glmm_steps.batch`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


def _rng(*names: str, seed: int | None = None) -> np.random.Generator:
    """A generator seeded by names (and a replicate seed when given), so a design
    element's draws depend on nothing else."""
    key = [zlib.crc32(n.encode()) for n in names]
    return np.random.default_rng(key if seed is None else [int(seed), *key])


@dataclass(frozen=True)
class Sizes:
    """Unbalanced units per unit of the level above: a list cycled over the parent
    units, or a Poisson distribution (``mean``, at least ``minimum``) drawn once per
    design."""

    values: tuple[int, ...] = ()
    mean: float | None = None
    minimum: int = 1

    def per_parent(self, name: str, n_parents: int) -> np.ndarray:
        """Units under each of ``n_parents`` parent units of level ``name``."""
        if self.values:
            return np.resize(np.asarray(self.values, dtype=np.int64), n_parents)
        drawn = _rng("sizes", name).poisson(float(self.mean), size=n_parents)
        return np.maximum(drawn, self.minimum).astype(np.int64)

    @property
    def largest(self) -> int:
        """An upper bound of units per parent, for size checks (Poisson: mean + 6 SD)."""
        if self.values:
            return max(self.values)
        return max(self.minimum, int(np.ceil(self.mean + 6 * np.sqrt(self.mean) + 1)))


@dataclass(frozen=True)
class Arms:
    """Treatment arms assigned per unit of ``level`` (a grouping level, or the repeated
    covariate for a crossover), in proportion ``ratio``; the first label is the
    reference arm. The column ``name`` holds the labels."""

    name: str
    level: str
    labels: tuple[str, ...]
    ratio: tuple[int, ...]

    def assign(self, n_units: int) -> np.ndarray:
        """Arm index (0-based) of units 0..n_units-1: interleaved by the ratio (1:1 gives
        0,1,0,1,...; 2:1 gives 0,0,1,...), so allocation is as balanced as the ratio allows."""
        cycle = int(sum(self.ratio))
        edges = np.cumsum(self.ratio) / cycle
        position = ((np.arange(n_units) % cycle) + 0.5) / cycle
        return np.searchsorted(edges, position).astype(np.int64)


@dataclass(frozen=True)
class Covariate:
    """A covariate measured once per unit of ``level`` (or per row: the repeated
    covariate's name): normal (``mean``, ``sd``) or binary (0/1 with probability ``p``)."""

    name: str
    level: str
    distribution: str
    mean: float = 0.0
    sd: float = 1.0
    p: float = 0.5

    def draw(self, n_units: int) -> np.ndarray:
        """The covariate's values for ``n_units`` units (fixed by the design)."""
        rng = _rng("covariate", self.name)
        if self.distribution == "binary":
            return (rng.random(n_units) < self.p).astype(np.int64)
        return self.mean + self.sd * rng.standard_normal(n_units)


@dataclass(frozen=True)
class Slope:
    """A random slope of ``term`` (the repeated covariate or a covariate) at a level:
    SD and correlation with the level's random intercept."""

    term: str
    sd: float
    cor: float = 0.0


@dataclass(frozen=True)
class Missing:
    """Rows a replicate loses: ``dropout`` is the chance that a unit of the innermost
    level drops out at each repeated value after the first (monotone: later rows go
    too); ``mcar`` the chance that any remaining row is missing completely at random."""

    dropout: float = 0.0
    mcar: float = 0.0


def sizes_from_config(n: Any) -> tuple[int, Sizes | None]:
    """A level's ``n`` from the config: an integer (balanced), a list of sizes, or
    ``{distribution: poisson, mean, min}``. Returns (nominal n, Sizes or None); the
    nominal n is the integer, the largest listed size, or the rounded mean."""
    if isinstance(n, list):
        return int(max(n)), Sizes(values=tuple(int(v) for v in n))
    if isinstance(n, dict):
        return int(round(float(n["mean"]))), Sizes(mean=float(n["mean"]), minimum=int(n.get("min", 1)))
    return int(n), None


def arms_from_config(spec: dict[str, Any] | None) -> Arms | None:
    """The ``arms:`` mapping (name, level, labels, ratio; ratio defaults to 1 each)."""
    if not spec:
        return None
    labels = tuple(str(v) for v in spec["labels"])
    ratio = tuple(int(v) for v in spec.get("ratio") or [1] * len(labels))
    return Arms(name=spec["name"], level=spec["level"], labels=labels, ratio=ratio)


def covariates_from_config(spec: dict[str, Any] | None) -> tuple[Covariate, ...]:
    """The ``covariates:`` mapping, by column name."""
    return tuple(
        Covariate(
            name=name,
            level=c["level"],
            distribution=c["distribution"],
            mean=float(c.get("mean", 0.0)),
            sd=float(c.get("sd", 1.0)),
            p=float(c.get("p", 0.5)),
        )
        for name, c in (spec or {}).items()
    )


def slopes_from_config(spec: dict[str, Any] | None) -> dict[str, Slope]:
    """An outcome's ``random_slopes:`` mapping, by level."""
    return {
        level: Slope(term=s["term"], sd=float(s["sd"]), cor=float(s.get("cor", 0.0)))
        for level, s in (spec or {}).items()
    }


def missing_from_config(spec: dict[str, Any] | None) -> Missing | None:
    """The ``missing:`` mapping (dropout, mcar), or None when absent or all zero."""
    if not spec or not (spec.get("dropout") or spec.get("mcar")):
        return None
    return Missing(dropout=float(spec.get("dropout", 0.0)), mcar=float(spec.get("mcar", 0.0)))


def rows(design) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The rows of ``design`` (a :class:`glmm_steps.simulate.Design`) without outcomes,
    and per level and crossed factor the 0-based unit index of each row.

    Units are numbered 1..N per level across the design (patient 1..100, not 1..10 per
    hospital); each innermost unit meets every unit of each crossed factor; every such
    combination is observed at every repeated value. Arm labels and covariates follow
    as columns."""
    parent = np.zeros(1, dtype=np.int64)  # the unit of the level above, per unit of this level
    unit_parent: list[np.ndarray] = []
    for lv in design.levels:
        counts = (
            lv.sizes.per_parent(lv.name, len(parent))
            if lv.sizes is not None
            else np.full(len(parent), lv.n, dtype=np.int64)
        )
        parent = np.repeat(np.arange(len(parent)), counts)
        unit_parent.append(parent)
    n_inner = len(parent)
    # Innermost unit of each (innermost unit, crossed units...) combination, then each visit.
    crossed_n = [c.n for c in design.crossed]
    combos = int(np.prod(crossed_n)) if crossed_n else 1
    visits = np.asarray(design.repeated_values)
    inner = np.repeat(np.repeat(np.arange(n_inner), combos), len(visits))
    index: dict[str, np.ndarray] = {}
    unit = inner
    for depth in range(len(design.levels) - 1, -1, -1):
        index[design.levels[depth].name] = unit
        if depth > 0:
            unit = unit_parent[depth][unit]
    cols: dict[str, Any] = {lv.name: index[lv.name] + 1 for lv in design.levels}
    combo = np.tile(np.repeat(np.arange(combos), len(visits)), n_inner)
    below = combos
    for c in design.crossed:
        below //= c.n
        index[c.name] = (combo // below) % c.n
        cols[c.name] = index[c.name] + 1
    cols[design.repeated_name] = np.tile(visits, n_inner * combos)
    index[design.repeated_name] = np.tile(np.arange(len(visits)), n_inner * combos)
    frame = pd.DataFrame(cols)
    if design.arms is not None:
        a = design.arms
        unit_index = index[a.level]
        arm = a.assign(int(unit_index.max()) + 1)[unit_index]
        frame[a.name] = np.asarray(a.labels, dtype=object)[arm]
        index[f"arm:{a.name}"] = arm
    for cov in design.covariates:
        unit_index = index[cov.level]
        frame[cov.name] = cov.draw(int(unit_index.max()) + 1)[unit_index]
    return frame, index


def unit_counts(design) -> dict[str, int]:
    """Units of each level and crossed factor, and distinct repeated values."""
    _, index = rows(design)
    names = [lv.name for lv in design.levels] + [c.name for c in design.crossed] + [design.repeated_name]
    return {n: int(index[n].max()) + 1 for n in names}


def apply_missing(data: pd.DataFrame, index: dict[str, np.ndarray], design, seed: int) -> pd.DataFrame:
    """The rows of one replicate that are observed: monotone dropout of the innermost
    units, then MCAR missingness, drawn from ``(seed, 'missing')``. Rows keep their order;
    the index is renumbered 0..n-1."""
    m = design.missing
    if m is None:
        return data
    rng = _rng("missing", seed=seed)
    keep = np.ones(len(data), dtype=bool)
    if m.dropout > 0:
        inner = index[design.levels[-1].name]
        n_visits = len(design.repeated_values)
        # Visits each unit is seen at: the first always, each later one only if it did not
        # drop out at it, with chance `dropout`: a geometric count, capped at all visits.
        drop_at = np.minimum(rng.geometric(m.dropout, size=int(inner.max()) + 1), n_visits)
        keep &= index[design.repeated_name] < drop_at[inner]
    if m.mcar > 0:
        keep &= rng.random(len(data)) >= m.mcar
    return data.loc[keep].reset_index(drop=True)


def check(design, where: str) -> None:
    """Check what the schema cannot see in a design's new elements (names clash, a
    level, arm label or term that does not exist, a slope without its intercept);
    ``where`` is the design's key path. Raises ConfigError."""
    from glmm_steps.errors import ConfigError
    from glmm_steps.model_matrix import r_sort_key

    levels = [lv.name for lv in design.levels]
    crossed = [c.name for c in design.crossed]
    names = levels + crossed + [design.repeated_name] + [c.name for c in design.covariates]
    names += [design.arms.name] if design.arms is not None else []
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(
            where, f"column names repeat across levels, crossed factors, covariates and arms: {', '.join(repeated)}"
        )
    at = levels + [design.repeated_name]
    a = design.arms
    if a is not None:
        if a.level not in at:
            raise ConfigError(f"{where}.arms.level", f"unknown level '{a.level}' (levels: {', '.join(at)})")
        if sorted(a.labels, key=r_sort_key)[0] != a.labels[0]:
            raise ConfigError(
                f"{where}.arms.labels",
                f"the reference arm '{a.labels[0]}' must sort first, as "
                f"R's factor() and the data file's reader order levels alphabetically (e.g. "
                f"'a_{a.labels[0]}')",
            )
        if len(a.ratio) != len(a.labels):
            raise ConfigError(f"{where}.arms.ratio", f"{len(a.ratio)} ratios for {len(a.labels)} labels")
    for cov in design.covariates:
        if cov.level not in at:
            raise ConfigError(
                f"{where}.covariates.{cov.name}.level", f"unknown level '{cov.level}' (levels: {', '.join(at)})"
            )
    numeric = {design.repeated_name} | {c.name for c in design.covariates}
    for o in design.outcomes:
        w = f"{where}.outcomes.{o.name}"
        for key, effects in (("arm_effects", o.arm_effects), ("arm_by_time", o.arm_by_time)):
            for label in effects:
                if a is None:
                    raise ConfigError(f"{w}.{key}", "the design has no arms")
                if label not in a.labels[1:]:
                    raise ConfigError(
                        f"{w}.{key}.{label}",
                        f"not an arm other than the reference '{a.labels[0]}' (arms: {', '.join(a.labels)})",
                    )
        for lv, slope in o.random_slopes.items():
            if lv not in levels:
                raise ConfigError(f"{w}.random_slopes.{lv}", f"unknown level (levels: {', '.join(levels)})")
            if slope.term not in numeric:
                raise ConfigError(
                    f"{w}.random_slopes.{lv}.term", f"'{slope.term}' is not the repeated covariate or a covariate"
                )
            if slope.cor and not o.random_sd.get(lv):
                raise ConfigError(
                    f"{w}.random_slopes.{lv}.cor", f"a correlation needs a random intercept: give random_sd.{lv}"
                )


def largest_log_mean(design, outcome) -> float:
    """An upper bound of an outcome's linear predictor over ``design``: the largest fixed
    part over its rows (covariates, arms and sizes are fixed by the design, so this is
    exact), plus 6 SDs of the random intercepts and of each random slope times its
    largest covariate value. The config check keeps a Poisson outcome's below what
    numpy can draw."""
    data, index = rows(design)
    if outcome.model is not None:
        from glmm_steps.outcome_model import largest_linear_predictor

        return largest_linear_predictor(outcome.model, data, outcome.intercept, outcome.coefficients, outcome.random_sd)
    eta = np.full(len(data), float(outcome.intercept))
    for cov, beta in outcome.coefficients.items():
        eta += beta * data[cov].to_numpy(dtype=float)
    if design.arms is not None:
        arm = index[f"arm:{design.arms.name}"]
        time = data[design.repeated_name].to_numpy(dtype=float)
        for j, label in enumerate(design.arms.labels):
            eta += (outcome.arm_effects.get(label, 0.0) + outcome.arm_by_time.get(label, 0.0) * time) * (arm == j)
    spread = 6 * float(np.sqrt(sum(sd * sd for sd in outcome.random_sd.values())))
    for slope in outcome.random_slopes.values():
        spread += 6 * slope.sd * float(np.max(np.abs(data[slope.term].to_numpy(dtype=float))))
    return float(np.max(eta)) + spread if len(eta) else spread
