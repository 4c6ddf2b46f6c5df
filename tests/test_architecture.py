"""The dependency rules of the package layout (docs/architecture.md), checked on its imports.

    stage module (cxraug/collect.py ... fid.py)   may import: core/, its own machinery folder
    machinery folder (prep/ gan/ quality/ metrics/) may import: core/ (another machinery
                                                   folder only where ALLOWED says so), never a stage
    core/                                          imports nothing else of cxraug
    cli/                                           imported by nothing (but itself, __main__);
                                                   imports only cli/, core/ and the stages
    no module imports itself through others        (no import cycles)

The import graph is read with `ast` (every import statement, function-level ones included), and
the checker is also run on synthetic graphs with planted violations, so it is known to bite.
Importing the CLI or a stage module does not import TensorFlow (`cxraug --help` stays fast).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cxraug"
STAGES = {"collect": "prep", "preprocess": "prep", "train": "gan", "generate": "gan",
          "filter": "quality", "fid": "metrics", "evaluate": "classify",
          "export": "prep"}  # fmt: skip
MACHINERY = ("prep", "gan", "quality", "metrics", "classify")
#: machinery folder -> machinery folders it may import: gan's checkpoint scores judge samples
#: with the filter's decision core and KID (cxraug.gan.scoring); source-cue removal has one
#: owner, cxraug.prep.cues (it masks what the editorial-mark detector finds: prep.ink,
#: prep.marks), used on evaluate's inputs (cxraug.classify.cues) and on the GAN's training
#: images (`train --cues`: cxraug.gan.config, cxraug.gan.trainset); the C2ST's linear probe and
#: its cross-fitting have one owner each, cxraug.metrics.probe and cxraug.metrics.c2st
#: (oof_scores), which `filter --realism` uses per image (cxraug.quality.realism)
ALLOWED: dict[str, set[str]] = {"gan": {"quality", "metrics", "prep"}, "classify": {"prep"},
                                "quality": {"metrics"}}  # fmt: skip


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the cxraug modules it imports}, from every .py file under `root`."""
    files = sorted(root.rglob("*.py"))
    modules = {module_name(p, root) for p in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        name = module_name(path, root)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names
                             if f"{base}.{a.name}" in modules)  # fmt: skip
        # `from cxraug.cli import collect` in cxraug/cli/__init__.py names the package itself
        # as the base: not an edge to itself
        graph[name] = {m for m in found
                       if (m == "cxraug" or m.startswith("cxraug.")) and m != name}  # fmt: skip
    return graph


def kind(module: str) -> str:
    """"cli", "core", a machinery folder, "stage:NAME", or "root" (cxraug, cxraug.__main__)."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "root"
    if parts[1] in ("cli", "core", *MACHINERY):
        return parts[1]
    if parts[1] in STAGES:
        return f"stage:{parts[1]}"
    return f"unknown:{parts[1]}"


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks a rule, as "SRC -> DST: why"."""
    bad: list[str] = []
    for src, targets in sorted(graph.items()):
        s = kind(src)
        for dst in sorted(targets):
            d = kind(dst)
            why = ""
            if d.startswith("unknown") or s.startswith("unknown"):
                why = "module outside the layout (add it to a folder, or to STAGES)"
            elif d == "cli" and s not in ("cli", "root"):
                why = "nothing imports cli/"
            elif s == "cli" and d not in ("cli", "core", "root") and not d.startswith("stage:"):
                why = ("cli/ imports only cli/, core/ and the stage modules (the stage "
                       "re-exports what its command needs)")
            elif s == "core" and d not in ("core",):
                why = "core/ imports nothing else of cxraug"
            elif s in MACHINERY and d.startswith("stage:"):
                why = "a machinery folder never imports a stage"
            elif s in MACHINERY and d in MACHINERY and d != s and d not in ALLOWED.get(s, set()):
                why = f"{s}/ may not import {d}/ (declare it in ALLOWED if it must)"
            elif s.startswith("stage:") and d not in ("core", "root", STAGES[s[6:]]):
                why = f"a stage imports only core/ and its own folder ({STAGES[s[6:]]}/)"
            if why:
                bad.append(f"{src} -> {dst}: {why}")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, as the sorted modules of each strongly connected component of more
    than one module (or one importing itself); Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1 or node in graph.get(node, ()):
                    found.append(sorted(comp))
    return sorted(found)


def test_the_package_follows_the_rules() -> None:
    graph = import_graph()
    assert len(graph) > 30 and "cxraug.gan.step" in graph  # the walker found the package
    assert "cxraug.core.tf_setup" in graph["cxraug.gan.mlp"]  # ...and its imports
    assert violations(graph) == []


def test_no_import_cycles() -> None:
    """Function-level imports count: a lazy import that closes a circle is still a circle."""
    assert cycles(import_graph()) == []


def test_the_cycle_finder_catches_planted_cycles() -> None:
    graph = import_graph()
    graph["cxraug.gan.layers"].add("cxraug.gan.mlp")  # mlp imports layers: a circle of two
    assert cycles(graph) == [["cxraug.gan.layers", "cxraug.gan.mlp"]]
    toy = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"a"}}
    assert cycles(toy) == [["a", "b", "c"], ["e"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_importing_the_cli_and_the_stages_does_not_import_tensorflow() -> None:
    """TensorFlow loads only where a network runs (through cxraug.core.tf_setup): the CLI's
    --help and the numpy-only stages start fast."""
    mods = ["cxraug.cli", *(f"cxraug.{s}" for s in STAGES)]
    code = (f"import importlib, sys\nfor m in {mods!r}:\n    importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', "
            "'keras')))")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd=PACKAGE.parent)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_every_stage_and_folder_exists() -> None:
    for stage in STAGES:
        assert (PACKAGE / f"{stage}.py").is_file()
    for folder in ("cli", "core", *MACHINERY):
        assert (PACKAGE / folder / "__init__.py").is_file()


@pytest.mark.parametrize(
    ("src", "dst", "why"),
    [("cxraug.gan.mlp", "cxraug.train", "never imports a stage"),
     ("cxraug.quality.scores", "cxraug.filter", "never imports a stage"),
     ("cxraug.train", "cxraug.cli.app", "nothing imports cli/"),
     ("cxraug.core.ui", "cxraug.cli", "nothing imports cli/"),
     ("cxraug.core.workspace", "cxraug.gan.checkpoint", "core/ imports nothing else"),
     ("cxraug.metrics.inputs", "cxraug.prep.loading", "may not import prep/"),
     ("cxraug.classify.cues", "cxraug.quality.decide", "may not import quality/"),
     ("cxraug.generate", "cxraug.train", "a stage imports only"),
     ("cxraug.fid", "cxraug.quality.vectors", "a stage imports only"),
     ("cxraug.evaluate", "cxraug.gan.step", "a stage imports only"),
     ("cxraug.classify.net", "cxraug.evaluate", "never imports a stage"),
     ("cxraug.report", "cxraug.core.manifest", "outside the layout"),
     ("cxraug.cli.filter", "cxraug.quality.decide", "cli/ imports only"),
     ("cxraug.cli.train", "cxraug.gan.config", "cli/ imports only"),
     ("cxraug.cli.fid", "cxraug.metrics.realism", "cli/ imports only")],
)  # fmt: skip
def test_the_checker_catches_a_planted_violation(src: str, dst: str, why: str) -> None:
    graph = import_graph()
    assert violations(graph) == []
    graph.setdefault(src, set()).add(dst)
    found = violations(graph)
    assert len(found) == 1 and found[0].startswith(f"{src} -> {dst}") and why in found[0]


def test_the_walker_reads_function_level_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "cxraug"
    (pkg / "gan").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "gan" / "__init__.py").write_text("")
    (pkg / "train.py").write_text("")
    (pkg / "gan" / "step.py").write_text("def f():\n    from cxraug import train\n")
    (pkg / "gan" / "models.py").write_text("from . import step\nfrom ..train import x\n")
    graph = import_graph(pkg)
    assert graph["cxraug.gan.step"] == {"cxraug", "cxraug.train"}
    assert graph["cxraug.gan.models"] == {"cxraug.gan", "cxraug.gan.step", "cxraug.train"}
    assert any("never imports a stage" in v for v in violations(graph))
