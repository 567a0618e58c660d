"""A study made from a pilot fit, run by the real snakemake: the pilot is fitted once,
by its own job, the batches simulate from the design file it writes, a second run
reruns nothing, and a changed override, data file or pilot model reruns what it must."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml
from conftest import REFERENCE, job_counts, run_snakemake

from glmm_steps.config import load_config

pytestmark = pytest.mark.slow

DAYS = list(range(12))
CONFIG = {
    "datasets": {
        "sleep": {"path": "sleepstudy.csv"},
        "from_pilot": {
            "replicates": 8,
            "base_seed": 5,
            "batch_size": 4,
            "simulate": {
                "from_model": "pilot",
                "fixed_effects": {"Days": 5.0},
                "extend": {"Subject": 30, "Days": DAYS},
            },
        },
    },
    "models": {
        "pilot": {"dataset": "sleep", "formula": "Reaction ~ Days + (Days | Subject)"},
        "pilot_power": {"dataset": "from_pilot", "formula": "Reaction ~ Days + (Days | Subject)"},
    },
}


def _write(workdir, config, name="config.yaml"):
    path = workdir / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _dry_run(workdir, config_path) -> dict[str, int]:
    proc = run_snakemake(workdir, "--configfile", str(config_path), "-n")
    out = proc.stdout + proc.stderr
    return {} if "Nothing to be done" in out else job_counts(out)


@pytest.fixture(scope="module")
def pilot_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pilot_study")
    shutil.copy(REFERENCE / "data" / "sleepstudy.csv", workdir / "sleepstudy.csv")
    config = _write(workdir, CONFIG)
    proc = run_snakemake(workdir, "--configfile", str(config))
    return workdir, config, proc


def test_the_pilot_is_fitted_once_by_its_own_job(pilot_run, monkeypatch):
    workdir, config, proc = pilot_run
    monkeypatch.chdir(workdir)  # the config's data file is relative to it
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["pilot_design"] == 1 and counts["study_batch"] == 2
    assert counts["total"] == load_config(config).job_count
    design = json.loads((workdir / "results" / "pilots" / "pilot" / "design.json").read_text())
    # the pilot as fitted, before the override and the extension (the batches apply them)
    assert design["levels"] == [{"name": "Subject", "n": 18}] and design["repeated"]["values"] == list(range(10))
    ref = pd.read_csv(REFERENCE / "lme4_fixtures.csv", keep_default_na=False)
    ref = ref[(ref["case"] == "sleepstudy_reml") & (ref["quantity"] == "fixef")]
    assert design["outcomes"]["Reaction"]["coefficients"]["Days"] == pytest.approx(
        float(ref.loc[ref["term"] == "Days", "value"].iloc[0]), rel=1e-5
    )


def test_the_batches_simulate_the_pilot_with_its_overrides(pilot_run):
    workdir, config, _ = pilot_run
    study = workdir / "results" / "studies" / "pilot_power"
    fits = pd.concat(pd.read_csv(p) for p in study.rglob("fits.csv"))
    assert len(fits) == 8 and (fits["nobs"] == 30 * 12).all()
    table = pd.read_csv(study / "recovery.csv").set_index("term")
    assert table.loc["Days", "true_value"] == 5.0
    # one replicate rerun alone simulates the same design from the pilot's file
    rep = study / "base" / "replicates" / "rep-1"
    run_snakemake(workdir, str(rep.relative_to(workdir) / "fixed_effects.csv"), "--configfile", str(config))
    estimates = pd.concat(pd.read_csv(p) for p in study.rglob("estimates.csv"))
    batch = estimates[(estimates["replicate"] == 1) & (estimates["term"] == "Days")]["estimate"].iloc[0]
    alone = pd.read_csv(rep / "fixed_effects.csv").set_index("term").loc["Days", "estimate"]
    assert alone == pytest.approx(batch, rel=1e-9)
    assert len(pd.read_csv(rep / "data.csv")) == 30 * 12


def test_rerun_nothing_then_what_a_change_needs(pilot_run):
    workdir, config, _ = pilot_run
    design = workdir / "results" / "pilots" / "pilot" / "design.json"
    assert _dry_run(workdir, config) == {}
    # A new effect size: the batches (and what reads them) rerun, the pilot is not refitted.
    edited = json.loads(json.dumps(CONFIG))
    edited["datasets"]["from_pilot"]["simulate"]["fixed_effects"]["Days"] = 4.0
    edited_path = _write(workdir, edited, "edited.yaml")
    fitted_at = design.stat().st_mtime_ns
    proc = run_snakemake(workdir, "--configfile", str(edited_path))
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["study_batch"] == 2 and "pilot_design" not in counts and "fit" not in counts
    assert design.stat().st_mtime_ns == fitted_at
    recovery = pd.read_csv(workdir / "results" / "studies" / "pilot_power" / "recovery.csv").set_index("term")
    assert recovery.loc["Days", "true_value"] == 4.0
    assert _dry_run(workdir, edited_path) == {}
    # The pilot model's entry changes: the pilot is refitted, and the batches rerun.
    refit = json.loads(json.dumps(edited))
    refit["models"]["pilot"]["reml"] = False
    counts = _dry_run(workdir, _write(workdir, refit, "refit.yaml"))
    assert counts["pilot_design"] == 1 and counts["study_batch"] == 2
    # So does its data file.
    data = workdir / "sleepstudy.csv"
    data.write_text(data.read_text().replace("249.56", "249.57", 1))
    counts = _dry_run(workdir, edited_path)
    assert counts["pilot_design"] == 1 and counts["study_batch"] == 2
