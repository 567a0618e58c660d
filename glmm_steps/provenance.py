"""Provenance of a result version: what produced it, and checksums that prove it.

A version's ``manifest.json`` records the config excerpt, the version key, the seeds,
the git commit of the workflow (and whether its tree had uncommitted changes), the
Python and package versions, the platform, and the SHA-256 of every input and output
file. :func:`verify_outputs` re-hashes the files against their manifest, so a
corrupted output is found (and rebuilt) instead of silently reused.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGES = ("snakemake", "pandas", "numpy", "scipy", "statsmodels", "mixedlm", "matplotlib",
            "pyarrow", "pyyaml", "jsonschema", "glmm-steps")
MANIFEST_NAME = "manifest.json"


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


def build_manifest(*, model: str, version_key: str, config_excerpt: dict[str, Any], seeds: list,
                   inputs: list[str], outputs: list[str], repo: str | Path) -> dict[str, Any]:
    """The provenance record of one model version (see module docstring).

    ``inputs`` are the data files fitted, ``outputs`` every file the version holds."""
    return {
        "model": model,
        "version": version_key,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config_excerpt,
        "seeds": seeds,
        "git": git_state(repo),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "platform": {"system": platform.system(), "release": platform.release(),
                     "machine": platform.machine(), "platform": platform.platform()},
        "inputs": {p: sha256(p) for p in inputs},
        "outputs": {p: sha256(p) for p in outputs},
    }


def write_manifest(manifest: dict[str, Any], path: str | Path) -> None:
    """Write a manifest as indented JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(manifest, indent=2) + "\n")


def verify_outputs(manifest_path: str | Path) -> list[str]:
    """Re-hash the outputs a manifest lists; return the paths whose bytes no longer
    match (a missing file is not listed: Snakemake rebuilds it on its own)."""
    manifest = json.loads(Path(manifest_path).read_text())
    return [p for p, digest in manifest.get("outputs", {}).items()
            if Path(p).is_file() and sha256(p) != digest]
