import json

import pandas as pd
import pytest

from glmm_steps.provenance import build_manifest, package_versions, sha256, verify_outputs, write_manifest
from glmm_steps.versions import catalog, compare_versions, link_latest, version_key

MODEL = {"dataset": "d", "formula": "y ~ x + (1 | g)", "family": "gaussian", "reml": True, "engine": "mixedlm"}
DATA = {"seeds": [1], "simulate": {"levels": [{"name": "g", "n": 3}]}}


def test_version_key_tracks_what_determines_results():
    base = version_key(MODEL, DATA, engine_version="1.3.0")
    assert len(base) == 10 and int(base, 16) >= 0
    assert version_key(dict(MODEL, description="note"), dict(DATA, seeds=[1, 2]), engine_version="1.3.0") == base
    assert version_key(dict(MODEL, formula="y ~ 1 + (1 | g)"), DATA, engine_version="1.3.0") != base
    assert version_key(dict(MODEL, reml=False), DATA, engine_version="1.3.0") != base
    assert version_key(MODEL, DATA, engine_version="1.4.0") != base
    assert version_key(MODEL, {"path": "a.csv"}, engine_version="1.3.0", data_sha256="aa") != version_key(
        MODEL, {"path": "a.csv"}, engine_version="1.3.0", data_sha256="bb"
    )


def test_manifest_checksums_and_verification(tmp_path, root):
    results = tmp_path / "results"
    data, table = tmp_path / "data.csv", results / "v" / "fixed_effects.csv"
    table.parent.mkdir(parents=True)
    data.write_text("y,x\n1,2\n")
    table.write_text("term,estimate\nx,1\n")
    manifest = build_manifest(
        model="m",
        version_key="abc",
        config_excerpt={"model": MODEL},
        seeds=["seed-1"],
        inputs=[str(data)],
        outputs=[str(table)],
        repo=root,
        results=results,
    )
    # paths relative to the results folder
    assert manifest["inputs"]["../data.csv"] == sha256(data)
    assert manifest["outputs"] == {"v/fixed_effects.csv": sha256(table)}
    assert manifest["packages"]["mixedlm"] == package_versions()["mixedlm"] is not None
    assert manifest["git"]["commit"] is None or len(manifest["git"]["commit"]) == 40
    path = results / "v" / "manifest.json"
    write_manifest(manifest, path)
    assert verify_outputs(path, results) == []
    table.write_text("term,estimate\nx,2\n")
    assert verify_outputs(path, results) == [str(table)]
    table.unlink()
    assert verify_outputs(path, results) == []  # a missing file is not a mismatch (integrity.repair handles it)


def _version(models, model, key, created, formula, est):
    folder = models / model / key
    (folder / "seed-1").mkdir(parents=True)
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "model": model,
                "version": key,
                "created": created,
                "seeds": ["seed-1"],
                "config": {"model": {"formula": formula, "dataset": "d"}},
                "git": {"commit": "c" * 40, "dirty": False},
                "packages": {"mixedlm": "1.3.0"},
            }
        )
    )
    pd.DataFrame({"term": ["(Intercept)", "x"], "estimate": [1.0, est]}).to_csv(
        folder / "seed-1" / "fixed_effects.csv", index=False
    )
    pd.DataFrame({"group": ["g", "Residual"], "term": ["(Intercept)"] * 2, "variance": [2.0, 1.0]}).to_csv(
        folder / "seed-1" / "variance_components.csv", index=False
    )
    (folder / "seed-1" / "fit_stats.json").write_text(json.dumps({"logLik": -10.0, "AIC": 28.0, "BIC": 30.0}))
    return folder / "seed-1"


def test_catalog_latest_and_compare(tmp_path):
    models = tmp_path / "models"
    a = _version(models, "m", "aaaaaaaaaa", "2026-01-01T00:00:00Z", "y ~ x + (1 | g)", 0.5)
    b = _version(models, "m", "bbbbbbbbbb", "2026-02-01T00:00:00Z", "y ~ x + (1 | h)", 0.75)
    table = catalog(models, {"m": "bbbbbbbbbb"})
    assert list(table["version"]) == ["aaaaaaaaaa", "bbbbbbbbbb"]
    assert list(table["current"]) == [False, True]
    assert list(table["formula"]) == ["y ~ x + (1 | g)", "y ~ x + (1 | h)"]
    link_latest(models, {"m": "bbbbbbbbbb"})
    assert len(catalog(models, {"m": "bbbbbbbbbb"})) == 2  # `latest` is not a third version
    assert (models / "m" / "latest").resolve() == (models / "m" / "bbbbbbbbbb").resolve()
    link_latest(models, {"m": "aaaaaaaaaa"})  # replaced, not duplicated
    assert (models / "m" / "latest").readlink().name == "aaaaaaaaaa"
    diff = compare_versions(a, b).set_index(["table", "term"])
    assert diff.loc[("fixed_effects", "x"), "difference"] == pytest.approx(0.25)
    assert diff.loc[("fixed_effects", "x"), "relative_difference"] == pytest.approx(0.5)
    assert diff.loc[("fit_stats", "logLik"), "difference"] == 0


def test_catalog_skips_an_unreadable_manifest(tmp_path, capsys):
    models = tmp_path / "models"
    _version(models, "m", "aaaaaaaaaa", "2026-01-01T00:00:00Z", "y ~ x + (1 | g)", 0.5)
    broken = _version(models, "m", "bbbbbbbbbb", "2026-02-01T00:00:00Z", "y ~ x + (1 | h)", 0.75).parent
    (broken / "manifest.json").write_text('{"model": "m", "vers')
    assert list(catalog(models, {"m": "aaaaaaaaaa"})["version"]) == ["aaaaaaaaaa"]
    assert f"skipped unreadable {broken / 'manifest.json'}" in capsys.readouterr().out


def test_compare_shows_a_change_of_standard_error(tmp_path):
    # Two folders with the same estimate of x but different SEs and intervals (a change of
    # engine or of the data's clustering moves SEs without moving estimates).
    folders = []
    for name, se in (("a", 0.10), ("b", 0.15)):
        f = tmp_path / name
        f.mkdir()
        pd.DataFrame(
            {
                "term": ["(Intercept)", "x"],
                "estimate": [1.0, 0.5],
                "std_error": [0.2, se],
                "conf_low": [1.0 - 1.96 * 0.2, 0.5 - 1.96 * se],
                "conf_high": [1.0 + 1.96 * 0.2, 0.5 + 1.96 * se],
            }
        ).to_csv(f / "fixed_effects.csv", index=False)
        pd.DataFrame({"group": ["g"], "term": ["(Intercept)"], "variance": [2.0], "sd": [2.0**0.5]}).to_csv(
            f / "variance_components.csv", index=False
        )
        (f / "fit_stats.json").write_text(json.dumps({"logLik": -10.0, "AIC": 28.0, "BIC": 30.0}))
        folders.append(f)
    diff = compare_versions(*folders).set_index(["table", "term"])
    x = diff.loc[("fixed_effects", "x")]
    assert x["difference"] == 0
    assert x["std_error_difference"] == pytest.approx(0.05)
    assert x["relative_std_error_difference"] == pytest.approx(0.5)
    assert (x["conf_low_a"], x["conf_high_b"]) == pytest.approx((0.5 - 0.196, 0.5 + 0.294))
    assert diff.loc[("fixed_effects", "(Intercept)"), "std_error_difference"] == 0
    # variance components carry no SE: blank, not zero
    assert pd.isna(diff.loc[("variance_components", "(Intercept)"), "std_error_a"])
