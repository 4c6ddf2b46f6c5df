"""The one rule for names that become path components: run names, classes, synthetic file
stems, evaluation names (`check_name`), and the shorter run names (`check_run_name`), so that no
name can climb out of its folder (`..`, `/`, an absolute path). cxraug.core.workspace applies
it to every path it builds from a name.
"""

from __future__ import annotations

import re

from cxraug.core.errors import InputError

#: The one rule for names that become path components: a letter or digit first, then letters,
#: digits, '.', '_' or '-'; at most NAME_MAX characters. "." and ".." cannot match (they start
#: with a dot), nor can "/" or an absolute path.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_MAX = 100
#: A run name is shorter: `generate` names its images RUN-sSEED-INDEX, and with the largest
#: seed (10 digits) and a 9-digit index that must still be a name (64 + 22 <= NAME_MAX).
RUN_NAME_MAX = 64


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a path component (see NAME_PATTERN), or None if it can."""
    if not name:
        return "is empty"
    if len(name) > NAME_MAX:
        return f"is {len(name)} characters long (at most {NAME_MAX})"
    if "/" in name or "\\" in name or name.startswith(("~", ".")):
        return "is a path, not a name (no '/', '..', '~' or leading '.')"
    if not NAME_PATTERN.fullmatch(name):
        return "may hold only letters, digits, '.', '_' and '-', starting with a letter or digit"
    return None


def check_name(name: str, what: str = "name") -> str:
    """`name` if it is a safe path component, else InputError (exit 3) saying what to change."""
    problem = name_problem(name)
    if problem:
        raise InputError(f"{what} {name!r} {problem}; choose a plain name such as run-1 "
                         "(letters, digits, '.', '_', '-')")  # fmt: skip
    return name


def check_run_name(name: str) -> str:
    """`name` if it can name a run (check_name, and at most RUN_NAME_MAX characters so that
    the images `generate` names after it are names too), else InputError (exit 3)."""
    check_name(name, "run name")
    if len(name) > RUN_NAME_MAX:
        raise InputError(f"run name {name!r} is {len(name)} characters long; a run name has at "
                         f"most {RUN_NAME_MAX} (generate names its images RUN-sSEED-INDEX, "
                         f"at most {NAME_MAX} characters): choose a shorter --name, or rename "
                         "the run folder")  # fmt: skip
    return name
