"""The one process-pool runner: a per-item function over worker processes, in chunks, with a
progress bar on stderr. `collect` (file inspection) and `preprocess` (loading) both use it.
Beside it, the one thread pool (`thread_pool`), for work that releases the GIL.

Start method: fork when it is safe, else spawn. A forked worker starts at once with everything
this process imported (a spawned one re-imports numpy, OpenCV and the CLI: ~0.5-1 CPU-second
each, a large share of a ~5 CPU-second job), but forking while other threads run can copy a
held lock into the child: fork only while this is the only thread and TensorFlow (which starts
thread pools) is not loaded.

A worker that dies (killed by the kernel's out-of-memory killer, a crash in a C decoder) breaks
the whole pool. With `on_crash`, the items whose results were lost are then run again one at a
time in a fresh one-worker pool, so the one that kills its worker is found; it gets
`on_crash(item)` (e.g. an error row) and the others their normal result. That rerun is
sequential: a crash costs the batch's remaining parallelism, never its other rows.

Workers die with this process. Nothing else would end them when it is killed (SIGKILL, SIGHUP):
they would live on under PID 1, finishing (or stalling in) their chunks, holding the scratch
files they write. Each worker asks the kernel for SIGKILL when its parent dies (Linux
`prctl(PR_SET_PDEATHSIG)`); where that is missing, a thread in the worker watches its parent
PID. The workspace lock is not theirs in any case (cxraug.core.lock: a record lock is never
inherited).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import cv2

from cxraug.core.errors import vassert
from cxraug.core.ui import progress

T = TypeVar("T")
R = TypeVar("R")
CHUNK = 16  # items per worker task: amortises pickling, keeps the progress bar lively


def _run_chunk(fn: Callable[[T], R], start: int, items: Sequence[T]) -> tuple[int, list[R]]:
    return start, [fn(x) for x in items]


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def die_with(parent: int) -> None:
    """End this process when `parent` dies (module docstring); call it first in a child."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _init_worker(parent: int | None = None) -> None:
    if parent is not None:
        die_with(parent)
    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe


def _pool(workers: int, ctx: multiprocessing.context.BaseContext) -> ProcessPoolExecutor:
    """A pool whose workers die with this process."""
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(os.getpid(),))  # fmt: skip


def mp_context() -> multiprocessing.context.BaseContext:
    """fork when it is safe (see the module docstring), else spawn."""
    if (
        "fork" in multiprocessing.get_all_start_methods()
        and threading.active_count() == 1
        and "tensorflow" not in sys.modules
    ):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _isolate(fn: Callable[[T], R], items: Sequence[T], todo: list[int],
             on_crash: Callable[[T], R],
             ctx: multiprocessing.context.BaseContext) -> dict[int, R]:  # fmt: skip
    """fn(items[i]) for i in todo, one at a time in a one-worker pool: an item whose worker
    dies gets on_crash(item), and the next item a fresh pool. `ctx` is the start method of
    the pool that broke, so each item is retried under the same conditions (choosing again
    could pick spawn only because the broken pool's threads are still winding down)."""
    done: dict[int, R] = {}
    ex: ProcessPoolExecutor | None = None
    try:
        for i in todo:
            if ex is None:
                ex = _pool(1, ctx)
            try:
                done[i] = ex.submit(fn, items[i]).result()
            except BrokenProcessPool:
                done[i] = on_crash(items[i])
                ex.shutdown(wait=True)
                ex = None
    finally:
        if ex is not None:
            ex.shutdown(wait=True, cancel_futures=True)
    return done


def run_parallel(fn: Callable[[T], R], items: Sequence[T], *, workers: int, what: str,
                 show: bool = True, serial_below: int = CHUNK + 1,
                 on_crash: Callable[[T], R] | None = None) -> list[R]:  # fmt: skip
    """[fn(x) for x in items] (same order) in `workers` processes, in chunks of CHUNK.

    Runs in this process (with the workers' single-threaded OpenCV, for fair 1-vs-N timing)
    when workers == 1 or there are fewer than `serial_below` items: a pool costs more than it
    saves there. `fn` must be picklable (a module-level function or a functools.partial).
    `on_crash(item)` is the result of an item whose worker process died (module docstring);
    without it a dead worker raises BrokenProcessPool."""
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
    ctx = mp_context()
    ex = _pool(workers, ctx)
    try:
        ex.submit(int).result()  # start the workers now, before the progress bar's thread
        with progress(disable=not show) as bar:
            tid = bar.add_task(what, total=len(items))
            futures = [ex.submit(_run_chunk, fn, i, items[i : i + CHUNK])
                       for i in range(0, len(items), CHUNK)]  # fmt: skip
            broken = False
            for f in as_completed(futures):
                try:
                    start, part = f.result()
                except BrokenProcessPool:
                    if on_crash is None:
                        raise
                    broken = True
                    continue  # every unfinished chunk fails the same way
                parts[start] = part
                bar.advance(tid, len(part))
    finally:  # on Ctrl-C drop the queued chunks instead of finishing them
        ex.shutdown(wait=True, cancel_futures=True)
    if broken and on_crash is not None:
        lost = [i for s in range(0, len(items), CHUNK) if s not in parts
                for i in range(s, min(len(items), s + CHUNK))]  # fmt: skip
        again = _isolate(fn, items, lost, on_crash, ctx)
        for s in range(0, len(items), CHUNK):
            if s not in parts:
                parts[s] = [again[i] for i in range(s, min(len(items), s + CHUNK))]
    return [r for start in sorted(parts) for r in parts[start]]


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks (macOS)
        return os.cpu_count() or 1


def thread_pool(workers: int | None = None) -> ThreadPoolExecutor:
    """Threads for work that releases the GIL (OpenCV's PNG encoder, file writes and their
    fsync): `workers`, default one per CPU this process may use (`cpu_count`). More threads
    than CPUs gain nothing: `generate` encoding and writing 256 PNGs of 224 px measured 0.41 s
    in one thread, 0.26 s in two on two cores, 0.24 s in four."""
    n = cpu_count() if workers is None else workers
    vassert(n >= 1, "a thread pool needs at least 1 worker")
    return ThreadPoolExecutor(max_workers=n)
