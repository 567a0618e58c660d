"""The workflow on a real SLURM scheduler through `--profile profiles/slurm`.

CI starts a single-node cluster (ci/slurm/start.sh, from .ci/run) and these tests
must run there: with CI set they fail if SLURM is not up. Elsewhere they skip when
SLURM is not installed. One scenario covers the cluster path: the small study is
submitted, one SLURM job is cancelled mid-run, the run is repeated, and the results
must equal a local run of the same config. (A separate uninterrupted SLURM run would
double the time for nothing more: the surviving replicate runs uninterrupted.)
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import STUDY, clone_command, comparable_results, fresh_clone, job_counts

pytestmark = pytest.mark.slow

# SLURM's client commands: hidden from PATH to imitate a machine without SLURM.
SLURM_TOOLS = {"sbatch", "srun", "squeue", "scancel", "sinfo", "scontrol", "sacct", "sacctmgr", "sshare", "salloc"}

# The first status poll comes 2 s after a submission instead of the plugin's 40 s.
FAST_POLL = ("--slurm-init-seconds-before-status-checks", "2")

WAIT_S = 600  # bound on any wait for the scheduler, so a broken cluster fails instead of hanging


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


# Session scope: it must come before the session-scoped local run (clean_run), which
# would otherwise be built first only for the SLURM tests to skip.
@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """A SLURM cluster that accepts jobs; skip without SLURM, except in CI, where its
    absence is a failure (CI must not pass without running these tests)."""
    if shutil.which("sinfo") is None:
        if _in_ci():
            pytest.fail(
                "CI must run the SLURM tests, but 'sinfo' is not on PATH (.ci/run starts "
                "a cluster with ci/slurm/start.sh)"
            )
        pytest.skip(
            "SLURM is not installed ('sinfo' not on PATH); CI runs these tests on a local "
            "cluster (bash ci/slurm/start.sh)"
        )
    proc = subprocess.run(["sinfo", "--noheader", "-o", "%t"], capture_output=True, text=True, timeout=30)
    states = proc.stdout.split()
    if proc.returncode != 0 or not {"idle", "mix", "alloc"} & set(states):
        pytest.fail(
            f"SLURM is installed but has no usable node (sinfo: {(proc.stdout + proc.stderr).strip()!r}); "
            "start the test cluster with `bash ci/slurm/start.sh`"
        )


def _our_jobs(prefix: str) -> dict[int, str]:
    """SLURM job id -> state of the jobs this test submitted (their names start with ``prefix``)."""
    out = subprocess.run(
        ["squeue", "--noheader", "-t", "all", "-o", "%i %j %T"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return {
        int(i): state for i, name, state in (line.split() for line in out.splitlines()) if name.startswith(prefix + "_")
    }


def _cancel_all(prefix: str) -> None:
    """Cancel whatever this test left queued or running (after a failure)."""
    ids = [str(i) for i, state in _our_jobs(prefix).items() if state in ("PENDING", "RUNNING", "CONFIGURING")]
    if ids:
        subprocess.run(["scancel", *ids], timeout=30)


def _submitted(output: str) -> list[int]:
    return [int(i) for i in re.findall(r"has been submitted with SLURM jobid (\d+)", output)]


@dataclass
class Scenario:
    """What the SLURM scenario left behind, for the tests to check."""

    clone: Path
    victim: int  # the SLURM job id that was cancelled
    first: str  # output of the run it was cancelled in
    first_rc: int
    survivor: str  # the replicate whose job was not cancelled
    mtimes: dict[str, float]  # that replicate's outputs after the first run
    second: str  # output of the rerun
    second_rc: int


@pytest.fixture(scope="module")
def cancelled_and_resumed(slurm_cluster, tmp_path_factory) -> Scenario:
    """STUDY through the SLURM profile (one job per replicate), the job of one replicate
    cancelled with scancel as soon as it runs, then the same command again."""
    clone = fresh_clone(tmp_path_factory.mktemp("clone_slurm"))
    prefix = f"glmmtest{os.getpid()}t{int(time.time())}"  # unique: squeue remembers old jobs
    # No retry: the cancelled job must stay failed so that the rerun has work to finish.
    cmd, env = clone_command(
        clone,
        "--profile",
        str(clone / "profiles" / "slurm"),
        "--workflow-profile",
        "none",
        *FAST_POLL,
        "--slurm-jobname-prefix",
        prefix,
        "--retries",
        "0",
    )
    try:
        proc = subprocess.Popen(
            cmd, cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        victim = None
        deadline = time.monotonic() + WAIT_S
        while victim is None and proc.poll() is None and time.monotonic() < deadline:
            jobs = _our_jobs(prefix)
            last = max(jobs, default=None)
            # The later of the two replicate jobs, once it has started the workflow.
            if (
                len(jobs) == 2
                and jobs[last] == "RUNNING"
                and any(p.stat().st_size for p in (clone / ".snakemake" / "slurm_logs").glob(f"*/{last}.log"))
            ):
                subprocess.run(["scancel", str(last)], check=True, timeout=30)
                victim = last
            time.sleep(0.5)
        try:
            first, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the SLURM run did not finish in {WAIT_S} s")
        assert victim is not None, f"no SLURM job to cancel; the run said:\n{first[-3000:]}"
        # The replicate whose job was not cancelled has every model's tables.
        survivor = next(
            (
                rep
                for rep in ("seed-5", "seed-6")
                if len(list(clone.glob(f"results/models/*/[0-9a-f]*/{rep}/fixed_effects.csv"))) == len(STUDY["models"])
            ),
            None,
        )
        assert survivor is not None, f"no replicate finished; the run said:\n{first[-3000:]}"
        outputs = [p for p in clone.glob(f"results/models/*/[0-9a-f]*/{survivor}/**/*") if p.is_file()]
        outputs += [p for p in clone.glob(f"results/data/*/{survivor}/*")]
        mtimes = {str(p): p.stat().st_mtime for p in outputs}
        rerun = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=WAIT_S)
    finally:
        _cancel_all(prefix)
    return Scenario(
        clone, victim, first, proc.returncode, survivor, mtimes, rerun.stdout + rerun.stderr, rerun.returncode
    )


def test_cancelled_job_is_reported_with_its_id_and_log(cancelled_and_resumed):
    s = cancelled_and_resumed
    assert s.first_rc == 1
    # One SLURM job per replicate: the groups of profiles/slurm, not 1 + 3 x 2 jobs each.
    assert len(_submitted(s.first)) == len(STUDY["datasets"]["study"]["seeds"])
    assert s.victim in _submitted(s.first)
    error = s.first.split("Error in group replicate", 1)[1]
    log = Path(re.search(r"log: (\S+)", error)[1])
    assert log.name == f"{s.victim}.log" and log.is_relative_to(s.clone / ".snakemake" / "slurm_logs")
    # The scheduler's own line about the job, shown from its kept log.
    assert re.search(rf"JOB {s.victim} ON \S+ CANCELLED", error)
    assert "CANCELLED" in log.read_text()


def test_rerun_finishes_only_the_cancelled_work(cancelled_and_resumed):
    s = cancelled_and_resumed
    assert s.second_rc == 0, s.second[-3000:]
    assert len(_submitted(s.second)) == 1, s.second[-3000:]
    # Only the cancelled replicate's jobs (simulate, then fit, extract, plot, effects and
    # effect_plot per model) and the bookkeeping after them (a manifest per model,
    # catalog, summary, report tables, all).
    counts, models = job_counts(s.second), len(STUDY["models"])
    assert 0 < counts["fit"] <= models and counts["total"] <= 1 + 5 * models + models + 4, counts
    assert len(s.mtimes) >= 2 * (1 + 5 + 3) + 2
    now = {p: Path(p).stat().st_mtime for p in s.mtimes}
    assert {p for p in s.mtimes if now[p] != s.mtimes[p]} == set()
    assert (s.clone / "results" / "summary.csv").is_file()


def test_slurm_results_equal_the_local_run(slurm_cluster, cancelled_and_resumed, clean_run):
    on_slurm = comparable_results(cancelled_and_resumed.clone / "results")
    local = comparable_results(clean_run / "results")
    assert on_slurm.keys() == local.keys()
    assert len([k for k in local if k.endswith(".csv")]) >= 20
    assert {k for k in local if on_slurm[k] != local[k]} == set()


def test_without_sbatch_the_slurm_profile_stops_with_one_line(tmp_path):
    # Every program on PATH except SLURM's: a machine without SLURM.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        for exe in Path(folder).glob("*") if Path(folder).is_dir() else ():
            target = bin_dir / exe.name
            if exe.name not in SLURM_TOOLS and not target.exists() and not target.is_symlink():
                target.symlink_to(exe)
    clone = fresh_clone(tmp_path / "clone")
    cmd, env = clone_command(clone, "--profile", str(clone / "profiles" / "slurm"), "--workflow-profile", "none")
    proc = subprocess.run(cmd, cwd=clone, env=dict(env, PATH=str(bin_dir)), capture_output=True, text=True)
    assert proc.returncode == 1
    # the last thing said (the progress display ends with blank lines)
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()][-1] == (
        "error: the SLURM profile needs a SLURM cluster: 'sbatch' is not "
        "on PATH (run locally with --profile profiles/default)"
    )
    assert "Traceback" not in proc.stderr
    # no output: only the run's lock on its results folder (glmm_steps.integrity)
    assert sorted(p.name for p in (clone / "results").iterdir()) == [".gitkeep", ".glmm-steps"]
    assert [p.name for p in (clone / "results" / ".glmm-steps").iterdir()] == ["lock"]
    assert not (clone / ".snakemake" / "slurm_logs").exists()
