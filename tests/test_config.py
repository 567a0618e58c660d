import copy

import pytest
import yaml

from glmm_steps.config import check_config, load_config, read_yaml
from glmm_steps.errors import ConfigError, GlmmError
from glmm_steps.simulate import simulate


@pytest.fixture()
def cfg(root):
    return yaml.safe_load((root / "config" / "config.yaml").read_text())


def test_default_config_plan(root):
    plan = load_config(root / "config" / "config.yaml")
    assert [(f.model, f.replicate) for f in plan.fits] == [
        ("bp_lmm", "seed-123"),
        ("hypertension_glmm", "seed-123"),
        ("adverse_events_glmm", "seed-123"),
    ]
    assert {m["family"] for m in plan.config["models"].values()} == {"gaussian", "binomial", "poisson"}
    # defaults from the schema are filled in
    assert plan.config["models"]["hypertension_glmm"]["engine"] == "mixedlm"
    assert plan.config["results_dir"] == "results"
    assert plan.data_path("bp_study", "seed-123") == "results/data/bp_study/seed-123/data.csv"


def test_simulated_grouping_columns_are_declared_factors(root, bp_data):
    from glmm_steps.engines.base import ModelSpec
    from glmm_steps.fit import fit_model

    plan = load_config(root / "config" / "config.yaml")
    assert plan.factors("bp_study") == ["hospital_id", "patient_id"]
    assert plan.factors("bp_recovery") == ["hospital_id", "patient_id"]
    spec = ModelSpec("bp_lmm", "bp_study", plan.config["models"]["bp_lmm"]["formula"])
    # the simulator's own ids need no note; the same ids in a user's file get one
    assert fit_model(bp_data, spec, factors=plan.factors("bp_study")).notes == []
    assert any("treated as factors" in n for n in fit_model(bp_data, spec).notes)


def _error(cfg) -> str:
    with pytest.raises(ConfigError) as info:
        check_config(cfg)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_unknown_key_suggests(cfg):
    cfg["models"]["bp_lmm"]["famly"] = "gaussian"
    assert _error(cfg) == "config error: models.bp_lmm.famly: unknown key (did you mean 'family'?)"


def test_wrong_type(cfg):
    cfg["models"]["bp_lmm"]["reml"] = "yes"
    assert _error(cfg) == "config error: models.bp_lmm.reml: expected boolean, got 'yes'"


def test_unknown_family(cfg):
    cfg["models"]["bp_lmm"]["family"] = "tweedie"
    assert (
        "models.bp_lmm.family: expected one of gaussian, binomial, poisson, negative_binomial, gamma, got 'tweedie'"
    ) in _error(cfg)


def test_missing_dataset(cfg):
    cfg["models"]["bp_lmm"]["dataset"] = "bp_studdy"
    assert _error(cfg) == "config error: models.bp_lmm.dataset: no dataset named 'bp_studdy' (did you mean 'bp_study'?)"


def test_formula_missing_column(cfg):
    cfg["models"]["bp_lmm"]["formula"] = "bp ~ age + (1 | hospital_id)"
    assert "models.bp_lmm.formula" in (msg := _error(cfg)) and "'age'" in msg


def test_negative_sd_and_seed_type(cfg):
    bad = copy.deepcopy(cfg)
    bad["datasets"]["bp_study"]["simulate"]["outcomes"]["bp"]["residual_sd"] = -1
    assert "residual_sd: must be >= 0, got -1" in _error(bad)
    bad = copy.deepcopy(cfg)
    bad["datasets"]["bp_study"]["seeds"] = [1.5]
    assert "datasets.bp_study.seeds.0: expected integer, got 1.5" in _error(bad)


def test_family_must_match_simulated_outcome(cfg):
    cfg["models"]["bp_lmm"]["family"] = "poisson"
    assert "simulated as gaussian" in _error(cfg)


def test_nagq_needs_one_scalar_term(cfg):
    cfg["models"]["hypertension_glmm"]["nagq"] = 5
    assert "models.hypertension_glmm.nagq" in _error(cfg)


def test_data_file_dataset(cfg, tmp_path, bp_data):
    path = tmp_path / "bp.csv"
    bp_data.to_csv(path, index=False)
    cfg["datasets"]["real"] = {"path": str(path)}
    cfg["models"]["real_lmm"] = {"dataset": "real", "formula": "bp ~ time + (1 | hospital_id)"}
    plan = check_config(cfg)
    assert plan.data_path("real", "file") == str(path)
    assert ("real_lmm", "file") in [(f.model, f.replicate) for f in plan.fits]
    cfg["datasets"]["real"]["path"] = str(tmp_path / "nope.csv")
    assert "datasets.real.path: no such file" in _error(cfg)


def test_duplicate_model_names(tmp_path, root):
    text = (root / "config" / "config.yaml").read_text()
    text += "\n  bp_lmm:\n    dataset: bp_study\n    formula: bp ~ time + (1 | hospital_id)\n"
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="duplicate key 'bp_lmm'"):
        read_yaml(path)


def test_link_must_be_supported_by_the_engine(cfg):
    cfg["models"]["hypertension_glmm"]["link"] = "logit"
    check_config(cfg)
    cfg["models"]["hypertension_glmm"]["link"] = "probit"
    check_config(cfg)
    cfg["models"]["hypertension_glmm"]["link"] = "log"
    assert _error(cfg) == (
        "config error: models.hypertension_glmm.link: engine mixedlm does not support link "
        "'log' for family binomial (supported: logit, probit, cloglog)"
    )


def test_data_file_checked_before_any_job(cfg, tmp_path, bp_data):
    path = tmp_path / "bp.csv"
    bp_data.assign(bp=bp_data["bp"].where(bp_data.index != 3)).to_csv(path, index=False)
    cfg["datasets"]["real"] = {"path": str(path)}
    cfg["models"]["real_lmm"] = {"dataset": "real", "formula": "bp ~ time + (1 | hospital_id)"}
    with pytest.raises(GlmmError, match=f"^{path}: 1 rows have missing values \\(bp: 1; first on line 5"):
        check_config(cfg)
    cfg["datasets"]["real"]["drop_missing"] = True
    check_config(cfg)
    cfg["datasets"]["real"]["factors"] = ["tme"]
    assert _error(cfg) == (f"config error: datasets.real.factors.0: no column 'tme' in {path} (did you mean 'time'?)")


def test_binomial_trials_fitted_as_cbind(cfg):
    cfg["datasets"]["bp_study"]["simulate"]["outcomes"]["doses"] = {"family": "binomial", "intercept": 0, "trials": 4}
    cfg["models"]["doses"] = {"dataset": "bp_study", "family": "binomial", "formula": "doses ~ time + (1 | patient_id)"}
    assert "'doses' is simulated as successes out of 4 trials" in _error(copy.deepcopy(cfg))
    cfg["models"]["doses"]["formula"] = "cbind(doses, doses_failures) ~ time + (1 | patient_id)"
    plan = check_config(cfg)
    data, _ = simulate(plan.designs["bp_study"], 1)
    assert ((data["doses"] + data["doses_failures"]) == data["doses_trials"]).all()


def test_config_numbers_are_finite(cfg):
    cfg["datasets"]["bp_study"]["simulate"]["repeated"]["values"][2] = float("inf")
    assert _error(cfg) == "config error: datasets.bp_study.simulate.repeated.values.2: must be a finite number, got inf"


# ---- engines, verification, comparison ------------------------------------------------


def test_statsmodels_glmm_needs_an_explicit_approximation(cfg):
    cfg["models"]["hypertension_glmm"]["engine"] = "statsmodels"
    msg = _error(cfg)
    assert msg.startswith("config error: models.hypertension_glmm.approximation:")
    assert "not maximum likelihood" in msg and "approximation: variational" in msg
    cfg["models"]["hypertension_glmm"]["approximation"] = "variational"
    plan = check_config(cfg)
    assert plan.config["models"]["hypertension_glmm"]["approximation"] == "variational"


@pytest.mark.parametrize(
    "change, key, needle",
    [
        ({"approximation": "variational"}, "approximation", "engine: statsmodels with family binomial or poisson"),
        (
            {
                "engine": "statsmodels",
                "nagq": 5,
                "approximation": "variational",
                "formula": "hypertension ~ time + (1 | patient_id)",
            },
            "nagq",
            "statsmodels has none",
        ),
        ({"verify": True}, "verify", "gaussian only"),
    ],
)
def test_engine_options_checked(cfg, change, key, needle):
    cfg["models"]["hypertension_glmm"].update(change)
    msg = _error(cfg)
    assert msg.startswith(f"config error: models.hypertension_glmm.{key}:") and needle in msg


def test_statsmodels_formula_it_cannot_express_fails_before_any_job(cfg):
    """Correlated slopes on patients, with hospitals not nested in patients: MixedLM's
    one grouping factor cannot hold both; the error names the term."""
    cfg["models"]["bp_lmm"].update(
        engine="statsmodels", formula="bp ~ time + (1 | hospital_id) + (1 + time | patient_id)"
    )
    msg = _error(cfg)
    assert msg.startswith("config error: models.bp_lmm.formula: engine statsmodels cannot fit (1 + time | patient_id):")
    assert "'hospital_id' is not" in msg
    # the same slopes on hospitals, which contain the patients, are fine; so is `verify`
    cfg["models"]["bp_lmm"]["formula"] = "bp ~ time + (1 + time | hospital_id) + (1 | patient_id)"
    check_config(cfg)
    cfg["models"]["bp_lmm"].update(
        engine="mixedlm", verify=True, formula="bp ~ time + (1 | hospital_id) + (1 + time | patient_id)"
    )
    assert "models.bp_lmm.formula: engine statsmodels cannot fit" in _error(cfg)


def test_nesting_read_from_a_data_file(cfg, tmp_path, bp_data):
    # hospital ids reused across 'wards' that cross them: no factor contains the other
    data = bp_data.assign(ward=bp_data["patient_id"] % 7)
    data.to_csv(tmp_path / "bp.csv", index=False)
    cfg["datasets"]["real"] = {"path": str(tmp_path / "bp.csv")}
    cfg["models"]["real"] = {
        "dataset": "real",
        "engine": "statsmodels",
        "formula": "bp ~ time + (1 + time | hospital_id) + (1 | ward)",
    }
    assert "'ward' is not" in _error(cfg)
    cfg["models"]["real"]["formula"] = "bp ~ time + (1 + time | hospital_id) + (1 | patient_id)"
    check_config(cfg)


def test_compare_with(cfg):
    cfg["models"]["bp_null"] = {
        "dataset": "bp_study",
        "formula": "bp ~ 1 + (1 | hospital_id) + (1 | patient_id)",
        "compare_with": ["bp_lmm"],
    }
    plan = check_config(cfg)
    assert [(f.model, f.replicate) for f in plan.compared()] == [("bp_null", "seed-123")]
    for others, needle in (
        (["bp_lmn"], "no model named 'bp_lmn' (did you mean 'bp_lmm'?)"),
        (["bp_null"], "compared with itself"),
        (["hypertension_glmm"], "not comparable"),
    ):
        cfg["models"]["bp_null"]["compare_with"] = others
        assert needle in _error(cfg)


def test_cbind_of_simulated_trials(cfg):
    outcomes = cfg["datasets"]["bp_study"]["simulate"]["outcomes"]
    outcomes["doses"] = {"family": "binomial", "intercept": 0.0, "trials": 4}
    cfg["models"]["doses"] = {
        "dataset": "bp_study",
        "family": "binomial",
        "formula": "cbind(doses, doses_trials - doses) ~ time + (1 | patient_id)",
    }
    assert ("doses", "seed-123") in [(f.model, f.replicate) for f in check_config(cfg).fits]


@pytest.mark.parametrize(
    "model,key,value,words",
    [
        (
            "hypertension_glmm",
            "inference",
            "satterthwaite",
            "models.hypertension_glmm.inference: satterthwaite needs a gaussian",
        ),
        ("bp_lmm", "test", "wald", "models.bp_lmm.test: applies to models of a study dataset"),
        (
            "bp_lmm_recovery",
            "intervals",
            "bootstrap",
            "models.bp_lmm_recovery.intervals: bootstrap applies to per-seed",
        ),
        ("bp_lmm", "bootstrap", {"n": 100}, "models.bp_lmm.bootstrap: is read only with intervals: bootstrap"),
        ("bp_lmm", "inference", "satterwaite", "models.bp_lmm.inference: expected one of"),
    ],
)
def test_inference_keys_checked(cfg, model, key, value, words):
    cfg["models"][model][key] = value
    assert words in _error(cfg)


def _outcome(cfg, name: str) -> dict:
    return cfg["datasets"]["bp_study"]["simulate"]["outcomes"][name]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: _outcome(c, "adverse_events").update(family="negative_binomial"),
            "datasets.bp_study.simulate.outcomes.adverse_events: a negative_binomial outcome needs 'theta' "
            "(variance mu + mu^2/theta)",
        ),
        (
            lambda c: _outcome(c, "adverse_events").update(theta=2.0),
            "datasets.bp_study.simulate.outcomes.adverse_events.theta: only negative_binomial outcomes have one, "
            "not poisson",
        ),
        (
            lambda c: _outcome(c, "hypertension").update(link="log"),
            "datasets.bp_study.simulate.outcomes.hypertension.link: family binomial takes link logit, probit, "
            "cloglog, not 'log'",
        ),
        (
            lambda c: _outcome(c, "adverse_events").update(family="gamma", intercept=1.0),
            "datasets.bp_study.simulate.outcomes.adverse_events: a gamma outcome needs one of 'shape' (variance "
            "mu^2/shape) or 'cv' (shape = 1/cv^2), not both",
        ),
        (
            lambda c: _outcome(c, "adverse_events").update(family="gamma", shape=4.0, cv=0.5),
            "datasets.bp_study.simulate.outcomes.adverse_events: a gamma outcome needs one of 'shape'",
        ),
        (
            lambda c: _outcome(c, "adverse_events").update(cv=0.5),
            "datasets.bp_study.simulate.outcomes.adverse_events.cv: only gamma outcomes have one, not poisson",
        ),
        (
            lambda c: c["models"]["adverse_events_glmm"].update(family="negative_binomial", nagq=5),
            "models.adverse_events_glmm.nagq: adaptive quadrature applies to binomial and poisson models only",
        ),
    ],
)
def test_family_settings_of_outcomes_and_models(cfg, edit, message) -> None:
    edit(cfg)
    assert message in _error(cfg)


def test_new_families_pass_the_check(cfg) -> None:
    _outcome(cfg, "adverse_events").update(family="negative_binomial", theta=2.0)
    cfg["models"]["adverse_events_glmm"]["family"] = "negative_binomial"
    _outcome(cfg, "hypertension")["link"] = "cloglog"
    cfg["models"]["hypertension_glmm"]["link"] = "cloglog"
    plan = check_config(cfg)
    assert plan.config["models"]["adverse_events_glmm"]["residuals"] == {
        "nsim": 250,
        "seed": 0,
        "simulate": "conditional",
    }
    # a Poisson model may fit the negative binomial counts (a misspecification study)
    cfg["models"]["adverse_events_glmm"]["family"] = "poisson"
    check_config(cfg)


def test_checking_the_default_config_loads_no_fitting_or_plotting_library(root):
    """What the Snakefile imports and checks at parse time (in every Snakemake start and
    cluster job) needs no scipy, engine or plotting library; importing them there cost
    0.2-0.5 s per start (scipy.special alone 0.17 s)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from glmm_steps import bootstrap, cluster, integrity, paths, process_exit, study\n"
        "from glmm_steps.config import load_config\n"
        "from glmm_steps.summary import closing_summary, study_power_lines\n"
        "plan = load_config('config/config.yaml')\n"
        "heavy = ('scipy', 'mixedlm', 'statsmodels', 'matplotlib')\n"
        "print(plan.job_count, sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True).stdout
    count, loaded = out.split(" ", 1)
    assert int(count) > 0 and loaded.strip() == "[]"
