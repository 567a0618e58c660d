"""Where every output lives. All paths are built here so the layout changes in one place.

``output_path(kind, **keys)`` fills a template; passing ``"{model}"``-style strings as
keys gives the Snakemake wildcard pattern for the same file. Data files, predictions
and random effects are CSV or Parquet: their templates end in ``.{fmt}``, which the
config decides (``Plan.data_format``, ``Plan.table_format``), so every file name is
known before any job runs.
"""

from __future__ import annotations

_DATA = "{results}/data/{dataset}/{replicate}"
_VERSION = "{results}/models/{model}/{version}"
_MODEL = _VERSION + "/{replicate}"
# A study model's outputs: batch tables per design point, the recovery summary, and the
# full outputs of one replicate, made only when asked for (see the README).
_STUDY = "{results}/studies/{model}"
_BATCH = _STUDY + "/{design}/batches/{batch}"
_REPLICATE = _STUDY + "/{design}/replicates/rep-{index}"

TEMPLATES = {
    "data": _DATA + "/data.{fmt}",
    "truth": _DATA + "/truth.json",
    "fit": _MODEL + "/fit.zip",  # glmm_steps.fitfile: JSON, Arrow and .npy, no pickle
    "fixed_effects": _MODEL + "/fixed_effects.csv",
    "anova": _MODEL + "/anova.csv",
    # intervals: bootstrap: the refits of each batch job, and their percentile limits
    "bootstrap_batch": _MODEL + "/bootstrap/batch-{batch}.csv",
    "bootstrap": _MODEL + "/bootstrap.csv",
    "variance_components": _MODEL + "/variance_components.csv",
    "random_effects": _MODEL + "/random_effects.{fmt}",
    "predictions": _MODEL + "/predictions.{fmt}",
    "fit_stats": _MODEL + "/fit_stats.json",
    # one scaled (DHARMa) residual per fitted row, Parquet for large fits like predictions
    "scaled_residuals": _MODEL + "/residuals.{fmt}",
    "plot": _MODEL + "/plots/{plot}.png",
    # answers beyond the estimates (glmm_steps.answers): effect-plot table, predict:, emmeans:
    "effects": _MODEL + "/effects.csv",
    "predictions_new": _MODEL + "/predictions_new.{fmt}",
    "emmeans": _MODEL + "/emmeans.csv",
    "contrasts": _MODEL + "/contrasts.csv",
    "manifest": _VERSION + "/manifest.json",
    "latest": "{results}/models/{model}/latest",
    "catalog": "{results}/catalog.csv",
    "comparison": "{results}/comparisons/{model}/{version_a}_vs_{version_b}/{replicate}.csv",
    # verify: true: the agreement table of both engines, and the second engine's fit
    "verification": _MODEL + "/verification.csv",
    "verification_fit_stats": _MODEL + "/verification_fit_stats.json",
    # compare_with: anova()-style tables of a model and the models it names, kept in the
    # model's own version folder (the models it names have their own versions as inputs)
    "likelihood_ratio": _MODEL + "/likelihood_ratio.csv",
    "information_criteria": _MODEL + "/information_criteria.csv",
    "summary": "{results}/summary.csv",
    "batch_estimates": _BATCH + "/estimates.csv",
    "batch_fits": _BATCH + "/fits.csv",
    "recovery": _STUDY + "/recovery.csv",
    # simulate: {from_model: <model>}: the pilot model's fitted design (glmm_steps.pilot)
    "pilot_design": "{results}/pilots/{model}/design.json",
    "power": _STUDY + "/power.csv",
    # what made the recovery and power tables: config, seeds, code, packages, checksums
    "study_manifest": _STUDY + "/manifest.json",
    "recovery_plot": _STUDY + "/plots/{plot}.png",
    "replicate_data": _REPLICATE + "/data.csv",
    "replicate_truth": _REPLICATE + "/truth.json",
    "replicate_fixed_effects": _REPLICATE + "/fixed_effects.csv",
    "replicate_anova": _REPLICATE + "/anova.csv",
    "replicate_variance_components": _REPLICATE + "/variance_components.csv",
    "replicate_random_effects": _REPLICATE + "/random_effects.csv",
    "replicate_predictions": _REPLICATE + "/predictions.csv",
    "replicate_fit_stats": _REPLICATE + "/fit_stats.json",
    "replicate_scaled_residuals": _REPLICATE + "/residuals.csv",
    "replicate_plot": _REPLICATE + "/plots/{plot}.png",
    "log": "{results}/logs/{rule}/{name}.log",
    # a result table as an HTML page for the Snakemake report (name: e.g. models/<model>/<replicate>/fixed_effects)
    "report_table": "{results}/report/{name}.html",
}

# The tidy tables the extract step writes, in order.
TABLES = (
    "fixed_effects",
    "anova",
    "variance_components",
    "random_effects",
    "predictions",
    "fit_stats",
    "scaled_residuals",
)
PLOTS = ("trajectories", "caterpillar", "diagnostics", "residuals")
COMPARISON_TABLES = ("likelihood_ratio", "information_criteria")
RECOVERY_PLOTS = ("estimates", "coverage", "power", "power_curve")


def replicate_outputs(results: str = "results", **keys: str) -> dict[str, str]:
    """Every output of one study replicate rerun on its own, by name (data, truth, the
    TABLES, the PLOTS); ``keys`` are model, design and index (or wildcard patterns)."""
    outputs = {name: output_path(f"replicate_{name}", results, **keys) for name in ("data", "truth", *TABLES)}
    outputs |= {p: output_path("replicate_plot", results, plot=p, **keys) for p in PLOTS}
    return outputs


def replicate_id(seed: int | None) -> str:
    """Folder name of one replicate: ``seed-123`` for simulated data, ``file`` for a data file."""
    return "file" if seed is None else f"seed-{int(seed)}"


def replicate_seed(replicate: str) -> int | None:
    """The seed in a replicate folder name (the inverse of :func:`replicate_id`): 123 for
    ``seed-123``, None for ``file``."""
    return int(replicate.removeprefix("seed-")) if replicate.startswith("seed-") else None


def output_path(kind: str, results: str = "results", fmt: str = "csv", **keys: str) -> str:
    """Path of output ``kind`` (a key of TEMPLATES) under folder ``results``.

    ``keys`` fill the template (dataset, model, version, replicate, design, batch, index,
    plot, rule, name); pass ``"{model}"`` etc. to get a Snakemake wildcard pattern instead
    of a concrete path. ``fmt`` (csv or parquet) is the extension of data, predictions and
    random effects files; other kinds ignore it."""
    try:
        template = TEMPLATES[kind]
    except KeyError:
        raise ValueError(f"unknown output kind {kind!r}; known: {', '.join(TEMPLATES)}") from None
    return template.format(results=results, fmt=fmt, **keys)
