"""Send a step's output and warnings to its log file (Snakemake's ``log:``)."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from glmm_steps.process_exit import freeze_loaded


@contextlib.contextmanager
def to_log(path: str | Path | None):
    """Redirect stdout, stderr and Python warnings to ``path`` for the block
    (no-op when ``path`` is None). The file is replaced, not appended.

    Meant for a step's own process (every script in scripts/ runs its step in this
    block): on entry the libraries imported so far are frozen out of the garbage
    collector (:func:`glmm_steps.process_exit.freeze_loaded`)."""
    freeze_loaded()
    if path is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        logging.captureWarnings(True)
        handler = logging.StreamHandler(fh)
        logging.getLogger("py.warnings").addHandler(handler)
        try:
            yield
        finally:
            logging.getLogger("py.warnings").removeHandler(handler)
            logging.captureWarnings(False)


def fail(message: str) -> None:
    """Print one line for the user (also into the log) and exit non-zero, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def progress(label: str, total: int, step: float = 0.1) -> Callable[[int, int], None]:
    """A callback ``report(done, failed)`` for a loop over ``total`` items that prints one
    line each time another ``step`` share of them is done (and at the end): done, share,
    failures, elapsed and estimated remaining time. The line goes to stderr, which is the
    step's log inside :func:`to_log`, and then also to the terminal's stderr, so
    Snakemake's output shows how far a long job has got."""
    start = time.perf_counter()
    bands = max(1, round(1 / step))
    last = [0]

    def report(done: int, failed: int) -> None:
        band = done * bands // max(total, 1)
        if band <= last[0] and done < total:
            return
        last[0] = band
        elapsed = time.perf_counter() - start
        left = elapsed / done * (total - done) if done else float("nan")
        line = (
            f"{label}: {done}/{total} ({100 * done / max(total, 1):.0f}%), {failed} failed, "
            f"{elapsed:.1f} s elapsed, ~{left:.0f} s left"
        )
        streams = [sys.stderr] + ([sys.__stderr__] if sys.stderr is not sys.__stderr__ and sys.__stderr__ else [])
        for stream in streams:
            print(line, file=stream, flush=True)

    return report
