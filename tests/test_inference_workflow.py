"""inference:, intervals: profile and intervals: bootstrap through the real workflow, and
the bootstrap's seeding and failure counting in-process."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REFERENCE, run_snakemake

from glmm_steps import bootstrap

CONFIG = {
    "datasets": {"sleep": {"path": "sleep.csv"}, "cake": {"path": "cake.csv", "factors": ["temperature"]}},
    "models": {
        "sleep_boot": {
            "dataset": "sleep",
            "formula": "Reaction ~ Days + (Days | Subject)",
            "intervals": "bootstrap",
            "bootstrap": {"n": 24, "seed": 7, "batch_size": 10},
        },
        "sleep_kr_profile": {
            "dataset": "sleep",
            "formula": "Reaction ~ Days + (Days | Subject)",
            "inference": "kenward_roger",
            "intervals": "profile",
        },
        "cake": {"dataset": "cake", "formula": "angle ~ recipe * temperature + (1 | recipe:replicate)"},
    },
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("inference")
    pd.read_csv(REFERENCE / "data" / "sleepstudy.csv").to_csv(workdir / "sleep.csv", index=False)
    pd.read_csv(REFERENCE / "data" / "cake_factors.csv").to_csv(workdir / "cake.csv", index=False)
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    run_snakemake(workdir, "--configfile", str(workdir / "config.yaml"))
    return workdir / "results" / "models"


@pytest.mark.slow
def test_bootstrap_batches_and_intervals(run) -> None:
    folder = run / "sleep_boot" / "latest" / "file"
    batches = sorted(p.name for p in (folder / "bootstrap").iterdir())
    assert batches == ["batch-0-9.csv", "batch-10-19.csv", "batch-20-23.csv"]
    limits = pd.read_csv(folder / "bootstrap.csv")
    assert (limits["n_replicates"] == 24).all() and (limits["n_failed"] == 0).all()
    fe = pd.read_csv(folder / "fixed_effects.csv").set_index("term")
    assert (fe["interval"] == "bootstrap").all() and (fe["test"] == "Satterthwaite t").all()
    days = fe.loc["Days"]
    assert days["conf_low"] < days["estimate"] < days["conf_high"]
    vc = pd.read_csv(folder / "variance_components.csv")
    assert vc["conf_low"].notna().all() and (vc["conf_low"] < vc["conf_high"]).all()
    stats = json.loads((folder / "fit_stats.json").read_text())
    assert "bootstrap: 24 of 24 refits gave estimates, 0 failed, 0 did not converge" in stats["notes"]


@pytest.mark.slow
def test_profile_and_kenward_roger_tables(run) -> None:
    folder = run / "sleep_kr_profile" / "latest" / "file"
    fe = pd.read_csv(folder / "fixed_effects.csv")
    assert (fe["test"] == "Kenward-Roger t").all() and (fe["interval"] == "profile").all()
    assert fe["df"].tolist() == pytest.approx([17.0, 17.0], rel=1e-6)  # pbkrtest: 17, 17
    vc = pd.read_csv(folder / "variance_components.csv")
    assert vc["conf_low"].notna().all()
    cor = vc[vc["term"].str.startswith("cor(")].iloc[0]
    assert cor["conf_low"] == pytest.approx(-0.4815008, rel=1e-3)  # lme4's profile limit


@pytest.mark.slow
def test_anova_table_per_term(run) -> None:
    table = pd.read_csv(run / "cake" / "latest" / "file" / "anova.csv")
    assert table["term"].tolist() == ["recipe", "temperature", "recipe:temperature"]
    assert table["num_df"].tolist() == [2, 5, 10]
    assert (table["df_method"] == "Satterthwaite").all()
    assert (pd.read_csv(run / "sleep_boot" / "latest" / "file" / "anova.csv")["term"] == ["Days"]).all()


def test_bootstrap_batch_is_reproducible_and_counts_failures(tmp_path) -> None:
    entry = {
        "dataset": "sleep",
        "formula": "Reaction ~ Days + (1 | Subject)",
        "intervals": "bootstrap",
        "bootstrap": {"n": 6, "seed": 3, "batch_size": 3},
    }
    data = REFERENCE / "data" / "sleepstudy.csv"
    reps = bootstrap.batch_replicates(entry, "3-5")
    assert [i for i, _ in reps] == [3, 4, 5]
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    bootstrap.batch_to_file(data, "m", entry, (), False, reps, a)
    bootstrap.batch_to_file(data, "m", entry, (), False, reps, b)
    assert a.read_bytes() == b.read_bytes()
    table = pd.read_csv(a, keep_default_na=False, na_values=[""])
    # a replicate whose refit failed is a row, counted, never dropped
    failed = pd.DataFrame([[6, 1, "failed", "LinAlgError: x", "", "", "", np.nan]], columns=bootstrap.REFIT_COLUMNS)
    limits = bootstrap.percentile_intervals(pd.concat([table, failed], ignore_index=True))
    assert (limits["n_failed"] == 1).all() and (limits["n_replicates"] == 4).all()
    assert (limits["n_estimated"] == 3).all()


def test_bootstrap_keys_checked() -> None:
    from glmm_steps.errors import ConfigError

    with pytest.raises(ConfigError, match="models.m.bootstrap"):
        bootstrap.check("m", {"bootstrap": {"n": 10}})
    with pytest.raises(ConfigError, match="engine mixedlm only"):
        bootstrap.check("m", {"intervals": "bootstrap", "engine": "statsmodels"})


def test_binomial_bootstrap_draws_successes_out_of_the_trials() -> None:
    """cbind(s, f) is fitted as proportions with trials as weights: a simulated
    response is successes / trials (mixedlm's own simulate() would draw 0/1)."""
    from glmm_steps import data as data_mod
    from glmm_steps import formula as formula_mod
    from glmm_steps import model_matrix
    from glmm_steps.engines.base import ModelSpec
    from glmm_steps.engines.mixedlm_bootstrap import refits, simulate_response
    from glmm_steps.engines.mixedlm_engine import engine_model

    spec = ModelSpec.from_config(
        "c", {"dataset": "cbpp", "formula": "cbind(incidence, healthy) ~ period + (1 | herd)", "family": "binomial"}
    )
    formula = formula_mod.parse(spec.formula)
    frame, _ = data_mod.model_frame(
        pd.read_csv(REFERENCE / "data" / "cbpp.csv"), formula, "cbpp", ("period",), family="binomial"
    )
    design = model_matrix.build(formula, frame, ("period",))
    model = engine_model(frame, spec, formula, design)[0]
    trials = formula.n_trials(frame)
    y = simulate_response(model, "binomial", np.random.default_rng(1))
    successes = y * trials
    np.testing.assert_allclose(successes, np.rint(successes), atol=1e-9)
    assert 0 < successes.sum() < trials.sum() and (successes > 1).any()
    table = refits(frame, spec, formula, design, [(0, 11), (1, 12)])
    assert set(table["status"]) == {"ok"}
    period2 = table[table["term"] == "period2"]["estimate"]
    assert ((period2 > -4) & (period2 < 1)).all()  # near the fit's -0.99, not a 0/1 refit's


@pytest.mark.slow
def test_the_bootstrap_is_in_the_manifest_and_repaired_like_the_tables(run) -> None:
    """A bootstrap's batch files and limits are listed in the model version's manifest
    (their numbers become the tables' intervals), and a batch file whose bytes change is
    rebuilt on the next run with the limits and tables made from it, not kept."""
    folder = run / "sleep_boot" / "latest" / "file"
    version = (run / "sleep_boot" / "latest").resolve().name
    outputs = json.loads((run / "sleep_boot" / version / "manifest.json").read_text())["outputs"]
    listed = {p for p in outputs if "/bootstrap" in p}
    assert listed == {
        f"models/sleep_boot/{version}/file/bootstrap/batch-{b}.csv" for b in ("0-9", "10-19", "20-23")
    } | {f"models/sleep_boot/{version}/file/bootstrap.csv"}
    batch = folder / "bootstrap" / "batch-10-19.csv"
    original, limits = batch.read_bytes(), (folder / "bootstrap.csv").read_bytes()
    batch.write_bytes(original.replace(b"\n", b"\n ", 1))  # one byte more: a changed file
    workdir = run.parent.parent
    proc = run_snakemake(workdir, "--configfile", str(workdir / "config.yaml"))
    said = " ".join((proc.stdout + proc.stderr).split())
    mismatch = f"checksum mismatch: results/models/sleep_boot/{version}/file/bootstrap/batch-10-19.csv"
    assert mismatch in said, said[-2000:]
    assert batch.read_bytes() == original and (folder / "bootstrap.csv").read_bytes() == limits
