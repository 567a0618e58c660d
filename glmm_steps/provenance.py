"""Provenance of a result version: what produced it, and checksums that prove it.

A version's ``manifest.json`` records the config excerpt, the version key, the seeds,
the git commit of the workflow (and whether its tree had uncommitted changes), the
Python and package versions, the platform, and the SHA-256 of every input and output
file, by its path relative to the results folder (so a copied or moved folder keeps
meaning what it says, and a manifest can name no file elsewhere). :func:`verify_outputs`
re-hashes the files against their manifest, so a corrupted output is found (and
rebuilt, see glmm_steps.integrity) instead of silently reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGES = (
    "snakemake",
    "pandas",
    "numpy",
    "scipy",
    "statsmodels",
    "mixedlm",
    "matplotlib",
    "pyarrow",
    "pyyaml",
    "jsonschema",
    "glmm-steps",
)
MANIFEST_NAME = "manifest.json"
# Written into every manifest: a manifest without it predates relative paths.
PATHS = "relative to the results folder"
_DIGEST = re.compile(r"[0-9a-f]{64}")


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that can change a result (None if absent)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_state(repo: str | Path) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the git tree at ``repo``.

    ``dirty`` is true when tracked files differ from the commit; None when ``repo``
    is not a git checkout (an installed copy of the workflow)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": bool(status and status.strip())}


def relative(path: str | Path, results: str | Path) -> str:
    """``path`` as a manifest names it: relative to the results folder ``results``
    (a data file outside it starts with ``..``)."""
    return Path(os.path.relpath(path, results)).as_posix()


def build_manifest(
    *,
    model: str,
    version_key: str | None,
    config_excerpt: dict[str, Any],
    seeds: list | dict[str, int],
    inputs: list[str],
    outputs: list[str],
    repo: str | Path,
    results: str | Path = "results",
) -> dict[str, Any]:
    """The provenance record of one model version (see module docstring), or of a
    study model's tables (``version_key`` None: studies are not versioned; ``seeds``
    its base seed and number of replicates).

    ``inputs`` are the data files fitted (a study: its batch tables), ``outputs`` every
    file the version holds; both are recorded relative to the results folder
    ``results``."""
    return {
        "model": model,
        "version": version_key,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config_excerpt,
        "seeds": seeds,
        "git": git_state(repo),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "platform": platform.platform(),
        },
        "paths": PATHS,
        "inputs": {relative(p, results): sha256(p) for p in inputs},
        "outputs": {relative(p, results): sha256(p) for p in outputs},
    }


def write_manifest(manifest: dict[str, Any], path: str | Path) -> None:
    """Write a manifest as indented JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(manifest, indent=2) + "\n")


def read_digests(manifest_path: str | Path) -> dict[str, str] | None:
    """The SHA-256 of every input and output a manifest lists, by path relative to the
    results folder; None when the file is not such a manifest (truncated, edited, or
    written before paths were relative)."""
    try:
        manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("paths") != PATHS:
        return None
    digests: dict[str, str] = {}
    for key in ("inputs", "outputs"):
        listed = manifest.get(key)
        if not isinstance(listed, dict):
            return None
        for path, digest in listed.items():
            if not (isinstance(digest, str) and _DIGEST.fullmatch(digest)):
                return None
            digests[path] = digest
    return digests


def verify_outputs(manifest_path: str | Path, results: str | Path) -> list[str]:
    """Re-hash the files a manifest lists under the results folder ``results``; return
    those whose bytes no longer match (a missing file is not listed)."""
    digests = read_digests(manifest_path) or {}
    found = [(Path(results) / rel, digest) for rel, digest in digests.items()]
    return [str(p) for p, digest in found if p.is_file() and sha256(p) != digest]
