"""Scheduler resources per rule, and the check that a SLURM run has SLURM."""

import pytest
import yaml

from glmm_steps.cluster import missing_scheduler, rule_resources
from glmm_steps.config import check_config
from glmm_steps.errors import ConfigError


@pytest.fixture()
def cfg(root):
    return yaml.safe_load((root / "config" / "config.yaml").read_text())


def test_defaults_apply_when_the_config_says_nothing(cfg):
    config = check_config(cfg).config
    assert config["resources"] == {}
    assert rule_resources(config, "fit", {"mem_mb": 2000, "runtime": 30}) == {"mem_mb": 2000, "runtime": 30}


def test_config_overrides_a_rule_key_by_key(cfg):
    cfg["resources"] = {"fit": {"mem_mb": 16000, "cpus_per_task": 2}}
    config = check_config(cfg).config
    assert rule_resources(config, "fit", {"mem_mb": 2000, "runtime": 30}) == {
        "mem_mb": 16000,
        "runtime": 30,
        "cpus_per_task": 2,
    }
    # other rules keep their own defaults
    assert rule_resources(config, "plot", {"mem_mb": 1000, "runtime": 10}) == {"mem_mb": 1000, "runtime": 10}


def test_retries_ask_for_more_memory_and_time_but_not_more_cpus(cfg):
    cfg["resources"] = {"fit": {"cpus_per_task": 2}}
    config = check_config(cfg).config
    assert rule_resources(config, "fit", {"mem_mb": 2000, "runtime": 30}, attempt=3) == {
        "mem_mb": 6000,
        "runtime": 90,
        "cpus_per_task": 2,
    }


def test_resources_do_not_change_result_versions(cfg):
    before = check_config(cfg).versions
    cfg["resources"] = {"fit": {"mem_mb": 64000, "runtime": 600}}
    assert check_config(cfg).versions == before


@pytest.mark.parametrize(
    "resources, message",
    [
        ({"fitt": {"mem_mb": 1}}, "config error: resources.fitt: unknown key (did you mean 'fit'?)"),
        (
            {"fit": {"memory": 1}},
            "config error: resources.fit.memory: unknown key (allowed: mem_mb, runtime, cpus_per_task)",
        ),
        ({"fit": {"runtime": "1h"}}, "config error: resources.fit.runtime: expected integer, got '1h'"),
        ({"fit": {"mem_mb": 0}}, "config error: resources.fit.mem_mb: must be >= 1, got 0"),
    ],
)
def test_bad_resources_name_the_key(cfg, resources, message):
    cfg["resources"] = resources
    with pytest.raises(ConfigError) as info:
        check_config(cfg)
    assert str(info.value) == message


def test_slurm_without_sbatch_is_refused_with_one_line():
    message = missing_scheduler("slurm", which=lambda name: None)
    assert message == (
        "error: the SLURM profile needs a SLURM cluster: 'sbatch' is not on PATH "
        "(run locally with --profile profiles/default)"
    )
    assert missing_scheduler("slurm", which=lambda name: f"/usr/bin/{name}") is None
    # local runs never need SLURM
    assert missing_scheduler("local", which=lambda name: None) is None
    assert missing_scheduler(None, which=lambda name: None) is None
