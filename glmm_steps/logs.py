"""Send a step's output and warnings to its log file (Snakemake's ``log:``)."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path


@contextlib.contextmanager
def to_log(path: str | Path | None):
    """Redirect stdout, stderr and Python warnings to ``path`` for the block
    (no-op when ``path`` is None). The file is replaced, not appended."""
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
