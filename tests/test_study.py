"""Simulation studies: seeds, sweeps, the job cap, batches and rerunning one replicate."""

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from glmm_steps import batch, paths, study
from glmm_steps.config import check_config, load_config
from glmm_steps.errors import ConfigError
from glmm_steps.logs import progress

SMALL = {
    "levels": [{"name": "site", "n": 3}, {"name": "subject", "n": 4}],
    "repeated": {"name": "visit", "values": [0, 1, 2]},
    "outcomes": {
        "y": {
            "family": "gaussian",
            "intercept": 10,
            "coefficients": {"visit": 1.0},
            "random_sd": {"site": 1.0, "subject": 0.5},
            "residual_sd": 1.0,
        }
    },
}


def _config(**dataset):
    return {
        "datasets": {"sim": {"replicates": 10, "base_seed": 7, "simulate": copy.deepcopy(SMALL), **dataset}},
        "models": {"m": {"dataset": "sim", "formula": "y ~ visit + (1 | site) + (1 | subject)"}},
    }


def _error(config) -> str:
    with pytest.raises(ConfigError) as info:
        check_config(config)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_replicate_seeds_are_numpy_spawned_children():
    seeds = study.replicate_seeds(2024, 200)
    children = np.random.SeedSequence(2024).spawn(200)
    assert seeds == [int(c.generate_state(1, np.uint64)[0]) >> 1 for c in children]
    assert len(set(seeds)) == 200 and all(0 <= s < 2**63 for s in seeds)
    # growing a study keeps the seeds it had; another base seed gives other seeds
    assert study.replicate_seeds(2024, 50) == seeds[:50]
    assert not set(study.replicate_seeds(2025, 200)) & set(seeds)


def test_batches_cover_every_replicate_once():
    ranges = study.batch_ranges(250, 100)
    assert ranges == [(0, 99), (100, 199), (200, 249)]
    assert [study.parse_batch_name(study.batch_name(*r)) for r in ranges] == ranges


def test_sweep_crosses_keys_into_named_design_points():
    config = _config(sweep={"levels.site.n": [2, 5], "outcomes.y.coefficients.visit": [0, 0.25]})
    plan = check_config(config)
    points = plan.study_designs["sim"]
    assert list(points) == [
        "site.n=2,y.coefficients.visit=0",
        "site.n=2,y.coefficients.visit=0.25",
        "site.n=5,y.coefficients.visit=0",
        "site.n=5,y.coefficients.visit=0.25",
    ]
    last = points["site.n=5,y.coefficients.visit=0.25"].spec
    assert last["levels"][0]["n"] == 5 and last["outcomes"]["y"]["coefficients"]["visit"] == 0.25
    assert config["datasets"]["sim"]["simulate"]["levels"][0]["n"] == 3, "the base design is untouched"
    # 4 design points x 1 batch of 10, the recovery and study plots jobs, the report's
    # tables and `all` (no per-seed fits to summarise)
    assert [b.name for b in plan.batches] == ["0-9"] * 4
    assert plan.job_count == 4 + 2 + 1 + 1
    assert plan.replicate_seeds("m", 3, 4) == [(3, study.replicate_seed(7, 3)), (4, study.replicate_seed(7, 4))]


def test_sweep_errors_name_the_key():
    assert "datasets.sim.sweep.levels.clinic.n: the design has no 'levels.clinic'" in _error(
        _config(sweep={"levels.clinic.n": [2]})
    )
    msg = _error(_config(sweep={"levels.site.n": [0, 2]}))
    assert msg.startswith("config error: datasets.sim.sweep.levels.site.n:") and "must be >= 1, got 0" in msg
    cfg = _config()
    del cfg["datasets"]["sim"]["replicates"], cfg["datasets"]["sim"]["base_seed"]
    cfg["datasets"]["sim"]["seeds"] = [1]
    cfg["datasets"]["sim"]["sweep"] = {"levels.site.n": [2]}
    assert "datasets.sim.sweep: a sweep needs a study" in _error(cfg)


def test_study_dataset_kinds():
    cfg = _config(seeds=[1])
    assert "give either 'seeds' (one full analysis per seed) or 'replicates' (a study), not both" in _error(cfg)
    cfg = _config()
    del cfg["datasets"]["sim"]["base_seed"]
    assert "datasets.sim: missing required key 'base_seed'" in _error(cfg)


def test_power_terms_checked():
    cfg = _config()
    cfg["models"]["m"]["power_terms"] = ["vist"]
    assert "models.m.power_terms: 'vist' is not a fixed effect" in _error(cfg)
    cfg = _config(seeds=[1])
    del cfg["datasets"]["sim"]["replicates"], cfg["datasets"]["sim"]["base_seed"]
    cfg["models"]["m"]["power_terms"] = ["visit"]
    assert "applies to models of a study dataset" in _error(cfg)


def test_absurd_job_count_is_refused_with_the_count():
    cfg = _config(replicates=1_000_000, sweep={"levels.site.n": [2, 3]})
    msg = _error(cfg)
    # 1,000,000 / 500 per batch (the default) x 2 design points, + recovery, study plots,
    # the report's tables and `all`
    assert msg.startswith("config error: datasets.sim.replicates: this config makes 4,004 jobs")
    assert "= 4,000 batch jobs" in msg and "max_jobs (2,000)" in msg
    cfg["max_jobs"] = 4_004
    cfg["datasets"]["sim"]["replicates"] = 30  # the cap is configurable; keep the expansion small
    assert check_config(cfg).job_count == 2 + 4


def test_recovery_settings_are_not_fit_settings():
    """A batch's params leave out alpha and power_terms, so changing them re-summarises
    the study without refitting it."""
    cfg = _config()
    cfg["models"]["m"]["power_terms"] = ["visit"]
    plan = check_config(cfg)
    assert plan.config["models"]["m"]["alpha"] == 0.05
    assert set(plan.fit_entry("m")) == {
        "dataset",
        "formula",
        "family",
        "reml",
        "engine",
        "nagq",
        "verify",
        "verify_rtol",
        "verify_loglik_tol",
        "compare_with",
        "table_format",
        "residuals",
    }


def test_default_config_has_a_small_study(root):
    plan = load_config(root / "config" / "config.yaml")
    assert plan.study_models == ["bp_lmm_recovery"]
    spec = plan.config["datasets"]["bp_recovery"]
    assert spec["replicates"] == 50 and spec["simulate"] == plan.config["datasets"]["bp_study"]["simulate"]
    assert [(b.design, b.name) for b in plan.batches] == [("base", "0-49")]
    # 3 fits x (fit, extract, plot, effects, effect_plot), the study's 3 (batch, recovery,
    # plots), bookkeeping, the report's tables
    assert plan.job_count <= 26


@pytest.fixture(scope="module")
def small_batch(tmp_path_factory):
    """Three replicates of a small design as one batch, written as the study_batch step does."""
    folder = tmp_path_factory.mktemp("batch")
    replicates = [(i, study.replicate_seed(7, i)) for i in range(3)]
    model = {"dataset": "sim", "formula": "y ~ visit + (1 | site) + (1 | subject)"}
    outputs = {"estimates": str(folder / "estimates.csv"), "fits": str(folder / "fits.csv")}
    batch.batch_to_files(SMALL, "m", model, "base", replicates, [], outputs)
    return folder, replicates, model


def test_batch_tables(small_batch):
    folder, replicates, _ = small_batch
    fits = pd.read_csv(folder / "fits.csv")
    assert list(fits.columns) == batch.FIT_COLUMNS
    assert list(zip(fits["replicate"], fits["seed"])) == replicates
    est = pd.read_csv(folder / "estimates.csv", keep_default_na=False, na_values={"estimate": [""]})
    assert list(est.columns) == batch.ESTIMATE_COLUMNS
    first = est[est["replicate"] == 0]
    assert list(first["term"]) == ["(Intercept)", "visit", "sd__(Intercept)", "sd__(Intercept)", "sd__Observation"]
    assert list(first["group"]) == ["", "", "site", "subject", "Residual"]
    assert list(first["true_value"]) == [10, 1.0, 1.0, 0.5, 1.0]


def test_rerunning_one_replicate_gives_its_numbers(small_batch, tmp_path):
    folder, replicates, model = small_batch
    index, seed = replicates[1]
    outputs = paths.replicate_outputs(str(tmp_path), model="m", design="base", index=str(index))
    record = batch.replicate_to_files(SMALL, "m", model, seed, [], outputs)
    assert record["seed"] == seed
    # Compare the CSV text: both steps write the same numbers with the same format.
    rows = pd.read_csv(folder / "estimates.csv", dtype=str, keep_default_na=False)
    rows = rows[rows["replicate"] == str(index)]
    fixed = pd.read_csv(outputs["fixed_effects"], dtype=str)
    batch_fixed = rows[rows["effect"] == "fixed"]
    for col in ("term", "estimate", "std_error", "p_value", "conf_low", "conf_high"):
        assert list(batch_fixed[col]) == list(fixed[col]), col
    vc = pd.read_csv(outputs["variance_components"], dtype=str)
    assert list(rows[rows["effect"] == "ran_pars"]["estimate"]) == list(vc["sd"])
    for name in ("data", "truth", "random_effects", "trajectories", "caterpillar", "diagnostics"):
        assert Path(outputs[name]).is_file(), name


def test_refitting_replicates_equals_fitting_each_from_scratch():
    """The batch's refit path (one template, new responses) gives every table cell a
    full fit gives, warnings included, on a design where many fits are singular."""
    from glmm_steps.engines.base import ModelSpec
    from glmm_steps.simulate import design_from_config

    small = copy.deepcopy(SMALL)
    small["outcomes"]["y"]["random_sd"]["site"] = 0.2  # 3 sites: often estimated as 0
    design = design_from_config(small)
    spec = ModelSpec.from_config(
        "m", {"dataset": "sim", "formula": "y ~ visit + (1 | site) + (1 | subject)", "residuals": {"nsim": 0}}
    )
    assert batch.refittable(design, spec)
    replicates = [(i, study.replicate_seed(3, i)) for i in range(12)]
    e_refit, f_refit = batch.run_batch(design, spec, "base", replicates)
    e_full, f_full = batch.run_batch(design, spec, "base", replicates, refit=False)
    assert f_full["singular"].any() and not f_full["singular"].all()
    pd.testing.assert_frame_equal(f_refit, f_full)
    pd.testing.assert_frame_equal(e_refit, e_full, rtol=1e-10)


def test_refit_path_flags_an_undetermined_optimum_as_a_full_fit_does():
    """The refit path runs a full fit's convergence checks, the Hessian check
    included: site:subject is subject again (subjects are numbered across sites), so
    their two variances are determined only as a sum and most fits are hessian_not_pd."""
    from glmm_steps.engines.base import ModelSpec
    from glmm_steps.simulate import design_from_config

    design = design_from_config(SMALL)
    formula = "y ~ visit + (1 | site) + (1 | site:subject) + (1 | subject)"
    spec = ModelSpec.from_config("m", {"dataset": "sim", "formula": formula, "residuals": {"nsim": 0}})
    assert batch.refittable(design, spec)
    replicates = [(i, study.replicate_seed(3, i)) for i in range(6)]
    e_refit, f_refit = batch.run_batch(design, spec, "base", replicates)
    e_full, f_full = batch.run_batch(design, spec, "base", replicates, refit=False)
    assert set(f_full["status"]) == {"hessian_not_pd", "ok"}
    pd.testing.assert_frame_equal(f_refit, f_full)
    pd.testing.assert_frame_equal(e_refit, e_full, rtol=1e-8)


def test_models_the_refit_path_does_not_take():
    from glmm_steps.engines.base import ModelSpec
    from glmm_steps.simulate import design_from_config

    design = design_from_config(SMALL)
    entry = {"dataset": "sim", "formula": "y ~ visit + (1 | site) + (1 | subject)"}
    assert batch.refittable(design, ModelSpec.from_config("m", {**entry, "residuals": {"nsim": 0}}))
    # simulation residual tests need the full fit's model
    assert not batch.refittable(design, ModelSpec.from_config("m", entry))
    assert not batch.refittable(design, ModelSpec.from_config("m", {**entry, "engine": "statsmodels"}))
    assert not batch.refittable(design, ModelSpec.from_config("m", {**entry, "formula": "z ~ visit + (1 | site)"}))


def test_progress_reports_every_tenth(capsys):
    report = progress("job", 25)
    for done in range(1, 26):
        report(done, failed=done // 10)
    lines = capsys.readouterr().err.splitlines()
    # 25 items: a line at 3, 5, 8, 10, ... 23 and 25 (each tenth), the last at 100%
    assert len(lines) == 10
    assert lines[0].startswith("job: 3/25 (12%), 0 failed")
    assert lines[-1].startswith("job: 25/25 (100%), 2 failed")


def test_study_config_round_trips_through_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_config(sweep={"levels.subject.n": [2, 4]})))
    assert [b.design for b in load_config(path).batches] == ["subject.n=2", "subject.n=4"]


def test_studies_are_not_versioned_and_leave_per_seed_versions_alone():
    """Merge of studies with result versions: a study model has batches, no per-seed
    fits and no version; the study keys' defaults (alpha, batch_size, sweep) filled into
    per-seed entries do not change their version keys."""
    cfg = _config()
    cfg["datasets"]["per_seed"] = {"seeds": [1], "simulate": copy.deepcopy(SMALL)}
    cfg["models"]["p"] = {"dataset": "per_seed", "formula": "y ~ visit + (1 | site) + (1 | subject)"}
    plan = check_config(cfg)
    assert list(plan.versions) == ["p"] and [f.model for f in plan.fits] == ["p"]
    assert plan.fits[0].version == plan.versions["p"]
    cfg2 = copy.deepcopy(cfg)
    cfg2["models"]["p"]["alpha"] = 0.01
    cfg2["datasets"]["per_seed"]["batch_size"] = 7
    assert check_config(cfg2).versions == plan.versions


def test_verify_and_compare_with_are_per_seed_only():
    cfg = _config()
    cfg["models"]["m"]["verify"] = True
    assert _error(cfg).startswith("config error: models.m.verify: applies to per-seed fits only")
