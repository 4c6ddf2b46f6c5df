"""Config fields that carry their own help text and their own valid range: the one place an
option of a stage is described and checked.

Each stage's frozen config dataclass derives from `Settings` and declares its command-line
options with `setting(default, help, *flags, bounds=...)`; `cxraug.cli` turns every field that
has help into an option with that default, that help and those flags (default flags:
`--field-name`). Fields without help are library-only.

Building a config checks it (the CLI builds it from the options before the command runs, so
before anything is read or written): every number field (tuples of numbers element by element)
must be finite (no nan, no inf) and within its declared `bounds`; a failure is a UsageError
(exit 2) naming the option. Rules that tie fields together live in the config's `check()`,
which runs next.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from cxraug.core.errors import UsageError

#: Seeds are whole numbers in [0, SEED_MAX]: numpy's SeedSequence refuses negative seeds and
#: TensorFlow's generators take 64-bit ones; 32 bits is what every consumer accepts.
SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class Bounds:
    """The valid range of a number option; `lo_open`/`hi_open` exclude that end."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, v: float) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    def __str__(self) -> str:
        def num(x: float) -> str:
            return f"{x:g}" if isinstance(x, float) else str(x)

        if self.lo is not None and self.hi is not None:
            return (f"in {'(' if self.lo_open else '['}{num(self.lo)}, {num(self.hi)}"
                    f"{')' if self.hi_open else ']'}")  # fmt: skip
        if self.lo is not None:
            return f"{'above' if self.lo_open else 'at least'} {num(self.lo)}"
        if self.hi is not None:
            return f"{'below' if self.hi_open else 'at most'} {num(self.hi)}"
        return "finite"


def at_least(lo: float) -> Bounds:
    return Bounds(lo=lo)


def above(lo: float) -> Bounds:
    return Bounds(lo=lo, lo_open=True)


def between(lo: float, hi: float, *, hi_open: bool = False, lo_open: bool = False) -> Bounds:
    return Bounds(lo, hi, lo_open, hi_open)


SEED = between(0, SEED_MAX)
FRACTION = between(0.0, 1.0)  # a share of pixels or images
WORKERS = between(1, 256)  # processes; a typo such as 2000 would fork the machine to death


def setting(default: Any, help: str, *flags: str, bounds: Bounds | None = None) -> Any:
    """A dataclass field with a default, the `--help` text of its option, optional flags
    (e.g. "--class", or "--keep-aspect/--stretch" for a boolean) and, for a number, the range
    it must lie in (it must be finite in any case)."""
    return dataclasses.field(default=default,
                             metadata={"help": help, "flags": flags, "bounds": bounds})  # fmt: skip


def help_of(cls: type, name: str) -> str:
    """The help text declared next to field `name` of config class `cls` ("" if none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def option_name(f: dataclasses.Field[Any]) -> str:
    """How the user names field `f`: its first long flag ("--class"), else its flag ("-n"),
    else --field-name."""
    flags = [x.split("/")[0] for x in f.metadata.get("flags") or ()]
    longs = [x for x in flags if x.startswith("--")]
    return (longs or flags or ["--" + f.name.replace("_", "-")])[0]


def _problem(v: object, bounds: Bounds | None) -> str | None:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    if math.isnan(v):
        return "is not a number"
    if math.isinf(v):
        return "is not a finite number"
    if bounds is not None and not bounds.holds(float(v)):
        return f"must be {bounds}"
    return None


def _shown(v: object) -> str:
    return ",".join(map(str, v)) if isinstance(v, tuple) else str(v)


def check_fields(cfg: object) -> None:
    """UsageError (exit 2) for the first number field of `cfg` that is not finite or lies
    outside its bounds, naming the option, its range and its default."""
    for f in dataclasses.fields(cfg):  # type: ignore[arg-type]
        value = getattr(cfg, f.name)
        bounds = f.metadata.get("bounds")
        for v in value if isinstance(value, tuple) else (value,):
            problem = _problem(v, bounds)
            if problem is None:
                continue
            if problem.startswith("is"):  # nan, inf
                problem += "; give a number" + (f" {bounds}" if bounds is not None else "")
            default = f.default if f.default is not dataclasses.MISSING else None
            hint = " (or leave the option out)" if default is None else \
                f" (default {_shown(default)})"
            raise UsageError(f"{option_name(f)} {_shown(value)} {problem}{hint}")


class Settings:
    """Base of every stage's config dataclass: building one checks every number field
    (`check_fields`), then the rules between fields (`check`)."""

    def __post_init__(self) -> None:
        check_fields(self)
        self.check()

    def check(self) -> None:
        """Rules that tie fields together (a config overrides it); runs after the fields'."""
