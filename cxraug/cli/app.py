"""The typer app, its error handling and the options every command shares.

`command(name, Config)` registers a command whose options are generated from the fields of its
config dataclass that declare help (`cxraug.core.settings.setting`): each option's default,
help text and flags are written once, next to the field, and the command function receives
the built config as `cfg`. Library errors become a one-paragraph message and the documented
exit code (`cxraug.core.errors`, README.md); no traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from cxraug import __version__
from cxraug.core.errors import (
    EXIT_INTERRUPTED,
    EXIT_SYSTEM,
    EXIT_WORDS,
    CxrError,
    UsageError,
    describe_os_error,
)
from cxraug.core.ui import err, printable, tagged

F = TypeVar("F", bound=Callable[..., Any])


class _NoBoolMetavar:
    """Flags take no value: show no `<bool>` type next to them in --help."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for p in params:
            if getattr(p, "is_flag", False) and p.metavar is None:
                p.metavar = ""
        return params  # type: ignore[no-any-return]


class Command(_NoBoolMetavar, TyperCommand):
    pass


class Group(_NoBoolMetavar, TyperGroup):
    pass


app = typer.Typer(
    name="cxraug",
    cls=Group,
    help="Grow the scarce class of a chest X-ray dataset with a conditional GAN "
    "(Mohammed & Ali 2022): collect -> preprocess -> train -> generate -> filter; then score "
    "the kept images (fid: how real they look; evaluate: whether they help a classifier) "
    "and export a training set (export).",
    epilog="Exit codes: " + ", ".join(f"{c} {w}" for c, w in EXIT_WORDS.items()) + ".",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _existing_workspace(path: Path) -> Path:
    """A mistyped -w must not create a folder tree: only `collect` creates a workspace."""
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        # typer prints this itself, not through cxraug's consoles: escape the path here
        raise typer.BadParameter(f"workspace {printable(str(path))} {what}; check the path "
                                 "(only `cxraug collect` creates a workspace)")  # fmt: skip
    return path


def workspace_option(create: bool = False) -> Any:
    """--workspace/-w; `create`: the command may create it (collect), else it must exist."""
    return typer.Option(Path("."), "--workspace", "-w", show_default=True,
                        callback=None if create else _existing_workspace,
                        help="Workspace folder holding manifest.csv, processed/, runs/ and "
                        "synthetic/" + (" (created if missing)." if create else "."))  # fmt: skip


def json_option(what: str = "result") -> Any:
    return typer.Option(False, "--json", help=f"Print the {what} as JSON on stdout.")


def handle_errors(fn: F) -> F:
    """Turn library errors into a one-paragraph message and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CxrError as e:
            # an interruption (exit 130, checkpoint saved) is not an error of the user's input
            prefix = "interrupted" if e.exit_code == EXIT_INTERRUPTED else "error"
            err.print(tagged(f"{prefix}:", "bold red", str(e)), highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print(tagged("interrupted", "bold red"))
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except OSError as e:
            # disk full, permission denied, read-only workspace: not "some rows failed" (1)
            err.print(tagged("error:", "bold red", describe_os_error(e)), highlight=False,
                      soft_wrap=True)  # fmt: skip
            raise typer.Exit(EXIT_SYSTEM) from None

    return wrapper  # type: ignore[return-value]


# ---- options generated from a config dataclass ---------------------------------------------


def _is_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple


def _numbers(text: str, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError:
        raise typer.BadParameter("give comma-separated integers, e.g. 512,512",
                                 param_hint=f"--{name.replace('_', '-')}") from None  # fmt: skip


def config_fields(config: type) -> list[dataclasses.Field[Any]]:
    """The fields of `config` that are command-line options (those that declare help)."""
    return [f for f in dataclasses.fields(config) if f.metadata.get("help")]


def _option(f: dataclasses.Field[Any], hint: Any, default: Any) -> inspect.Parameter:
    flags = tuple(f.metadata.get("flags") or ())
    dash = f.name.replace("_", "-")
    if hint is bool and not flags:
        flags = (f"--{dash}",) if default is False else (f"--{dash}/--no-{dash}",)
    if _is_tuple(hint):  # e.g. widths: typed as "512,512" and parsed after the fact
        hint, default = str, ",".join(map(str, default))
    bounds = f.metadata.get("bounds")  # the range the config checks (core/settings.py)
    help_text = f.metadata["help"] + (f" Must be {bounds}." if bounds is not None else "")
    help_text = help_text.replace("[", "\\[")  # rich markup would eat "[...]"
    opt = typer.Option(default, *flags, help=help_text, show_default=True)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=hint)


def _is_given(ctx: typer.Context, name: str) -> bool:
    """Whether option NAME came from the command line or the environment (not its default)."""
    src = ctx.get_parameter_source(name)
    return src is not None and src.name != "DEFAULT"


def given(ctx: typer.Context, config: type) -> dict[str, Any]:
    """The config fields whose option was given (command line or environment), with values."""
    hints = typing.get_type_hints(config)
    out = {}
    for f in config_fields(config):
        if _is_given(ctx, f.name):
            v = ctx.params[f.name]
            out[f.name] = _numbers(v, f.name) if _is_tuple(hints[f.name]) else v
    return out


def _summary(doc: str) -> tuple[str, str]:
    """(help, short help): the docstring reflowed into one paragraph, and its first sentence."""
    text = " ".join(doc.split())
    first = text.split(". ", 1)[0].rstrip(".") + "."
    return text, first


def _refuse_flag_paths(kwargs: dict[str, Any]) -> None:
    """A path option followed by a flag takes the flag as its value (`fid --sheet --json`
    wrote a PNG named `--json` and printed no JSON): refuse path values that start with '-'
    before anything is written. (`./-name` reads as `-name` once it is a Path: a file whose
    name starts with '-' is given with a folder, e.g. its absolute path.)"""
    for key, value in kwargs.items():
        if isinstance(value, Path) and str(value).startswith("-"):
            raise UsageError(f"--{key.replace('_', '-')} {value}: looks like an option, not a "
                             "path (did an option that takes a path swallow it?); give the "
                             "path, or, for a file whose name starts with '-', its absolute path")


def command(
    name: str,
    config: type | None = None,
    base: Callable[[], Any] | None = None,
    epilog: str | None = None,
    build: Callable[[dict[str, Any], dict[str, Any]], Any] | None = None,
) -> Callable[[Callable[..., None]], None]:
    """Register `fn` as command NAME. With `config`, its option fields become options and `fn`
    is called with `cfg=config(**their values)` (tuple fields parsed from "a,b,..."). `base`
    makes the defaults shown (and used) those of base() instead of config()'s. `epilog` is
    printed after the options in --help (paragraphs separated by blank lines). `build`, when
    given, makes `cfg` instead: `build(given, kwargs)` from the config options given on the
    command line alone and the command's own arguments (`fn` must take `ctx`; `train`: the
    --recipe's values, then the options given), so the rules between fields judge the config
    the command will run, not the defaults the options were shown with."""

    def register(fn: Callable[..., None]) -> None:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values()
               if p.name != "cfg"]  # fmt: skip
        generated: list[inspect.Parameter] = []
        hints: dict[str, Any] = {}
        if config is not None:
            hints = typing.get_type_hints(config)
            shown = base() if base is not None else config()
            generated = [_option(f, hints[f.name], getattr(shown, f.name))
                         for f in config_fields(config)]  # fmt: skip
        names = {p.name for p in generated}

        def run(**kwargs: Any) -> None:
            _refuse_flag_paths(kwargs)
            if config is None:
                return fn(**kwargs)
            values = {k: kwargs.pop(k) for k in names}
            for k, v in values.items():
                if _is_tuple(hints[k]) and isinstance(v, str):
                    values[k] = _numbers(v, k)
            # building the config checks it before the command runs: a number out of its range
            # is a UsageError (exit 2), a bad choice an InputError (exit 3)
            if build is None:
                return fn(cfg=config(**values), **kwargs)
            ctx = kwargs["ctx"]  # a command with `build` takes the typer.Context
            return fn(cfg=build({k: v for k, v in values.items() if _is_given(ctx, k)}, kwargs),
                      **kwargs)  # fmt: skip

        # --help order: arguments and --workspace, the config's options, then the command's own
        front = [p for p in own if p.name in ("ctx", "workspace")
                 or isinstance(p.default, typer.models.ArgumentInfo)]  # fmt: skip
        params = [*front, *generated, *(p for p in own if p not in front)]
        run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params])
        run.__annotations__ = {p.name: p.annotation for p in params}
        run.__doc__ = fn.__doc__
        run.__name__ = fn.__name__
        help_text, short = _summary(fn.__doc__ or "")
        app.command(name, cls=Command, help=help_text, short_help=short, epilog=epilog)(
            handle_errors(run)
        )

    return register


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cxraug {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """The app's own options; its help and exit codes are the Typer(...) text above."""


__all__ = ["app", "command", "given", "handle_errors", "json_option", "workspace_option"]
