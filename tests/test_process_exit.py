"""A process of the run ends when its work ends (glmm_steps.process_exit)."""

import gc
import subprocess
import sys
import threading

from glmm_steps import process_exit


def test_end_run_cancels_pending_timers_and_freezes_the_heap():
    """A pending non-daemon Timer (Snakemake's job-rate re-evaluation) would hold the
    interpreter's exit until it fires; after end_run it has ended without firing."""
    fired = []
    timer = threading.Timer(60, lambda: fired.append(True))
    timer.start()
    try:
        process_exit.end_run()
        timer.join(timeout=10)
        assert not timer.is_alive() and not fired
        assert gc.get_freeze_count() > 0
    finally:
        timer.cancel()
        gc.unfreeze()


def test_a_process_with_a_pending_timer_exits_at_once_after_end_run():
    """The same in a process of its own, as at the end of a Snakemake run: it exits with
    status 0, and without end_run it is still waiting for the 60 s timer."""
    code = "import threading; threading.Timer(60, print).start(); {}"
    ended = subprocess.run(
        [sys.executable, "-c", code.format("from glmm_steps import process_exit; process_exit.end_run()")],
        timeout=30,
    )
    assert ended.returncode == 0
    waiting = subprocess.Popen([sys.executable, "-c", code.format("pass")])
    try:
        try:
            waiting.wait(timeout=1.5)
        except subprocess.TimeoutExpired:
            pass
        assert waiting.poll() is None
    finally:
        waiting.kill()
        waiting.wait()


def test_freeze_loaded_keeps_later_garbage_collectable():
    """Objects made after the freeze are still collected: a job's work does not leak."""
    process_exit.freeze_loaded()
    try:
        frozen = gc.get_freeze_count()

        class Cycle:
            pass

        a, b = Cycle(), Cycle()
        a.other, b.other = b, a
        del a, b
        assert gc.collect() >= 2
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
