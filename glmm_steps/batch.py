"""Run a study's replicates: simulate, fit and tidy each one in-process, many per job.

One function, :func:`fit_replicate`, does a replicate's work; a batch job calls it for
each of its replicates (:func:`run_batch`) and :func:`replicate_to_files` calls it to
rerun one replicate alone, so both give the same numbers. A batch writes two tidy
tables rather than files per replicate: ``estimates``, one row per replicate and
parameter next to its true value, and ``fits``, one row per replicate (seed, status,
convergence, singularity, error), so a failed replicate is a row, never a gap.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import pandas as pd

from glmm_steps import extract, families, model_matrix, tables
from glmm_steps.columns import ESTIMATE_COLUMNS, FIT_COLUMNS
from glmm_steps.engines.base import FitResult, ModelSpec
from glmm_steps.errors import DataError, GlmmError
from glmm_steps.fit import _failed, engine_errors, fit_model
from glmm_steps.formula import parse
from glmm_steps.logs import progress
from glmm_steps.simulate import Design, design_from_config, design_rows, draw_response, simulate, write_replicate

NAN = float("nan")


def fit_replicate(
    design: Design, spec: ModelSpec, seed: int, factors=(), *, random_effects: bool = False, study=None
) -> tuple[pd.DataFrame, dict[str, Any], FitResult]:
    """Simulate the replicate of ``design`` with ``seed`` and fit ``spec`` to it, its
    optimizer started at the true parameters (:func:`true_covariance`; ``study`` as
    :func:`study_truth` gives it for ``spec``), as a batch's refits start.

    Returns ``(data, truth, result)`` as :func:`glmm_steps.simulate.simulate` and
    :func:`glmm_steps.fit.fit_model` give them; ``random_effects`` as in fit_model (a
    batch skips the conditional modes; they change no other number)."""
    data, truth = simulate(design, seed)
    try:
        result = fit_model(
            data,
            spec,
            where=f"{spec.dataset} seed {seed}",
            factors=factors,
            random_effects=random_effects,
            start=true_covariance(spec, truth, design, study),
        )
    except DataError as e:
        # The data checks refuse what the engine would fail on (a grouping factor with one
        # level, ...); in a study that is a failed replicate to count, as fit_file records it.
        result = _failed(spec, f"DataError: {e}")
    return data, truth, result


@functools.lru_cache(maxsize=64)
def _parsed(text: str):
    """A formula parsed once per batch, not once per replicate (parsing costs about as
    much as a tenth of a refit)."""
    return parse(text)


def _truth_outcome(spec: ModelSpec, truth: dict[str, Any], study=None) -> dict[str, Any]:
    """The simulated truth of ``spec``'s outcome, its random effects in the model's own
    terms where ``study`` (:func:`study_truth`) has them."""
    outcome = truth["outcomes"][_parsed(spec.formula).outcome]
    if study is not None and study.random:
        outcome = {**outcome, "random_effects": {**outcome.get("random_effects", {}), **study.random}}
    return outcome


def _fixed_truth(term: str, outcome: dict[str, Any], design: Design) -> float:
    if term in outcome["fixed_effects"]:
        return float(outcome["fixed_effects"][term])
    # An interaction is the same term whichever order the formula names it in.
    by_parts = {frozenset(k.split(":")): v for k, v in outcome["fixed_effects"].items()}
    if ":" in term and frozenset(term.split(":")) in by_parts:
        return float(by_parts[frozenset(term.split(":"))])
    # A design column without a coefficient (a level id used as a covariate) has no effect.
    return 0.0 if term in design.columns else NAN


def _sd_truth(group: str, term: str, outcome: dict[str, Any], design: Design) -> float:
    if group == "Residual":
        if outcome.get("cv") is not None:  # a Gamma outcome: lme4's sigma() estimates its CV
            return float(outcome["cv"])
        return NAN if outcome["residual_sd"] is None else float(outcome["residual_sd"])
    if group not in {lv.name for lv in design.levels} | {c.name for c in design.crossed}:
        return NAN  # an interaction such as a:b has no single simulated SD
    effects = outcome.get("random_effects", {}).get(group)
    if effects is not None:  # a pilot's random terms (glmm_steps.outcome_model)
        return float(effects["sd"][effects["terms"].index(term)]) if term in effects["terms"] else 0.0
    if term == "(Intercept)":
        return float(outcome["random_sd"].get(group, 0.0))
    slope = outcome.get("random_slopes", {}).get(group)
    # A slope the design does not draw has a true SD of 0.
    return float(slope["sd"]) if slope is not None and slope["term"] == term else 0.0


def _cor_truth(group: str, pair: str, outcome: dict[str, Any]) -> float:
    effects = outcome.get("random_effects", {}).get(group)
    if effects is not None:
        terms = effects["terms"]
        for i, a in enumerate(terms):
            for j, b in enumerate(terms):
                if i != j and pair == f"{a}.{b}":
                    return float(effects["cor"][i][j])
        return NAN
    slope = outcome.get("random_slopes", {}).get(group)
    if slope is not None and pair == f"(Intercept).{slope['term']}":
        return float(slope["cor"])
    return NAN


def true_covariance(spec: ModelSpec, truth: dict[str, Any], design: Design, study=None):
    """Where a study's fit starts its optimizer: a function of a group and a list of the
    model's random terms giving the true covariance of those effects (SDs and
    correlations as the estimates table's true values, :func:`parameters`), relative
    to the residual variance for a gaussian model, on glmer's scale for a binomial or
    Poisson one; its value None where it is unknown (a group such as a:b, which the
    design does not draw as one). This is what simr's refits start from: lme4's
    ``refit`` starts at the model's parameters, which there are the simulation's. The
    optimum is the one the engine's default start reaches, in fewer steps. None (the
    default start) for the other families."""
    if spec.family not in ("gaussian", "binomial", "poisson"):
        return None
    outcome = _truth_outcome(spec, truth, study)
    residual = outcome.get("residual_sd") if spec.family == "gaussian" else 1.0
    if not residual:
        return None

    def covariance(group: str, terms: list[str]) -> np.ndarray | None:
        sd = np.array([_sd_truth(group, t, outcome, design) for t in terms]) / float(residual)
        cov = np.diag(sd**2)
        for i in range(len(terms)):
            for j in range(i + 1, len(terms)):
                cor = _cor_truth(group, f"{terms[i]}.{terms[j]}", outcome)
                if np.isfinite(cor):
                    cov[i, j] = cov[j, i] = cor * sd[i] * sd[j]
        return cov if np.isfinite(cov).all() else None

    return covariance


def parameters(result: FitResult, truth: dict[str, Any], design: Design, study=None) -> list[dict[str, Any]]:
    """The estimated parameters of one fit, each next to its true value: fixed effects
    with their tests (:func:`glmm_steps.extract.tidy`: the model's ``inference`` and
    ``intervals``), then the variance
    components on the SD scale, named as broom.mixed names them: ``sd__<term>`` per
    group, ``sd__Observation`` for the residual (a Gamma model's sigma, true value
    the simulated CV), ``theta`` for a negative binomial dispersion, ``cor__<a>.<b>``
    for correlations (true value the simulated slope's correlation with its intercept,
    else unknown, NaN). ``truth`` is the simulate step's record; a failed fit has none.
    ``study``: the true parameters in the model's own coefficients, where they are not
    the generator's by name (:func:`study_truth`)."""
    if not result.ok:
        return []
    outcome = _truth_outcome(result.spec, truth, study)
    fixed_truth = study.fixed if study is not None else None
    columns = extract.fixed_columns(result)
    rows = [
        {
            "effect": "fixed",
            "group": "",
            "term": term,
            **{k: (v[i] if hasattr(v, "__len__") and not isinstance(v, str) else v) for k, v in columns.items()},
            "true_value": fixed_truth.get(term, NAN) if fixed_truth else _fixed_truth(term, outcome, design),
        }
        for i, term in enumerate(tables.column(result.fixef, "term").tolist())
    ]
    # Rows straight from arrays: a study makes these per replicate, and a table per fit
    # (tidy, then to_dict) costs more than the refit itself. Profile intervals of an SD
    # or correlation (intervals: profile) give the recovery table their coverage
    # (variance_components adds them); Wald intervals leave them empty.
    vcs = extract.variance_components(result) if len(getattr(result, "intervals", ())) else result.varcorr
    names = list(vcs.columns)
    for vc in (dict(zip(names, r)) for r in zip(*(tables.column(vcs, c).tolist() for c in names))):
        base = {
            "effect": "ran_pars",
            "group": vc["group"],
            "std_error": NAN,
            "statistic": NAN,
            "p_value": NAN,
            "conf_low": vc.get("conf_low", NAN),
            "conf_high": vc.get("conf_high", NAN),
        }
        if vc["group"] == "Residual" and vc["term"] == "theta":  # the negative binomial dispersion
            rows.append(
                {**base, "term": "theta", "estimate": vc["variance"], "true_value": float(outcome.get("theta") or NAN)}
            )
        elif vc["term"].startswith("cor("):
            pair = vc["term"][4:-1].replace(",", ".")
            rows.append(
                {
                    **base,
                    "term": f"cor__{pair}",
                    "estimate": vc["correlation"],
                    "true_value": _cor_truth(vc["group"], pair, outcome),
                }
            )
        else:
            term = "sd__Observation" if vc["group"] == "Residual" else f"sd__{vc['term']}"
            rows.append(
                {
                    **base,
                    "term": term,
                    "estimate": vc["sd"],
                    "true_value": _sd_truth(vc["group"], vc["term"], outcome, design),
                }
            )
    return rows


def fit_record(result: FitResult) -> dict[str, Any]:
    """One replicate's fit in a row: status (ok, singular, not_converged, failed),
    convergence, singularity, rows fitted, log-likelihood, error, warnings and the
    residual tests' p values and dispersion ratio (NaN when not computed)."""
    d = result.diagnostics or {}

    def get(test: str, key: str) -> float:
        return float(d[test][key]) if d.get(test) else NAN

    return {
        "status": extract.status(result),
        "converged": bool(result.converged),
        "singular": bool(result.singular),
        "nobs": result.nobs,
        "logLik": result.loglik,
        "error": result.error or "",
        "warnings": " | ".join(result.warnings),
        "uniformity_p": get("uniformity", "p_value"),
        "dispersion_ratio": get("dispersion", "ratio"),
        "dispersion_p": get("dispersion", "p_value"),
        "zero_inflation_p": get("zero_inflation", "p_value"),
        "outliers_p": get("outliers", "p_value"),
    }


def refittable(design: Design, spec: ModelSpec) -> bool:
    """Whether a study's replicates of ``design`` can refit one template of ``spec``
    with new responses (:class:`~glmm_steps.engines.mixedlm_engine.Refitter`): a
    mixedlm model of a simulated outcome, gaussian (lmer), binomial or Poisson (glmer,
    any link, Laplace or ``nagq``), without trials or offset, on a design whose rows
    are the same in every replicate, with Wald intervals. Each refit optimizes from
    the start :func:`fit_replicate` gives a full fit, so its estimates, standard
    errors, logLik, status and warnings are a full fit's; it runs the full fit's
    convergence checks (optimizer flag, gradient, Hessian). A negative binomial model (its theta search refits
    glmer many times) and a Gamma model (its own objective) fit each replicate in
    full. The refit model carries its own Satterthwaite or Kenward-Roger tests (the
    Refitter computes them from the refitted lmer, as a full fit does); profile
    intervals (``intervals: profile``) need the full fit's ML refits and profiles, so
    such a model fits each replicate in full; so does one whose replicates get
    simulation residual tests (``residuals: {nsim: > 0}``: they need the full fit's
    model), which a study that wants the refit path's speed turns off with
    ``residuals: {nsim: 0}``. A replicate whose response is the same on every row
    (a rare binary outcome, say) is fitted in full, so it fails with the data
    check's message as a full fit does."""
    from glmm_steps.engines.mixedlm_engine import REFIT_FAMILIES

    formula = parse(spec.formula)
    return (
        spec.engine == "mixedlm"
        and spec.family in REFIT_FAMILIES
        and not formula.trials
        and not formula.offset
        and formula.response == formula.outcome
        and formula.response in {o.name for o in design.outcomes}
        and getattr(design, "fixed_rows", True)
        and spec.intervals == "wald"
        and spec.residual_nsim == 0
    )


def study_truth(design: Design, spec: ModelSpec, factors=()):
    """The true parameters in ``spec``'s own coefficients where its outcome is simulated
    through a pilot's model that codes the design's rows otherwise (transforms
    recomputed from the simulated rows, another reference level): a
    :class:`glmm_steps.outcome_model.StudyTruth`, or None for an outcome without a
    pilot's model (its truth is by name)."""
    from glmm_steps import outcome_model

    formula = _parsed(spec.formula)
    outcome = next((o for o in design.outcomes if o.name == formula.outcome), None)
    if outcome is None or outcome.model is None:
        return None
    rows, _ = design_rows(design)
    return outcome_model.study_truth(
        outcome.model, rows, outcome.intercept, outcome.coefficients, outcome.random_sd, formula, factors
    )


def _checks_pass(family: str, response: np.ndarray) -> bool:
    """Whether the data checks of a full fit (:func:`glmm_steps.data.model_frame`)
    accept this simulated response: not the same on every row, 0 or 1 for a binomial
    model, counts for a Poisson one."""
    if not (response != response[0]).any():
        return False
    if family == "binomial":
        return bool(np.isin(response, (0.0, 1.0)).all())
    return not families.bad_response(family, response)[0].any()


class _Refits:
    """A batch's replicates by refitting: the design's rows and the model's matrices
    are built once (from the first replicate that fits), then each replicate draws
    only the modelled outcome and refits it, from the true parameters
    (:func:`true_covariance`, ``study`` as :func:`study_truth` gives it), as
    :func:`fit_replicate` fits. Returns None where the full path must run (no template
    yet: the first replicates failed their data checks or fit)."""

    def __init__(self, design: Design, spec: ModelSpec, factors, study=None):
        self.design, self.spec, self.factors, self.study = design, spec, factors, study
        self.response = parse(spec.formula).response
        self.rows = design_rows(design)
        self.refit = None
        self.truth: dict[str, Any] | None = None

    def __call__(self, seed: int) -> tuple[dict[str, Any], FitResult] | None:
        if self.refit is None:
            from glmm_steps import data as data_mod
            from glmm_steps.engines.mixedlm_engine import Refitter

            data, truth = simulate(self.design, seed)
            formula = parse(self.spec.formula)
            where = f"{self.spec.dataset} seed {seed}"
            try:
                frame, _ = data_mod.model_frame(data, formula, where, self.factors, family=self.spec.family)
                # The matrices as fit_model builds them (the dataset's factors and contrasts).
                matrices = model_matrix.build(formula, frame, self.factors, where=where)
                start = true_covariance(self.spec, truth, self.design, self.study)
                self.refit = Refitter(frame, self.spec, formula, matrices, start)
            except (GlmmError, *engine_errors()):
                return None
            self.truth = truth
        response = draw_response(self.design, self.response, seed, self.rows)
        if not _checks_pass(self.spec.family, response):
            return None  # the full path's data checks refuse it, in their words
        try:
            result = self.refit(response)
        except engine_errors() as e:
            result = _failed(self.spec, f"{type(e).__name__}: {e}")
        return {**self.truth, "seed": int(seed)}, result


def ml_spec(spec: ModelSpec) -> ModelSpec:
    """The spec a likelihood-ratio test fits: ML (a gaussian REML model is refitted by
    ML, as lme4's anova() does), with Wald tests and intervals, which the test does
    not read."""
    return dataclasses.replace(
        spec, reml=False if spec.family == "gaussian" else spec.reml, inference="wald", intervals="wald"
    )


def lrt_row(result: FitResult, other: FitResult) -> dict[str, Any]:
    """A study's ``test: lrt``: the likelihood-ratio test of ``result``'s model against
    ``other`` (its ``compare_with``), both ML fits of the same replicate
    (:func:`ml_spec`), by :func:`glmm_steps.compare.compare`, the per-seed compare
    step's test. One estimates row: effect ``lrt``, term ``vs <other>``, chisq as
    estimate and statistic, its df, the p-value; empty when a fit failed."""
    from glmm_steps.compare import compare

    row = {
        "effect": "lrt",
        "group": "",
        "term": f"vs {other.spec.name}",
        "true_value": NAN,
        "std_error": NAN,
        "conf_low": NAN,
        "conf_high": NAN,
        "test": "LRT",
        "interval": "",
        "method": "ML",
    }
    table, _ = compare([result, other])
    last = table.iloc[-1]
    return {**row, "estimate": last["chisq"], "statistic": last["chisq"], "df": last["df"], "p_value": last["p_value"]}


def run_batch(
    design: Design,
    spec: ModelSpec,
    design_name: str,
    replicates: list[tuple[int, int]],
    factors=(),
    report=None,
    compare_with: ModelSpec | None = None,
    *,
    refit: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit ``spec`` to each (index, seed) in ``replicates`` of design point ``design_name``
    (and, for a likelihood-ratio test row, :func:`lrt_row`, ``compare_with`` too).

    Where :func:`refittable`, and unless ``refit`` is False, replicates refit one
    template with their new response (the same estimates, tests, convergence and
    Hessian checks as a full fit from the same start, :func:`fit_replicate`, without
    the per-replicate work the tables do not read: fitted values, conditional modes,
    AIC/BIC).

    Returns ``(estimates, fits)``: ESTIMATE_COLUMNS, one row per replicate and parameter,
    and FIT_COLUMNS, one row per replicate. ``report(done, failed)`` is called after
    each replicate (see :func:`glmm_steps.logs.progress`)."""
    estimates, fits, failed = [], [], 0

    def fitter(model: ModelSpec, study):
        refits = _Refits(design, model, factors, study) if refit and refittable(design, model) else None

        def one(seed: int):
            fast = refits(seed) if refits is not None else None
            return fast if fast is not None else fit_replicate(design, model, seed, factors, study=study)[1:]

        return one

    truth_of_model = study_truth(design, spec, factors)
    fit_full = fitter(spec, truth_of_model)
    # test: lrt compares ML fits: the model's own fit where it is one, else an ML refit.
    reml = spec.family == "gaussian" and spec.reml
    fit_full_ml = fitter(ml_spec(spec), truth_of_model) if compare_with is not None and reml else None
    fit_other = None
    if compare_with is not None:
        fit_other = fitter(ml_spec(compare_with), study_truth(design, compare_with, factors))
    for done, (index, seed) in enumerate(replicates, start=1):
        truth, result = fit_full(seed)
        keys = {"model": spec.name, "design": design_name, "replicate": index, "seed": seed}
        estimates += [{**keys, **row} for row in parameters(result, truth, design, truth_of_model)]
        if compare_with is not None and result.ok:
            full_ml = fit_full_ml(seed)[1] if fit_full_ml is not None else result
            estimates.append({**keys, **lrt_row(full_ml, fit_other(seed)[1])})
        fits.append({**keys, **fit_record(result)})
        failed += not result.ok
        if report is not None:
            report(done, failed)
    return (pd.DataFrame(estimates, columns=ESTIMATE_COLUMNS), pd.DataFrame(fits, columns=FIT_COLUMNS))


def batch_to_files(
    simulate_spec: dict[str, Any],
    model: str,
    model_entry: dict[str, Any],
    design_name: str,
    replicates: list[tuple[int, int]],
    factors,
    outputs: dict[str, str],
    compare_with: dict[str, dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """The study_batch step: run a batch (:func:`run_batch`) of the ``simulate:`` mapping
    ``simulate_spec`` with the model's config entry, printing a progress line every 10%,
    and write the ``estimates`` and ``fits`` tables to ``outputs``. ``compare_with``
    ({name: config entry}, ``test: lrt`` only) is the model to test against. Returns
    the fits."""
    spec = ModelSpec.from_config(model, model_entry)
    other = next((ModelSpec.from_config(n, e) for n, e in (compare_with or {}).items()), None)
    first, last = replicates[0][0], replicates[-1][0]
    report = progress(f"{model} {design_name} replicates {first}-{last}", len(replicates))
    estimates, fits = run_batch(
        design_from_config(simulate_spec), spec, design_name, replicates, factors, report, compare_with=other
    )
    extract.write_csv(estimates, outputs["estimates"])
    extract.write_csv(fits, outputs["fits"])
    return fits


def replicate_to_files(
    simulate_spec: dict[str, Any], model: str, model_entry: dict[str, Any], seed: int, factors, outputs: dict[str, str]
) -> dict[str, Any]:
    """Rerun one study replicate alone with the full per-replicate outputs: its data and
    truth, the tidy tables of :func:`glmm_steps.extract.extract` and the plots of
    :func:`glmm_steps.plot.plot_fit` (``outputs`` keys as
    :func:`glmm_steps.paths.replicate_outputs`). Returns the fit_stats record."""
    from glmm_steps.plot import plot_fit

    spec = ModelSpec.from_config(model, model_entry)
    design = design_from_config(simulate_spec)
    study = study_truth(design, spec, factors)
    data, truth, result = fit_replicate(design, spec, seed, factors, random_effects=True, study=study)
    write_replicate(data, truth, outputs["data"], outputs["truth"])
    record = extract.extract(result, outputs, seed=seed, data_path=outputs["data"])
    plot_fit(
        outputs["predictions"],
        outputs["random_effects"],
        record,
        outputs,
        factors,
        residuals_path=outputs["scaled_residuals"],
    )
    return record
