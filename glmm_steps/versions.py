"""Result versions: a key per model from everything that determines its numbers,
a catalog of every version on disk, a ``latest`` link, and side-by-side comparison.

The key hashes the model's config entry, its dataset's spec (a simulated design, or
the SHA-256 of a data file), the engine and its version, and this package's version.
Seeds are not in the key: each seed is a replicate folder inside the version, so
adding a seed extends a version instead of starting a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from glmm_steps import __version__
from glmm_steps.provenance import MANIFEST_NAME

KEY_LENGTH = 10


def version_key(
    model_entry: dict[str, Any], dataset_entry: dict[str, Any], *, engine_version: str, data_sha256: str | None = None
) -> str:
    """A short hex key from what determines a model's results (see module docstring).

    ``data_sha256`` is the checksum of a data file (``path:`` datasets); free-text
    descriptions and the seeds do not count."""
    # batch_size and sweep are a study's (per-seed datasets get their defaults): leaving
    # them out keeps the keys of per-seed fits what they were before studies existed.
    dataset = {
        k: v for k, v in dataset_entry.items() if k not in ("description", "seeds", "path", "batch_size", "sweep")
    }
    payload = {
        "model": {k: v for k, v in model_entry.items() if k != "description"},
        "dataset": dataset,
        "data_sha256": data_sha256,
        "engine_version": engine_version,
        "glmm_steps": __version__,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


CATALOG_COLUMNS = [
    "model",
    "version",
    "current",
    "created",
    "git_commit",
    "git_dirty",
    "dataset",
    "formula",
    "family",
    "engine",
    "engine_version",
    "seeds",
    "config",
    "path",
]


def catalog(models_dir: str | Path, current: dict[str, str]) -> pd.DataFrame:
    """Every version found under ``models_dir`` (``<model>/<version>/manifest.json``),
    one row each, by model then oldest first (so identical runs list rows in the same
    order); ``current`` maps model -> the key of the running config."""
    rows = []
    for manifest_path in sorted(Path(models_dir).glob(f"*/*/{MANIFEST_NAME}")):
        if manifest_path.parent.is_symlink():  # `latest` repeats a version listed under its key
            continue
        try:
            m = json.loads(manifest_path.read_text())
            m["model"], m["version"]
        except (OSError, ValueError, TypeError, KeyError):
            # an old version's manifest someone truncated or edited: listing the others
            # matters more than failing the run on it (a current one is rebuilt instead)
            print(f"catalog: skipped unreadable {manifest_path}")
            continue
        cfg = m.get("config", {})
        model_cfg = cfg.get("model", {})
        rows.append(
            {
                "model": m["model"],
                "version": m["version"],
                "current": current.get(m["model"]) == m["version"],
                "created": m.get("created"),
                "git_commit": (m.get("git") or {}).get("commit"),
                "git_dirty": (m.get("git") or {}).get("dirty"),
                "dataset": model_cfg.get("dataset"),
                "formula": model_cfg.get("formula"),
                "family": model_cfg.get("family"),
                "engine": model_cfg.get("engine"),
                "engine_version": (m.get("packages") or {}).get(model_cfg.get("engine", "mixedlm")),
                "seeds": " ".join(str(s) for s in m.get("seeds", [])),
                "config": json.dumps(cfg, sort_keys=True),
                "path": str(manifest_path.parent),
            }
        )
    table = pd.DataFrame(rows, columns=CATALOG_COLUMNS)
    return table.sort_values(["model", "created", "version"], kind="stable").reset_index(drop=True)


def link_latest(models_dir: str | Path, current: dict[str, str]) -> None:
    """Point ``<models_dir>/<model>/latest`` at the current config's version of each
    model (a relative symlink, replaced atomically)."""
    for model, key in current.items():
        folder = Path(models_dir) / model
        if not (folder / key).is_dir():
            continue
        tmp = folder / ".latest.tmp"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(key, tmp)
        os.replace(tmp, folder / "latest")


# The tables compared, each with the column holding its estimates.
COMPARED = {"fixed_effects": "estimate", "variance_components": "variance"}
# Compared beside the estimate where a table has them (fixed effects: Wald SE and interval).
UNCERTAINTY = ("std_error", "conf_low", "conf_high")
COMPARISON_COLUMNS = [
    "table",
    "group",
    "term",
    "estimate_a",
    "estimate_b",
    "difference",
    "relative_difference",
    "std_error_a",
    "std_error_b",
    "std_error_difference",
    "relative_std_error_difference",
    "conf_low_a",
    "conf_high_a",
    "conf_low_b",
    "conf_high_b",
]


def compare_versions(dir_a: str | Path, dir_b: str | Path) -> pd.DataFrame:
    """Side-by-side estimates of two replicate folders of one model (``.../<model>/<version>/<replicate>``).

    One row per fixed effect and variance component, plus logLik/AIC/BIC, with columns
    COMPARISON_COLUMNS: each version's estimate, the difference (b - a) and relative
    difference (over |a|), and for fixed effects each version's standard error, its
    difference (b - a) and relative difference, and each 95% interval, so a change that
    moves an SE or an interval shows even when the estimate stays. A parameter present
    in only one version, or a table without SEs, has NaN there."""
    parts = []
    for table, value in COMPARED.items():
        cols = [value, *UNCERTAINTY]
        a = pd.read_csv(Path(dir_a) / f"{table}.csv")
        b = pd.read_csv(Path(dir_b) / f"{table}.csv")
        if "group" not in a:
            a["group"], b["group"] = "", ""
        a, b = (t.reindex(columns=["group", "term", *cols]) for t in (a, b))
        merged = a.merge(b, on=["group", "term"], how="outer", suffixes=("_a", "_b"), sort=False)
        merged = merged.rename(columns={f"{value}_a": "estimate_a", f"{value}_b": "estimate_b"})
        merged.insert(0, "table", table)
        parts.append(merged)
    stats = []
    fa = json.loads((Path(dir_a) / "fit_stats.json").read_text())
    fb = json.loads((Path(dir_b) / "fit_stats.json").read_text())
    for key in ("logLik", "AIC", "BIC"):
        stats.append(
            {"table": "fit_stats", "group": "", "term": key, "estimate_a": fa.get(key), "estimate_b": fb.get(key)}
        )
    out = pd.concat(parts + [pd.DataFrame(stats)], ignore_index=True)
    for side in ("a", "b"):
        for col in ("estimate", *UNCERTAINTY):
            out[f"{col}_{side}"] = out[f"{col}_{side}"].astype(float)
    out["difference"] = out["estimate_b"] - out["estimate_a"]
    out["relative_difference"] = out["difference"] / out["estimate_a"].abs()
    out["std_error_difference"] = out["std_error_b"] - out["std_error_a"]
    out["relative_std_error_difference"] = out["std_error_difference"] / out["std_error_a"]
    return out[COMPARISON_COLUMNS]
