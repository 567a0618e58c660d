"""Cross-engine verification: fit a model with both engines and tabulate their agreement.

One engine's silent failure (an optimizer that stops early and says it converged,
as statsmodels' ``fit(method="lbfgs")`` does on the reference study) shows up as a
disagreement with an independent implementation. The agreement table has one row per
fixed effect, variance component (and correlation, and the residual variance) and
the log-likelihood: both engines' values, their absolute and relative difference, the
tolerance and whether they agree. A disagreement is a finding to report, never an
error: the table is written whatever the engines return.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from glmm_steps.engines.base import FitResult

ENGINES = ("mixedlm", "statsmodels")
COLUMNS = ["quantity", "group", "term", *ENGINES, "abs_diff", "rel_diff", "tolerance", "agree", "note"]


def other_engine(engine: str) -> str:
    """The engine that checks ``engine``."""
    return ENGINES[1 - ENGINES.index(engine)]


def _row(quantity: str, group: str, term: str, a: float, b: float, tolerance: float, note: str = "") -> dict:
    diff = abs(a - b)
    scale = max(abs(a), abs(b))
    rel = diff / scale if scale > 0 else 0.0 if diff == 0 else np.inf
    agree = bool(np.isfinite(diff) and diff <= tolerance)
    return {
        "quantity": quantity,
        "group": group,
        "term": term,
        ENGINES[0]: a,
        ENGINES[1]: b,
        "abs_diff": diff,
        "rel_diff": rel,
        "tolerance": tolerance,
        "agree": agree,
        "note": note,
    }


def _missing(where: dict, key, other_label: str) -> str:
    return "" if key in where else f"missing in {other_label}"


def agreement(first: FitResult, second: FitResult, rtol: float, loglik_tol: float) -> pd.DataFrame:
    """The agreement table of two fits of one model by the two engines (either order).

    A value agrees when ``|a - b| <= rtol * (max(|a|, |b|) + s)``, where ``s`` is the
    fixed effect's standard error (mixedlm's), or for a variance component the total
    variance, or 1 for a correlation: the absolute part keeps a value near zero from
    demanding impossible relative precision. The logLik agrees when
    ``|a - b| <= loglik_tol``. A term one engine lacks, or a failed fit, is a row that
    disagrees. Returns a DataFrame with columns COLUMNS."""
    fits = {first.spec.engine: first, second.spec.engine: second}
    a, b = fits[ENGINES[0]], fits[ENGINES[1]]
    failed = [f"{e} failed: {fits[e].error}" for e in ENGINES if not fits[e].ok]
    if failed:
        row = _row("fit", "", "", np.nan, np.nan, 0.0, "; ".join(failed))
        return pd.DataFrame([row], columns=COLUMNS)
    rows = []
    fa, fb = (f.fixef.set_index("term") for f in (a, b))
    for term in dict.fromkeys([*fa.index, *fb.index]):
        va = float(fa["estimate"].get(term, np.nan))
        vb = float(fb["estimate"].get(term, np.nan))
        se = float(fa["std_error"].get(term, np.nan))
        tol = rtol * (max(abs(va), abs(vb)) + (se if np.isfinite(se) else 0.0))
        note = _missing(fa.index, term, ENGINES[0]) or _missing(fb.index, term, ENGINES[1])
        rows.append(_row("fixed_effect", "", term, va, vb, tol, note))
    va_, vb_ = (
        {
            (g, t): (v, c)
            for g, t, v, c in zip(
                f.varcorr["group"], f.varcorr["term"], f.varcorr["variance"], f.varcorr["correlation"]
            )
        }
        for f in (a, b)
    )
    total = sum(v for (g, t), (v, _) in va_.items() if not t.startswith("cor("))
    for key in dict.fromkeys([*va_, *vb_]):
        group, term = key
        is_cor = term.startswith("cor(")
        pick = 1 if is_cor else 0
        x = float(va_[key][pick]) if key in va_ else np.nan
        y = float(vb_[key][pick]) if key in vb_ else np.nan
        tol = rtol * (max(abs(x), abs(y)) + (1.0 if is_cor else total))
        note = _missing(va_, key, ENGINES[0]) or _missing(vb_, key, ENGINES[1])
        rows.append(_row("correlation" if is_cor else "variance", group, term, x, y, tol, note))
    rows.append(_row("logLik", "", "", float(a.loglik), float(b.loglik), loglik_tol))
    return pd.DataFrame(rows, columns=COLUMNS)


def verdict(table: pd.DataFrame) -> str:
    """One line for the run summary: ``agree``, or ``DISAGREE`` with the worst row."""
    bad = table[~table["agree"].astype(bool)]
    if bad.empty:
        return "agree"
    worst = bad.iloc[
        int(np.nanargmax(np.nan_to_num((bad["abs_diff"] / bad["tolerance"]).to_numpy(dtype=float), nan=np.inf)))
    ]
    what = "/".join(x for x in (worst["quantity"], worst["group"], worst["term"]) if x)
    detail = worst["note"] or (
        f"{ENGINES[0]} {worst[ENGINES[0]]:.10g} vs {ENGINES[1]} {worst[ENGINES[1]]:.10g}, "
        f"tolerance {worst['tolerance']:.2g}"
    )
    more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
    return f"DISAGREE: {what}: {detail}{more}"


def read_table(path: str | Path) -> pd.DataFrame:
    """Read an agreement table written by :func:`verify_file` (empty text cells stay
    empty strings, ``agree`` is boolean)."""
    text = ("quantity", "group", "term", "note")
    table = pd.read_csv(path, dtype={c: str for c in text})
    for col in text:
        table[col] = table[col].fillna("")
    table["agree"] = table["agree"].astype(bool)
    return table


def verify(result: FitResult, rtol: float, loglik_tol: float) -> tuple[pd.DataFrame, FitResult]:
    """Fit ``result``'s model again with the other engine, on the same rows, and
    return (agreement table, the other engine's fit)."""
    from glmm_steps.fit import fit_model

    spec = dataclasses.replace(result.spec, engine=other_engine(result.spec.engine))
    other = fit_model(result.frame, spec, where=f"model {spec.name}", state=result.transform_state or None)
    return agreement(result, other, rtol, loglik_tol), other


def verify_file(
    fit_path: str | Path,
    outputs: dict[str, str | Path],
    rtol: float,
    loglik_tol: float,
    seed: int | None = None,
    data_path: str | None = None,
) -> str:
    """The verify step: read a fit (glmm_steps.fit.save_fit), refit with the other
    engine, write the agreement table (``outputs["verification"]``) and the other
    fit's glance record (``outputs["fit_stats"]``). Returns the verdict line."""
    from glmm_steps.extract import glance, write_csv, write_json
    from glmm_steps.fit import load_fit

    table, other = verify(load_fit(fit_path), rtol, loglik_tol)
    write_csv(table, outputs["verification"])
    write_json(glance(other, seed=seed, data_path=data_path), outputs["fit_stats"])
    return verdict(table)
