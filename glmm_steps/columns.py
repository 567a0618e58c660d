"""The columns of the tidy tables that later steps read back, in a module that loads
nothing: the extract step's fixed-effects table, and a study's batch tables, which
the recovery and study-plot steps read without loading any fitting code."""

from __future__ import annotations

FIXED_COLUMNS = [
    "term",
    "estimate",
    "std_error",
    "statistic",
    "df",
    "p_value",
    "conf_low",
    "conf_high",
    "test",
    "interval",
    "method",
]

# A study batch's tables (glmm_steps.batch): one row per replicate and parameter, and
# one row per replicate.
KEYS = ["model", "design", "replicate", "seed"]
ESTIMATE_COLUMNS = KEYS + ["effect", "group", "term", "true_value", *FIXED_COLUMNS[1:]]
# The simulation-residual tests (glmm_steps.residuals) per replicate: a study of
# correctly specified models shows their rejection rates (calibration), a study of a
# wrong family their power.
DIAGNOSTIC_COLUMNS = ["uniformity_p", "dispersion_ratio", "dispersion_p", "zero_inflation_p", "outliers_p"]
FIT_COLUMNS = KEYS + ["status", "converged", "singular", "nobs", "logLik", "error", "warnings", *DIAGNOSTIC_COLUMNS]
