"""The `cxraug` command line: typer app only. Each command parses options, resolves paths,
calls one library function and prints its result. No logic lives here.

Exit codes are defined and documented in `cxraug.errors` (and README.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from cxraug import __version__
from cxraug.errors import EXIT_INTERRUPTED, CxrError
from cxraug.ui import err

app = typer.Typer(
    name="cxraug",
    help="Grow the scarce class of a chest X-ray dataset with a conditional GAN "
    "(Mohammed & Ali 2022): collect -> preprocess -> train -> generate -> filter -> fid.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)

F = TypeVar("F", bound=Callable[..., Any])

WORKSPACE_HELP = "Workspace folder holding manifest.csv, processed/, runs/ and synthetic/."


def workspace_option() -> Any:
    return typer.Option(Path("."), "--workspace", "-w", help=WORKSPACE_HELP, show_default=True)


def handle_errors(fn: F) -> F:
    """Turn library errors into a one-paragraph message and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CxrError as e:
            # an interruption (exit 130, checkpoint saved) is not an error of the user's input
            prefix = "interrupted" if e.exit_code == EXIT_INTERRUPTED else "error"
            err.print(f"[bold red]{prefix}:[/bold red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("[bold red]interrupted[/bold red]")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


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
    """cxraug: CGAN augmentation for chest X-rays. Exit codes: 0 ok, 1 some rows failed,
    2 usage, 3 bad input, 4 missing resource, 5 numeric failure, 130 interrupted."""


# ---- collect ------------------------------------------------------------------------------

from cxraug.collect import CollectConfig as _CollectConfig  # noqa: E402

_COLLECT = _CollectConfig()


@app.command("collect")
@handle_errors
def collect_command(
    sources: list[str] = typer.Argument(
        ..., metavar="SOURCE...", show_default=False,
        help="[NAME=]cohen:PATH (ieee8023/covid-chestxray-dataset checkout), "
        "[NAME=]kermany:PATH (Kaggle chest_xray: .../NORMAL, .../PNEUMONIA) or "
        "[NAME=]folder:PATH (sub-folders covid/ and normal/). See docs/datasets.md.",
    ),
    workspace: Path = workspace_option(),
    test_fraction: float = typer.Option(
        _COLLECT.test_fraction, help="Share of each class put in the test split, by patient."
    ),
    seed: int = typer.Option(_COLLECT.seed, help="Seed of the patient-level train/test split."),
    workers: int = typer.Option(_COLLECT.workers, help="Processes that hash and decode files."),
    near_dup_bits: int = typer.Option(
        _COLLECT.near_dup_bits, help="Report image pairs whose 256-bit dHash differ in at most "
        "this many bits as near-duplicates (kept, noted; kept in one split)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Rebuild an existing manifest.csv (keeps crop boxes, extra "
        "columns and synthetic rows of ids that still exist; old file saved as .bak)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Record the images of local dataset copies in WORKSPACE/manifest.csv (nothing is copied):
    check every file, mark exclusions, duplicates and unreadable files, and split train/test
    by patient. Exit 0 when every file is usable, 1 when some are unusable, 3 on bad input."""
    import json

    from cxraug.collect import collect, summary_lines, summary_tables
    from cxraug.errors import EXIT_PARTIAL
    from cxraug.ui import out as console
    from cxraug.workspace import Workspace

    config = _CollectConfig(test_fraction=test_fraction, seed=seed, workers=workers,
                            near_dup_bits=near_dup_bits, force=force)  # fmt: skip
    result = collect(Workspace.at(workspace), sources, config)
    show = err if json_out else console  # --json keeps stdout machine-readable
    for table in summary_tables(result):
        show.print(table)
    for line in summary_lines(result):
        show.print(line, highlight=False, markup=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps(result.to_json(), indent=2))
    if result.n_errors:
        raise typer.Exit(EXIT_PARTIAL)

# ---- preprocess ---------------------------------------------------------------------------

from cxraug.preprocess import PreprocessConfig as _PreprocessConfig  # noqa: E402

_PRE = _PreprocessConfig()


@app.command("preprocess")
@handle_errors
def preprocess_command(
    workspace: Path = workspace_option(),
    crop_boxes: Path | None = typer.Option(
        None, "--crop-boxes", show_default=False,
        help="CSV with id (or path),x0,y0,x1,y1 in original pixels (x1/y1 exclusive); valid "
        "boxes are saved into the manifest first. See docs/preprocess.md.",
    ),
    size: int = typer.Option(_PRE.size, help="Output side in pixels (the paper: 224)."),
    keep_aspect: bool = typer.Option(
        _PRE.keep_aspect, "--keep-aspect/--stretch",
        help="Pad the crop to a square (black) instead of stretching it as the paper does.",
    ),
    jpeg_reduce: bool = typer.Option(
        _PRE.jpeg_reduce, "--jpeg-reduce/--no-jpeg-reduce",
        help="Decode big JPEGs at 1/2-1/8 scale when the crop keeps >= 2x --size per side.",
    ),
    workers: int = typer.Option(_PRE.workers, help="Processes that decode and resize images."),
    suggest: Path | None = typer.Option(
        None, "--suggest-crops", show_default=False,
        help="Do not build the dataset: write an automatic chest box per image to this CSV "
        "for review (then pass it back with --crop-boxes).",
    ),
    contact_sheet: Path | None = typer.Option(
        None, "--contact-sheet", show_default=False,
        help="Also write a PNG grid of thumbnails with each crop box drawn and the id printed "
        "(NAME-001.png, ... beyond 200 images).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Overwrite a dataset built with other settings, or an existing "
        "--suggest-crops file.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Turn the manifest's usable real images into WORKSPACE/processed/dataset.npz: decode,
    crop, resize to SIZE x SIZE (INTER_AREA), scale to [-1, 1]. Unreadable images become error
    rows. Exit 0 ok, 1 some images failed, 3 bad input (e.g. crop-boxes rows)."""
    import json

    from cxraug.crops import suggest_crops
    from cxraug.errors import EXIT_PARTIAL
    from cxraug.preprocess import preprocess, summary_table
    from cxraug.ui import out as console
    from cxraug.workspace import Workspace

    if suggest is not None and crop_boxes is not None:
        raise typer.BadParameter("use either --suggest-crops or --crop-boxes, not both")
    config = _PreprocessConfig(size=size, keep_aspect=keep_aspect, jpeg_reduce=jpeg_reduce,
                               workers=workers)  # fmt: skip
    ws = Workspace.at(workspace)
    show = err if json_out else console  # --json keeps stdout machine-readable
    if suggest is not None:
        sres = suggest_crops(ws, suggest, opts=config.load_options(), workers=workers,
                             contact_sheet=contact_sheet, force=force)  # fmt: skip
        show.print(f"wrote {sres.n_boxes} suggested boxes to {sres.boxes_path} "
                   f"({sres.n_fallback} fall back to the full image); review them, then run "
                   f"`cxraug preprocess --crop-boxes {sres.boxes_path}`",
                   highlight=False)  # fmt: skip
        errors, sheets, payload = sres.errors, sres.contact_sheets, sres.to_json()
    else:
        res = preprocess(ws, config, crop_boxes, force=force, contact_sheet=contact_sheet)
        if res.crop_boxes_applied:
            show.print(f"saved {res.crop_boxes_applied} crop box(es) into {ws.manifest_path}")
        if res.up_to_date:
            show.print(f"{res.dataset_path} is up to date ({res.n_images} images, same "
                       "settings and manifest); nothing to do", highlight=False)  # fmt: skip
        else:
            show.print(summary_table(res))
            show.print(f"{res.n_images} images in {res.seconds:.1f} s ({res.images_per_s:.1f} "
                       f"images/s, {res.reduced} JPEGs DCT-reduced) -> {res.dataset_path} "
                       f"(settings: {res.config_path.name})", highlight=False)  # fmt: skip
        errors, sheets, payload = res.errors, res.contact_sheets, res.to_json()
    for sheet in sheets:
        show.print(f"contact sheet: {sheet}", highlight=False)
    for rid, reason in errors[:20]:
        err.print(f"[yellow]failed:[/yellow] {rid}: {reason}", highlight=False, soft_wrap=True)
    if len(errors) > 20:
        err.print(f"... and {len(errors) - 20} more (see the manifest's reason column)")
    if json_out:
        typer.echo(json.dumps(payload, indent=2))
    if errors:
        raise typer.Exit(EXIT_PARTIAL)


# ---- train --------------------------------------------------------------------------------

from cxraug.train_config import DEFAULTS as _TD  # noqa: E402
from cxraug.train_config import GenerateConfig as _GenerateConfig  # noqa: E402

_GD = _GenerateConfig()


def _widths(text: str | None, what: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{what}: give comma-separated integers, e.g. 512,512") from None


def _d(value: object) -> str:
    shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
    return f"\\[default: {shown}]"  # escaped: rich markup would eat "[...]"


@app.command("train")
@handle_errors
def train_command(
    workspace: Path = workspace_option(),
    name: str | None = typer.Option(None, help="Run name: WORKSPACE/runs/NAME "
                                    "\\[default: a timestamp]."),
    resume: str | None = typer.Option(None, metavar="RUN", help="Continue RUN (a name under "
        "runs/ or a run folder) from its latest checkpoint: same iteration, optimizer and "
        "RNG state. Only --iterations and the intervals may change."),
    force: bool = typer.Option(False, "--force", help="Replace an existing run folder."),
    iterations: int | None = typer.Option(None, "--iterations", "--epochs", help="Training "
        "iterations. The paper's 'epochs' ARE iterations: each draws one random batch with "
        f"replacement (10,000 x 128 on ~2,150 images is ~600 passes). {_d(_TD.iterations)}"),
    batch_size: int | None = typer.Option(None, help=f"Batch size. {_d(_TD.batch_size)}"),
    lr: float | None = typer.Option(None, help=f"Adam learning rate. {_d(_TD.lr)}"),
    beta_1: float | None = typer.Option(None, help=f"Adam beta_1. {_d(_TD.beta_1)}"),
    beta_2: float | None = typer.Option(None, help=f"Adam beta_2. {_d(_TD.beta_2)}"),
    latent_dim: int | None = typer.Option(None, help=f"Noise size. {_d(_TD.latent_dim)}"),
    g_widths: str | None = typer.Option(None, help="Generator hidden Dense widths. "
                                        f"{_d(_TD.g_widths)}"),
    d_widths: str | None = typer.Option(None, help="Discriminator hidden Dense widths (BN "
        f"after all but the first, dropout after 2nd..n-1th). {_d(_TD.d_widths)}"),
    dropout: float | None = typer.Option(None, help=f"D dropout rate. {_d(_TD.dropout)}"),
    leaky_slope: float | None = typer.Option(None, help=f"LeakyReLU slope. "
                                             f"{_d(_TD.leaky_slope)}"),
    bn_momentum: float | None = typer.Option(None, help=f"BatchNorm momentum. "
                                             f"{_d(_TD.bn_momentum)}"),
    noise_start: float | None = typer.Option(None, help="Instance-noise sigma on D's inputs at "
        f"iteration 0, annealed linearly to 0. {_d(_TD.noise_start)}"),
    noise_iterations: int | None = typer.Option(None, help="Iterations over which the instance "
        f"noise anneals to 0 (0: none). {_d(_TD.noise_iterations)}"),
    sample_interval: int | None = typer.Option(None, help="Save a fixed-noise sample grid every "
        f"N iterations. {_d(_TD.sample_interval)}"),
    samples_per_class: int | None = typer.Option(None, help="Columns of the sample grid. "
                                                 f"{_d(_TD.samples_per_class)}"),
    checkpoint_interval: int | None = typer.Option(None, help="Checkpoint every N iterations "
        f"(and on Ctrl-C/SIGTERM). {_d(_TD.checkpoint_interval)}"),
    keep_checkpoints: int | None = typer.Option(None, help="Checkpoints kept. "
                                                f"{_d(_TD.keep_checkpoints)}"),
    seed: int | None = typer.Option(None, help=f"Seed of every random choice. {_d(_TD.seed)}"),
    mixed_precision: str | None = typer.Option(None, help="auto | none (fp32) | bf16 | fp16. "
        "auto = bf16 where matmuls run natively in bf16 (CPUs with AVX512-BF16/AMX: ~1.5x "
        "faster here; GPUs of compute capability >= 8), else fp32; weights stay fp32. "
        f"{_d(_TD.mixed_precision)}"),
    xla: bool | None = typer.Option(None, "--xla/--no-xla", help="Use XLA where it is faster "
        f"(fp32: the whole step; bf16 on a CPU: the Adam updates). {_d(_TD.xla)}"),
    strategy: str | None = typer.Option(None, help="default | mirrored (all local GPUs) | "
        f"multiworker (TF_CONFIG). {_d(_TD.strategy)}"),
    image_size: int | None = typer.Option(None, help="Must equal the dataset's size "
                                          "\\[default: the dataset's]."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Train the paper's CGAN on WORKSPACE/processed/dataset.npz (train split). 'Epochs' are
    ITERATIONS (one random batch each). Writes runs/NAME/: config.json, log.csv, tb/,
    samples/, loss.png, checkpoints/. Ctrl-C saves a checkpoint (exit 130); resume with
    --resume NAME. Exit 5 on NaN/Inf losses (last good checkpoint kept)."""
    import json

    from cxraug.train import train
    from cxraug.ui import out as console
    from cxraug.workspace import Workspace

    given = dict(iterations=iterations, batch_size=batch_size, lr=lr, beta_1=beta_1,
                 beta_2=beta_2, latent_dim=latent_dim, g_widths=_widths(g_widths, "--g-widths"),
                 d_widths=_widths(d_widths, "--d-widths"), dropout=dropout,
                 leaky_slope=leaky_slope, bn_momentum=bn_momentum, noise_start=noise_start,
                 noise_iterations=noise_iterations, sample_interval=sample_interval,
                 samples_per_class=samples_per_class, checkpoint_interval=checkpoint_interval,
                 keep_checkpoints=keep_checkpoints, seed=seed, mixed_precision=mixed_precision,
                 xla=xla, strategy=strategy, image_size=image_size)  # fmt: skip
    overrides = {k: v for k, v in given.items() if v is not None}
    result = train(Workspace.at(workspace), overrides, name=name, resume=resume, force=force,
                   quiet=quiet)  # fmt: skip
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        m = result.metrics
        losses = f" d_loss {m['d_loss']:.4f} g_loss {m['g_loss']:.4f}" if m else ""
        console.print(f"{result.run_dir}: iteration {result.iteration}{losses}; "
                      f"checkpoint {result.checkpoint}", highlight=False, soft_wrap=True)


# ---- generate -----------------------------------------------------------------------------


@app.command("generate")
@handle_errors
def generate_command(
    label: str = typer.Option(_GD.label, "--class", help="Class to generate (normal | covid)."),
    n: int | None = typer.Option(None, "-n", help="Number of images (or use --balance)."),
    balance: bool = typer.Option(False, "--balance", help="n = usable real train images of the "
        "majority class - usable train images (real + synthetic) of --class."),
    run: str | None = typer.Option(None, help="Run name or folder \\[default: newest run]."),
    checkpoint: str | None = typer.Option(None, help="Checkpoint file \\[default: the run's "
                                          "latest]."),
    seed: int = typer.Option(_GD.seed, help="Noise seed: image i uses z from (seed, i)."),
    batch_size: int = typer.Option(_GD.batch_size, help="Images per generator batch."),
    workspace: Path = workspace_option(),
    force: bool = typer.Option(False, "--force", help="Replace existing PNGs/rows of the same "
                               "run and seed."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Write synthetic PNGs of one class to WORKSPACE/synthetic/CLASS/ from a trained run and
    add one manifest row per image (source synthetic, split train)."""
    import json

    from cxraug.generate import generate
    from cxraug.ui import out as console
    from cxraug.workspace import Workspace

    if n is None and not balance:
        raise typer.BadParameter("give -n COUNT or --balance", param_hint="-n")
    cfg = _GenerateConfig(label=label, n=n, balance=balance, seed=seed, batch_size=batch_size,
                          run=run, checkpoint=checkpoint, force=force)  # fmt: skip
    result = generate(Workspace.at(workspace), cfg)
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(result.message, highlight=False, soft_wrap=True)


# ---- filter -------------------------------------------------------------------------------

from cxraug.decide import FilterConfig as _FilterConfig  # noqa: E402  (numpy only, light)

_FLT = _FilterConfig()
_CAL = "(default: calibrated on the real training images)"


@app.command("filter")
@handle_errors
def filter_command(
    workspace: Path = workspace_option(),
    label: str = typer.Option("covid", "--class", help="Class whose synthetic images are judged."),
    folder: Path | None = typer.Option(
        None, help="Judge a folder of PNGs instead of the manifest rows (report only)."
    ),
    report: Path | None = typer.Option(None, help="With --folder: write a CSV report here."),
    move_rejected: bool = typer.Option(
        False, "--move-rejected", help="Move rejected PNGs to synthetic/CLASS/rejected/ (and "
        "kept ones back) and update their manifest paths."
    ),
    sheet: Path | None = typer.Option(
        None, help="Contact sheet PNG (default synthetic/CLASS-filter-sheet.png; with --folder "
        "only when given). The resolved config is saved beside it as NAME.config.json."
    ),
    percentile_lo: float = typer.Option(_FLT.percentile_lo, help="Lower real percentile."),
    percentile_hi: float = typer.Option(_FLT.percentile_hi, help="Upper real percentile."),
    margin: float = typer.Option(
        _FLT.margin, help="Widen the calibrated range by this fraction per side."
    ),
    noise_max: float | None = typer.Option(None, help=f"Max noise ratio {_CAL}."),
    contrast_min: float | None = typer.Option(None, help=f"Min pixel std {_CAL}."),
    contrast_max: float | None = typer.Option(None, help=f"Max pixel std {_CAL}."),
    brightness_min: float | None = typer.Option(None, help=f"Min mean grey level {_CAL}."),
    brightness_max: float | None = typer.Option(None, help=f"Max mean grey level {_CAL}."),
    saturated_max: float | None = typer.Option(None, help=f"Max fraction at 0/255 {_CAL}."),
    blank_max: float | None = typer.Option(None, help=f"Max fraction at one level {_CAL}."),
    lung_min: float | None = typer.Option(None, help=f"Min correlation with mean real {_CAL}."),
    memorised_max: float | None = typer.Option(None, help=f"Min distance to real {_CAL}."),
    duplicate_max: float | None = typer.Option(None, help=f"Min synthetic distance {_CAL}."),
    memorised_percentile: float = typer.Option(
        _FLT.memorised_percentile, help="Percentile of real-vs-real NN distances."
    ),
    duplicate_percentile: float = typer.Option(
        _FLT.duplicate_percentile, help="Percentile of real-vs-real NN distances."
    ),
    grid: int = typer.Option(_FLT.grid, help="Side of the downsampled images compared."),
    shift_px: int = typer.Option(_FLT.shift_px, help="Memorisation shift search radius (px)."),
    shift_step: int = typer.Option(_FLT.shift_step, help="Shift search step (px)."),
    seed: int = typer.Option(_FLT.seed, help="Seeds the sample of kept images on the sheet."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    force: bool = typer.Option(False, help="Overwrite an existing --sheet/--report file."),
) -> None:
    """Keep or reject every synthetic image, with a reason (docs/filter.md): memorised copies
    of real images, bad quality, near-duplicates. Exit 0 even when images are rejected."""
    import json

    from cxraug.filter import filter_folder, filter_synthetic, summary_table
    from cxraug.ui import out as console
    from cxraug.workspace import Workspace

    config = _FilterConfig(
        percentile_lo=percentile_lo, percentile_hi=percentile_hi, margin=margin,
        noise_max=noise_max, contrast_min=contrast_min, contrast_max=contrast_max,
        brightness_min=brightness_min, brightness_max=brightness_max,
        saturated_max=saturated_max, blank_max=blank_max, lung_min=lung_min,
        memorised_max=memorised_max, duplicate_max=duplicate_max,
        memorised_percentile=memorised_percentile, duplicate_percentile=duplicate_percentile,
        grid=grid, shift_px=shift_px, shift_step=shift_step, seed=seed,
    )  # fmt: skip
    ws = Workspace.at(workspace)
    if folder is not None:
        if move_rejected:
            raise typer.BadParameter("--move-rejected works on manifest rows, not with --folder")
        result = filter_folder(ws, folder, config, label=label, report=report, sheet=sheet,
                               force=force)  # fmt: skip
    else:
        if report is not None:
            raise typer.BadParameter("--report goes with --folder; manifest rows get their "
                                     "reasons in manifest.csv")  # fmt: skip
        result = filter_synthetic(ws, config, label=label, move_rejected=move_rejected,
                                  sheet=sheet, force=force)  # fmt: skip
    if json_out:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        console.print(summary_table(result))


# ---- fid ----------------------------------------------------------------------------------

from cxraug.fid import FidConfig as _FidConfig  # noqa: E402  (light: TF loads only when scoring)

_FID = _FidConfig()


@app.command("fid")
@handle_errors
def fid_command(
    real: str = typer.Argument(
        ..., help="REAL set: a folder of images (recursive) or a manifest selection such as "
        "manifest:split=test,label=covid (keys: split, label|class, synthetic, run)."
    ),
    fake: str = typer.Argument(
        ..., help="FAKE set, same syntax, e.g. a synthetic/ folder or "
        "manifest:synthetic=true,label=covid."
    ),
    workspace: Path = workspace_option(),
    features: str = typer.Option(
        _FID.features, help="inception (Keras ImageNet weights, offline lookup) or random "
        "(untrained fixed-seed network: smoke tests only, NOT a standard FID)."
    ),
    weights: Path | None = typer.Option(
        None, help="Inception-v3 notop .h5 weights file (default: the Keras cache)."
    ),
    resize: str = typer.Option(_FID.resize, help="Resize filter to 299 px: bilinear-aa or cubic."),
    batch_size: int = typer.Option(_FID.batch_size, help="Images per network call."),
    seed: int = typer.Option(_FID.seed, help="Seeds KID subsets and the real-vs-real split."),
    kid_subsets: int = typer.Option(_FID.kid_subsets, help="KID: number of subsets."),
    kid_subset_size: int = typer.Option(_FID.kid_subset_size, help="KID: max subset size."),
    pr_k: int = typer.Option(_FID.pr_k, help="Precision/recall: k of the k-NN radii."),
    xla: bool = typer.Option(_FID.xla, help="Compile the extractor with XLA."),
    cache_dir: Path | None = typer.Option(
        None, help="Feature cache folder (default: WORKSPACE/.cache/fid)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the cache."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    out: Path | None = typer.Option(None, help="Also save the report (with its config) as JSON."),
    force: bool = typer.Option(False, help="Overwrite --out if it exists."),
) -> None:
    """FID, KID and precision/recall of FAKE against REAL, with a real-vs-real baseline
    (docs/fid.md). Results on stdout, progress and warnings on stderr."""
    import json

    from cxraug.fid import report_table, run_fid
    from cxraug.ui import out as console

    config = _FidConfig(features=features, resize=resize, batch_size=batch_size, seed=seed,
                        kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, pr_k=pr_k,
                        xla=xla)  # fmt: skip
    report = run_fid(real, fake, config, workspace=workspace, weights=weights,
                     cache_dir=cache_dir, use_cache=not no_cache, out=out, force=force)  # fmt: skip
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console.print(report_table(report))


def main() -> None:
    app()
