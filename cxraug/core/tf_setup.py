"""Import TensorFlow and Keras through this module: CPU fast paths on, quiet start-up.

oneDNN is off by default on AVX2-only CPUs; turning it on lifts the paper model's matmuls
from ~23-40 to ~110-150 GFLOP/s on our 2-core machine (docs: ../shared/docs/pitfalls.md #17).
The variables only take effect if set before TensorFlow is first imported; a user's own
setting always wins.

TensorFlow 2.21 prints ~10 C++ log lines at import and device start-up ("oneDNN custom
operations are on", "Could not find cuda drivers", XLA service lines) even with
TF_CPP_MIN_LOG_LEVEL=3, because they are emitted before absl logging is initialised. We
capture C-level stderr during those two moments into a temp file: if anything fails, the
captured text is printed in full (nothing is hidden on error). CXRAUG_TF_VERBOSE=1 shows it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    if os.environ.get("CXRAUG_TF_VERBOSE") == "1":
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # e.g. pytest capture without a real fd
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved, fd)
            tmp.seek(0)
            sys.stderr.write(tmp.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)


with _quiet_native_stderr():
    import keras  # noqa: E402
    import tensorflow as tf  # noqa: E402

    tf.config.list_physical_devices()  # device discovery logs its lines here, once

#: For the first call of a compiled function: grappler's remapper logs a harmless "remapper
#: failed: ... fanout ... LeakyReluGrad" line (E level, before absl init) when it declines to
#: fuse a conv + bias + LeakyReLU gradient; captured the same way, shown in full on error.
quiet_native_stderr = _quiet_native_stderr

__all__ = ["keras", "quiet_native_stderr", "tf"]
