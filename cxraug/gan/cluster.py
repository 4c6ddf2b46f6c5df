"""Several workers, one run (`--strategy multiworker`): who writes, and how workers agree.

MultiWorkerMirroredStrategy runs the same program on every worker (cluster layout from the
TF_CONFIG environment variable) and keeps their variables equal by all-reducing gradients
and BatchNorm sums. Its collective ops must be entered by every worker in the same order,
so every worker runs the whole loop (steps, checkpoint reads of the variables); only the
CHIEF writes the run folder: TF_CONFIG task type "chief", or worker 0 when the cluster has
no chief. Workers on other hosts read that folder on resume, so it must be on a filesystem
that all of them share (docs/training.md, "Several machines").

A worker that stops alone would leave the others waiting in a collective, so decisions that
end a run (a bad input, a signal) are agreed first: `any_worker` all-reduces a flag, and
every worker acts on the same answer.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from cxraug.core.errors import CxrError, InputError

T = TypeVar("T")


def make_strategy(name: str) -> Any:
    """The tf.distribute strategy of --strategy (TensorFlow is imported here, not with this
    module: the train stage reads the roles below before any network runs)."""
    from cxraug.core.tf_setup import tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()  # all local GPUs (or logical devices)
    if name == "multiworker":  # cluster layout from the TF_CONFIG environment variable
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _cluster(strategy: Any) -> tuple[dict[str, list[str]], str | None, int | None]:
    """(cluster spec as a dict, this task's type, its index); ({}, None, None) for one process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return {}, None, None
    spec = resolver.cluster_spec().as_dict()
    return spec, resolver.task_type, resolver.task_id


def num_workers(strategy: Any) -> int:
    """Processes taking part (chief included): 1 unless a TF_CONFIG cluster is in use."""
    spec, _, _ = _cluster(strategy)
    return max(1, len(spec.get("chief", [])) + len(spec.get("worker", [])))


def is_chief(strategy: Any) -> bool:
    """True for the one process that writes the run folder (always True without a cluster)."""
    spec, task_type, task_id = _cluster(strategy)
    if not spec or task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and not spec.get("chief")


def chief_by_environment() -> bool:
    """`is_chief` decided from the TF_CONFIG environment variable alone, before a cluster
    forms (the run lock is taken first); True without TF_CONFIG or with one naming no task."""
    try:
        conf = json.loads(os.environ.get("TF_CONFIG", "") or "{}")
        spec, task = conf.get("cluster", {}), conf.get("task", {})
        task_type, task_id = task.get("type"), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError):
        return True  # make_strategy reports a malformed TF_CONFIG
    if not spec or task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and not spec.get("chief")


def describe(strategy: Any) -> str:
    """'' for one process, else e.g. ' [worker 1 of 2: writes nothing]' for the start line."""
    if num_workers(strategy) == 1:
        return ""
    _, task_type, task_id = _cluster(strategy)
    role = "chief: writes the run folder" if is_chief(strategy) else "writes nothing"
    return f" [{task_type} {task_id} of {num_workers(strategy)} workers; {role}]"


# One compiled all-gather per strategy; the strategy is kept with it, so that its id cannot
# be reused by another strategy while the entry exists.
_GATHERS: dict[int, tuple[Any, Any]] = {}


def _gather(strategy: Any, values: list[float]) -> Any:
    """Every replica's `values`, (replicas, len(values)) as numpy (a collective: all must
    call). An all-gather, because tf.distribute reduces only by SUM and MEAN; in a
    tf.function, because eager collectives are slow (TensorFlow warns about them)."""
    from cxraug.core.tf_setup import tf

    if id(strategy) not in _GATHERS:

        def gather(x: Any) -> Any:
            return strategy.gather(strategy.run(tf.identity, args=(x,)), axis=0)

        _GATHERS[id(strategy)] = (strategy, tf.function(gather))
    return _GATHERS[id(strategy)][1](tf.constant([values], tf.float32)).numpy()


def any_worker(strategy: Any, flag: bool) -> bool:
    """True on every worker if `flag` is True on any of them (no collective for one process)."""
    if num_workers(strategy) == 1:
        return flag
    return bool(_gather(strategy, [1.0 if flag else 0.0]).max() > 0)


def agreed(strategy: Any, check: Callable[[], T]) -> T:
    """Run `check` on every worker; if it raised a CxrError on any, raise on all of them
    (the worker that failed raises its own error, the others say where to look)."""
    failure: CxrError | None = None
    result: T | None = None
    try:
        result = check()
    except CxrError as e:
        failure = e
    if any_worker(strategy, failure is not None):
        if failure is not None:
            raise failure
        raise InputError("another worker could not start this run; its message (on its "
                         "terminal or log) says why and how to fix it")  # fmt: skip
    return result  # type: ignore[return-value]


def same_on_all_workers(strategy: Any, text: str) -> bool:
    """True when `text` (e.g. a config as JSON) is the same on every worker: all workers'
    48-bit hashes agree (sent as two 24-bit chunks, exact in float32)."""
    if num_workers(strategy) == 1:
        return True
    h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:6], "big")
    parts = [float(h >> 24), float(h & 0xFFFFFF)]
    every = _gather(strategy, parts)  # (replicas, 2)
    return bool((every == every[0]).all())
