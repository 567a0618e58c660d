"""The results folder is the workflow's: one run at a time, and what it finds broken
there it rebuilds, touching nothing else.

- :func:`lock` takes an exclusive lock on ``<results>/.glmm-steps/lock`` for the life
  of the process (``fcntl.flock``: the kernel drops it when the process ends, even by
  SIGKILL, so a killed run never leaves it behind). A second run on the same folder
  stops with one line before it removes or writes anything.
- :func:`repair` compares the files the workflow writes for each fit with the
  checksums of its version's manifest and removes, so Snakemake rebuilds them, the
  files that differ or are missing and every file of that fit made from them
  (Snakemake alone would leave a missing intermediate such as the fit file or the
  simulated data unrebuilt, since the tables made from it still exist). The files it
  may remove are the ones the caller lists, built from the config by the workflow's
  own path templates, and only inside the results folder: a manifest supplies
  checksums, never paths to remove.
- :func:`is_run` tells a run from a dry run or a report, which must change nothing.

Only the workflow's main process calls these (cluster jobs re-read the Snakefile too).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from glmm_steps.errors import GlmmError
from glmm_steps.provenance import read_digests, relative, sha256

LOCK = ".glmm-steps/lock"
# Command-line options of Snakemake that inspect or report and run no job: nothing is
# locked or removed for them (a dry run must not change the folder it describes).
_INSPECT_LONG = {
    "--dry-run",
    "--dryrun",
    "--list",
    "--list-rules",
    "--list-target-rules",
    "--lt",
    "--summary",
    "--detailed-summary",
    "--dag",
    "--rulegraph",
    "--filegraph",
    "--d3dag",
    "--report",
    "--lint",
    "--list-changes",
    "--lc",
    "--list-input-changes",
    "--li",
    "--list-params-changes",
    "--lp",
    "--list-code-changes",
    "--list-untracked",
    "--lu",
    "--unlock",
    "--touch",
    "--archive",
    "--cleanup-metadata",
    "--cm",
    "--cleanup-shadow",
    "--export-cwl",
    "--print-compilation",
    "--containerize",
    "--generate-unit-tests",
    "--delete-all-output",
    "--delete-temp-output",
    "--version",
    "--help",
    "--compile-wrappers",
    "--list-conda-envs",
    "--conda-create-envs-only",
    "--conda-cleanup-envs",
}
_INSPECT_SHORT = set("nlSDthv")
_held: list = []  # the open lock files of this process: closing one would release its lock


def is_run(argv: list[str]) -> bool:
    """False when Snakemake's command line ``argv`` (without the program name) asks
    for a dry run, a listing, a report, an unlock or another command that runs no job.
    (While the Snakefile is read, Snakemake has not yet chosen its executor, so the
    command line is all there is to go by.)"""
    for arg in argv:
        if arg.startswith("--"):
            if arg.split("=", 1)[0] in _INSPECT_LONG:
                return False
        elif arg.startswith("-") and arg[1:].isalpha() and _INSPECT_SHORT & set(arg[1:]):
            return False
    return True


def lock(results: str | Path) -> None:
    """Hold the results folder's lock until this process ends. Raises a one-line
    GlmmError when another process holds it (another run on the same folder)."""
    path = Path(results) / LOCK
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except OSError as e:
        raise GlmmError(f"cannot lock the results folder {results}: {e.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise GlmmError(
            f"another run is using the results folder {results}; wait for it to end "
            "(or give this run another results_dir)"
        ) from None
    _held.append(handle)


def is_locked(results: str | Path) -> bool:
    """True when another process holds the results folder's lock (creates nothing)."""
    path = Path(results) / LOCK
    try:
        with open(path) as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return False


def repair(results: str | Path, manifests: dict[str, list[list[list[str]]]]) -> list[str]:
    """Remove what must be rebuilt; return one message line per finding.

    ``manifests`` maps each current version's manifest path to its fits, each fit
    given as its stages: lists of the files the workflow writes for it, each stage
    made from the ones before (simulated data, fit file, tables, plots). A file whose
    bytes differ from the manifest, or that the manifest lists but is missing, is
    removed with every file of the later stages of its fit. A manifest that cannot be
    read is removed, so it is written again."""
    root = Path(os.path.realpath(results))
    messages = []
    for manifest, fits in manifests.items():
        if not os.path.lexists(manifest):
            continue
        digests = read_digests(manifest)
        if digests is None:
            messages.append(
                f"unreadable manifest: {manifest} (truncated, edited or of an older version); rebuilding it"
            )
            messages += _remove(manifest, root)
            continue
        for stages in fits:
            first_bad = None
            for level, files in enumerate(stages):
                for path in files:
                    digest = digests.get(relative(path, results))
                    if digest is None:
                        continue
                    if not os.path.isfile(path):
                        messages.append(f"missing: {path} (listed in {manifest}); rebuilding it")
                    elif sha256(path) != digest:
                        messages.append(f"checksum mismatch: {path} differs from {manifest}; rebuilding it")
                    else:
                        continue
                    first_bad = level if first_bad is None else min(first_bad, level)
            if first_bad is not None:
                for path in (p for files in stages[first_bad:] for p in files):
                    messages += _remove(path, root)
    return messages


def _remove(path: str, root: Path) -> list[str]:
    """Remove the file ``path`` if it is one inside ``root`` (through no link that leads
    out of it); a message when it is not removed for that reason."""
    if not os.path.lexists(path):
        return []
    real = Path(os.path.realpath(path))
    if os.path.islink(path) or root not in real.parents or not real.is_file():
        return [f"not removed: {path} is not a file inside {root}"]
    os.remove(path)
    return []
