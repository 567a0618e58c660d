"""The results folder's lock, the repair of what differs from a manifest, and the
bounds that keep a hostile config or formula from costing more than a message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glmm_steps import integrity
from glmm_steps.config import MAX_FIXED_TERMS, MAX_YAML_VALUES, check_config, read_yaml
from glmm_steps.errors import MAX_MESSAGE, ConfigError, GlmmError
from glmm_steps.provenance import PATHS, build_manifest, relative, write_manifest

# --- which command lines are runs -------------------------------------------------


@pytest.mark.parametrize(
    "argv, run",
    [
        ([], True),
        (["--cores", "2"], True),
        (["-c4", "-p"], True),
        (["--rerun-incomplete", "-F"], True),
        (["-n"], False),
        (["-np"], False),
        (["--dry-run"], False),
        (["--report", "r.html"], False),
        (["--report=r.html"], False),
        (["--unlock"], False),
        (["-S"], False),
        (["--lint"], False),
        (["--dag"], False),
        (["-t"], False),
    ],
)
def test_is_run(argv, run):
    assert integrity.is_run(argv) is run


# --- the lock ---------------------------------------------------------------------


def test_a_second_process_cannot_take_the_lock_and_a_dead_one_leaves_none(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from glmm_steps import integrity; "
            "integrity.lock(sys.argv[1]); print('held', flush=True); time.sleep(60)",
            str(tmp_path / "res"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert integrity.is_locked(tmp_path / "res")
        with pytest.raises(GlmmError, match="another run is using the results folder"):
            integrity.lock(tmp_path / "res")
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait()
    assert not integrity.is_locked(tmp_path / "res")
    integrity.lock(tmp_path / "res")  # free again
    integrity._held.pop().close()


# --- repair -----------------------------------------------------------------------


def _version(tmp_path: Path):
    """A results folder with one fit's four stages and its manifest."""
    results = tmp_path / "results"
    stages = [
        [results / "data/d/seed-1/data.csv"],
        [results / "models/m/v/seed-1/fit.zip"],
        [results / "models/m/v/seed-1/fixed_effects.csv"],
        [results / "models/m/v/seed-1/plots/p.png"],
    ]
    for i, (path,) in enumerate(stages):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"stage {i}\n")
    manifest = results / "models/m/v/manifest.json"
    write_manifest(
        build_manifest(
            model="m",
            version_key="v",
            config_excerpt={},
            seeds=["seed-1"],
            inputs=[str(stages[0][0])],
            outputs=[str(p) for (p,) in stages[1:]],
            repo=tmp_path,
            results=results,
        ),
        manifest,
    )
    return results, manifest, [[str(p) for p in s] for s in stages]


def test_a_bad_file_is_removed_with_the_later_stages_of_its_fit(tmp_path):
    results, manifest, stages = _version(tmp_path)
    assert integrity.repair(results, {str(manifest): [stages]}) == []
    Path(stages[1][0]).write_text("corrupted\n")
    messages = integrity.repair(results, {str(manifest): [stages]})
    assert messages == [f"checksum mismatch: {stages[1][0]} differs from {manifest}; rebuilding it"]
    assert [os.path.exists(s[0]) for s in stages] == [True, False, False, False]
    # a missing intermediate: what was made from it goes too
    results, manifest, stages = _version(tmp_path / "again")
    os.remove(stages[0][0])
    assert integrity.repair(results, {str(manifest): [stages]})[0].startswith(f"missing: {stages[0][0]}")
    assert not any(os.path.exists(s[0]) for s in stages)


def test_a_manifest_supplies_checksums_never_paths(tmp_path):
    results, manifest, stages = _version(tmp_path)
    outside = tmp_path / "victim.txt"
    outside.write_text("keep\n")
    record = json.loads(manifest.read_text())
    record["outputs"] |= {str(outside): "0" * 64, "../victim.txt": "0" * 64}
    manifest.write_text(json.dumps(record))
    assert integrity.repair(results, {str(manifest): [stages]}) == []
    assert outside.read_text() == "keep\n"


def test_a_link_out_of_the_results_folder_is_not_followed(tmp_path):
    results, manifest, stages = _version(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "seed-1").mkdir(parents=True)
    (elsewhere / "seed-1" / "fit.zip").write_text("someone else's\n")
    os.rename(results / "models/m/v/seed-1", tmp_path / "moved")
    os.symlink(elsewhere / "seed-1", results / "models/m/v/seed-1")
    messages = integrity.repair(results, {str(manifest): [stages]})
    assert (elsewhere / "seed-1" / "fit.zip").read_text() == "someone else's\n"
    assert any(m.startswith("not removed:") for m in messages)


def test_an_unreadable_or_old_manifest_is_removed_to_be_rebuilt(tmp_path):
    for content in ('{"outputs": {"results/m": "', '{"inputs": {}, "outputs": {}}', "[]"):
        results, manifest, stages = _version(tmp_path / str(len(content)))
        manifest.write_text(content)
        messages = integrity.repair(results, {str(manifest): [stages]})
        assert messages == [
            f"unreadable manifest: {manifest} (truncated, edited or of an older version); rebuilding it"
        ]
        assert not manifest.exists() and all(os.path.exists(s[0]) for s in stages)


def test_manifest_paths_are_relative_to_the_results_folder(tmp_path):
    results, manifest, _ = _version(tmp_path)
    record = json.loads(manifest.read_text())
    assert record["paths"] == PATHS
    assert sorted(record["outputs"]) == [
        "models/m/v/seed-1/fit.zip",
        "models/m/v/seed-1/fixed_effects.csv",
        "models/m/v/seed-1/plots/p.png",
    ]
    assert relative(tmp_path / "data.csv", results) == "../data.csv"


# --- bounds on what a config can cost ---------------------------------------------


def _laughs(levels: int) -> str:
    text = 'l0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for i in range(1, levels):
        text += f"l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n"
    return text


def test_alias_expansion_is_bounded_and_every_message_short(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(_laughs(7))  # 1 KB standing for 4.8 million values
    start = time.process_time()
    with pytest.raises(ConfigError, match=f"more than {MAX_YAML_VALUES:,} values") as info:
        read_yaml(path)
    assert time.process_time() - start < 5  # generous: it is a scan of 1 KB, not an expansion
    assert len(str(info.value)) <= MAX_MESSAGE
    # 5 levels (59,049 values) reads; the schema's message about it stays one short line
    path.write_text(_laughs(5) + "datasets: *a4\nmodels: *a4\n")
    with pytest.raises(ConfigError) as info:
        check_config(read_yaml(path))
    assert "\n" not in str(info.value) and len(str(info.value)) <= MAX_MESSAGE


def test_the_default_config_with_its_alias_still_reads(root):
    config = read_yaml(root / "config" / "config.yaml")
    assert config["datasets"]["bp_recovery"]["simulate"] is config["datasets"]["bp_study"]["simulate"]


def test_any_message_is_one_bounded_line():
    e = GlmmError("x" * 10_000 + "\nsecond line")
    assert "\n" not in str(e) and len(str(e)) == MAX_MESSAGE
    assert str(ConfigError("models.m\n", "bad")) == "config error: models.m\\n: bad"


@pytest.mark.parametrize("k", [10, 30, 300])
def test_a_long_interaction_is_refused_while_it_expands(k, monkeypatch):
    """c1*...*ck has 2^k - 1 terms: the parser stops as soon as an expansion passes
    MAX_FIXED_TERMS, so its work stays near the bound however large k is."""
    formula = "y ~ " + "*".join(f"c{i}" for i in range(1, k + 1)) + " + (1 | g)"
    import glmm_steps.formula as formula_mod

    crossed = []
    real = formula_mod._Terms.cross

    def counting(self, a, b):
        crossed.append(len(a) * len(b))
        return real(self, a, b)

    monkeypatch.setattr(formula_mod._Terms, "cross", counting)
    with pytest.raises(GlmmError, match=f"expands to more than {MAX_FIXED_TERMS:,} terms"):
        formula_mod.parse(formula)
    # the last product is abandoned after MAX_FIXED_TERMS + 1 terms; the ones before it
    # each made fewer than the bound
    assert sum(min(c, MAX_FIXED_TERMS + 1) for c in crossed) < 4 * MAX_FIXED_TERMS
    config = {
        "datasets": {
            "d": {
                "seeds": [1],
                "simulate": {
                    "levels": [{"name": "g", "n": 5}],
                    "repeated": {"name": "t", "values": [1, 2]},
                    "outcomes": {"y": {"family": "gaussian", "intercept": 0, "residual_sd": 1}},
                },
            }
        },
        "models": {"m": {"dataset": "d", "formula": formula}},
    }
    with pytest.raises(ConfigError, match=f"expands to more than {MAX_FIXED_TERMS:,} terms"):
        check_config(config)
