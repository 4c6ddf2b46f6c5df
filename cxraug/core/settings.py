"""Config fields that carry their own help text: the one place an option of a stage is described.

Each stage's frozen config dataclass declares its command-line options with `setting(default,
help, *flags)`; `cxraug.cli` turns every field that has help into an option with that default,
that help and those flags (default flags: `--field-name`). Fields without help are library-only.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def setting(default: Any, help: str, *flags: str) -> Any:
    """A dataclass field with a default, the `--help` text of its option and optional flags
    (e.g. "--class", or "--keep-aspect/--stretch" for a boolean)."""
    return dataclasses.field(default=default, metadata={"help": help, "flags": flags})


def help_of(cls: type, name: str) -> str:
    """The help text declared next to field `name` of config class `cls` ("" if none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise KeyError(f"{cls.__name__} has no field {name!r}")
