"""Snakemake adapter: write a model version's provenance (glmm_steps.provenance)."""

from pathlib import Path

from glmm_steps.logs import to_log
from glmm_steps.provenance import build_manifest, write_manifest

sm = snakemake  # noqa: F821 (injected by Snakemake)
with to_log(sm.log[0]):
    manifest = build_manifest(
        model=sm.wildcards.model,
        version_key=sm.wildcards.version,
        config_excerpt=sm.params.config_excerpt,
        seeds=sm.params.seeds,
        inputs=list(sm.input.inputs),
        outputs=list(sm.input.outputs),
        results=sm.params.results,
        repo=Path(sm.scriptdir).parent,
    )
    write_manifest(manifest, sm.output[0])
