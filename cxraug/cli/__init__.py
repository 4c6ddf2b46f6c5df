"""The `cxraug` command line: a thin typer package. `app.py` holds the app, its error handling
and the shared options; each command lives in its own short module and only parses, resolves
paths, calls one library function of its stage and prints. No logic lives here, and nothing in
cxraug imports this package.
"""

# pipeline order: typer lists the commands in the order they register
from cxraug.cli import collect, preprocess, train, generate, filter, fid, evaluate, export  # noqa: F401, I001
from cxraug.cli.app import app, handle_errors

__all__ = ["app", "handle_errors", "main"]


def main() -> None:
    app()
