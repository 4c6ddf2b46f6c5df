"""The one process-pool runner: a per-item function over worker processes, in chunks, with a
progress bar on stderr. `collect` (file inspection) and `preprocess` (loading) both use it.

Start method: fork when it is safe, else spawn. A forked worker starts at once with everything
this process imported (a spawned one re-imports numpy, OpenCV and the CLI: ~0.5-1 CPU-second
each, a large share of a ~5 CPU-second job), but forking while other threads run can copy a
held lock into the child: fork only while this is the only thread and TensorFlow (which starts
thread pools) is not loaded.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TypeVar

import cv2

from cxraug.core.errors import vassert
from cxraug.core.ui import progress

T = TypeVar("T")
R = TypeVar("R")
CHUNK = 16  # items per worker task: amortises pickling, keeps the progress bar lively


def _run_chunk(fn: Callable[[T], R], start: int, items: Sequence[T]) -> tuple[int, list[R]]:
    return start, [fn(x) for x in items]


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe


def mp_context() -> multiprocessing.context.BaseContext:
    """fork when it is safe (see the module docstring), else spawn."""
    if (
        "fork" in multiprocessing.get_all_start_methods()
        and threading.active_count() == 1
        and "tensorflow" not in sys.modules
    ):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def run_parallel(fn: Callable[[T], R], items: Sequence[T], *, workers: int, what: str,
                 show: bool = True, serial_below: int = CHUNK + 1) -> list[R]:  # fmt: skip
    """[fn(x) for x in items] (same order) in `workers` processes, in chunks of CHUNK.

    Runs in this process (with the workers' single-threaded OpenCV, for fair 1-vs-N timing)
    when workers == 1 or there are fewer than `serial_below` items: a pool costs more than it
    saves there. `fn` must be picklable (a module-level function or a functools.partial)."""
    vassert(workers >= 1, "--workers must be at least 1")
    if workers == 1 or len(items) < serial_below:
        before = cv2.getNumThreads()
        _init_worker()
        try:
            with progress(disable=not show) as bar:
                tid = bar.add_task(what, total=len(items))
                done: list[R] = []
                for x in items:
                    done.append(fn(x))
                    bar.advance(tid)
        finally:
            cv2.setNumThreads(before)
        return done
    parts: dict[int, list[R]] = {}
    ex = ProcessPoolExecutor(workers, mp_context=mp_context(), initializer=_init_worker)
    try:
        ex.submit(int).result()  # start the workers now, before the progress bar's thread
        with progress(disable=not show) as bar:
            tid = bar.add_task(what, total=len(items))
            futures = [ex.submit(_run_chunk, fn, i, items[i : i + CHUNK])
                       for i in range(0, len(items), CHUNK)]  # fmt: skip
            for f in as_completed(futures):
                start, part = f.result()
                parts[start] = part
                bar.advance(tid, len(part))
    finally:  # on Ctrl-C drop the queued chunks instead of finishing them
        ex.shutdown(wait=True, cancel_futures=True)
    return [r for start in sorted(parts) for r in parts[start]]
