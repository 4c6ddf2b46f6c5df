"""The terminal report of `evaluate`, from its results document (results.json's contents): one
table per test set (arms x metrics, images, paired differences), the shortcut check (with and
without source-cue removal), training speed, and where the figures are."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from cxraug.classify import stats


def _ci(d: dict[str, Any] | None, signed: bool = False) -> str:
    if d is None or d.get("value") is None:
        return "n/a"
    f = "+.3f" if signed else ".3f"
    ci = ("" if d.get("lo") is None else f" [{format(d['lo'], f)}, {format(d['hi'], f)}]")
    sd = d.get("seed_std")
    return format(d["value"], f) + ci + ("" if sd is None else f" ±{sd:.3f}")


def _images(info: dict[str, Any]) -> str:
    """"1,137 (+533)": training images, and those the arm added to the real ones (means)."""
    n, added = info.get("train_images"), info.get("added_images", 0)
    if n is None:
        return "—"
    return f"{n:,}" + (f" (+{added:,})" if added else "")


def test_set_tables(doc: dict[str, Any]) -> list[Any]:
    from rich.table import Table
    from rich.text import Text  # styled, never parsed as markup: reasons carry user text

    out: list[Any] = []
    for name, d in doc["test_sets"].items():
        c = d["counts"]
        title = (f"{name}: {d['n_images']} images ({', '.join(f'{v} {k}' for k, v in c.items())}"
                 f"), {d['n_patients']} patients")  # fmt: skip
        if d["status"] != "ok":
            out.append(Text(f"{title}: skipped: {d['reason']}", style="yellow"))
            continue
        t = Table(title=title + " — mean over seeds [95% CI over patients] ±seed std",
                  title_justify="left")  # fmt: skip
        for col in ("arm", "train images (+added)", "AUC", "balanced acc.", "sensitivity",
                    "specificity", "ΔAUC vs real", "Δbal. acc. vs real"):  # fmt: skip
            t.add_column(col, overflow="fold")
        for a, info in doc["arms"].items():
            if info["status"] != "ok":
                t.add_row(a, "", Text(f"skipped: {info['reason']}", style="yellow"), *[""] * 5)
                continue
            m, df = d["metrics"][a], d["differences"].get(a)
            t.add_row(a, _images(info), *(_ci(m[k]) for k in stats.METRICS),
                      "—" if df is None else _ci(df["auc"], True),
                      "—" if df is None else _ci(df["balanced_accuracy"], True))  # fmt: skip
        out.append(t)
    return out


def _within(c: str, d: dict[str, Any]) -> Any:
    return d.get("within_class_balanced_accuracy", {}).get(c)


def shortcut_tables(s: dict[str, Any]) -> list[Any]:
    from rich.table import Table
    from rich.text import Text

    if s.get("status") != "ok":
        return [f"shortcut check: {s.get('status')}: {s.get('verdict', '')}"]
    raw = s.get("without_cues") or {}
    t = Table(title="shortcut check: the same classifier trained to predict the SOURCE",
              title_justify="left")  # fmt: skip
    t.add_column("measure")
    t.add_column(f"with --cues {s['cues']}" if raw else "value", justify="right")
    if raw:
        t.add_column("images as saved", justify="right")

    def row(label: str, get: Callable[[dict[str, Any]], Any]) -> None:
        vals = [get(s)] + ([get(raw)] if raw else [])
        if vals[0] is not None:
            t.add_row(label, *("n/a" if v is None else f"{v:.3f}" for v in vals))

    row("source balanced accuracy (test)", lambda d: d.get("balanced_accuracy"))
    row("chance", lambda d: d.get("chance"))
    row("label balanced accuracy (real only)", lambda d: d.get("label_balanced_accuracy"))
    for c in s["within_class_balanced_accuracy"]:
        row(f"sources told apart within {c}", partial(_within, c))
    for src, cnt in s["sources"].items():
        t.add_row(f"source {src}", ", ".join(f"{v} {k}" for k, v in cnt.items()))
    style = "bold red" if s["flag"] else "green"
    return [t, Text(s["verdict"], style=style), *probe_table(s.get("arm_probe") or {})]


def probe_table(probes: dict[str, dict[str, Any]]) -> list[Any]:
    """Per arm: the source in its own classifier's features (classify.shortcut.source_probe)."""
    from rich.table import Table

    if not probes:
        return []
    first = next(iter(probes.values()))
    classes = sorted({c for p in probes.values() for c in p["within_class"]})
    t = Table(title="source in each arm's classifier: a linear probe on its features, real "
              f"test images (chance {first['chance']:.3f}; the class alone gives "
              f"{first['label_only']:.3f})", title_justify="left")  # fmt: skip
    for col in ("arm", "source balanced acc. ±seed std",
                *(f"sources told apart within {c}" for c in classes)):  # fmt: skip
        t.add_column(col, justify="right" if col != "arm" else "left")
    for a, p in probes.items():
        sd = p.get("seed_std")
        t.add_row(a, f"{p['balanced_accuracy']:.3f}" + ("" if sd is None else f" ±{sd:.3f}"),
                  *(f"{p['within_class'][c]:.3f}" if c in p["within_class"] else "n/a"
                    for c in classes))  # fmt: skip
    return [t]


def cells_lines(arms: dict[str, dict[str, Any]]) -> list[str]:
    """What the cells arm added: per class, the images in each source's look, and how many
    real training images that class x source cell has (0: a cell the data lacks)."""
    out = []
    for a, info in arms.items():
        if "cells" in info:
            parts = [f"{d['synthetic']} {c} in the look of {src} ({d['real_train']} real)"
                     for c, by in info["cells"].items() for src, d in by.items()]  # fmt: skip
            out.append(f"{a}: added {', '.join(parts) or 'nothing'}")
    return out


def tables(doc: dict[str, Any]) -> list[Any]:
    """Everything the terminal shows, in order (rich tables, styled text, plain lines)."""
    out = test_set_tables(doc) + cells_lines(doc["arms"]) + shortcut_tables(doc["shortcut"])
    cues = doc.get("cues") or {}
    if cues.get("steps"):
        r = cues["real"]
        out.append(f"source cues removed ({'+'.join(cues['steps'])}) from every image: marks "
                   f"masked on {r['marked_images']} of {r['images']} real images, lung fields "
                   f"not found (central crop) on {r['lung_crop_fallbacks']}")  # fmt: skip
    sp = doc["speed"]
    out.append(f"classifier training: {sp['images_per_s']} images/s at "
               f"{sp['forward_mflop_per_image']} MFLOP forward per image "
               f"(~{sp['train_gflop_per_s']} GFLOP/s counting backward as 2x forward); "
               f"wall {sp['wall_seconds']} s")  # fmt: skip
    figs = doc.get("figures", {})
    if figs:
        out.append(f"ROC panels in roc.png: {', '.join(figs['roc'])}; paired differences in "
                   f"differences.png: {', '.join(figs['differences'])}")  # fmt: skip
    out.append(f"saved: {doc['folder']}")
    return out
