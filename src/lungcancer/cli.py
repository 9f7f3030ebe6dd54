"""The `lungcancer` command: parse flags, call the API, print. No logic lives here."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console

from lungcancer.errors import LungCancerError

if TYPE_CHECKING:
    from rich.table import Table

    from lungcancer.data.audit import AuditReport, ImageHashes
    from lungcancer.data.index import DatasetIndex

_Number = TypeVar("_Number", int, float)

app = typer.Typer(
    name="lungcancer",
    help="Lung cancer classification and progression simulation on CT.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect, split and audit datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
gan_app = typer.Typer(help="Train and evaluate the progression GAN.", no_args_is_help=True)
app.add_typer(gan_app, name="gan")

# Where output goes to a log or a pipe, rich assumes 80 columns unless COLUMNS says otherwise,
# which cut the timeline table's headers to "mon…" and "dia…" (seen in a GPU machine's log).
LOG_WIDTH = 160


def _console(*, stderr: bool = False) -> Console:
    # soft_wrap: never break a path or a message across lines (users copy them).
    made = Console(stderr=stderr, soft_wrap=True)
    if not made.is_terminal and "COLUMNS" not in os.environ:
        made.width = LOG_WIDTH
    return made


console = _console()
err_console = _console(stderr=True)


@app.command("compare")
def compare_command(
    runs: list[str] = typer.Argument(..., help="Run folders evaluated with `evaluate`."),
    out: str | None = typer.Option(None, "--out", help="Output folder (default: beside runs)."),
    allow_different_splits: bool = typer.Option(
        False, "--allow-different-splits", help="Warn instead of refusing unlike splits."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print compare.json to stdout."),
) -> None:
    """Compare evaluated runs on the same split: table, forest plot, compare.json, HTML."""
    from rich.table import Table

    from lungcancer.evaluate.compare import (
        COMPARE_LABELS,
        COMPARE_METRICS,
        compare_runs,
        format_difference,
        format_estimate,
    )

    result = compare_runs(runs, out_dir=out, allow_different_splits=allow_different_splits)
    if as_json:
        print(result.json_path.read_text(encoding="utf-8"), end="")
        return
    for warning in result.warnings:
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    table = Table(title="Models on the same split (95% CI from the patient bootstrap)")
    table.add_column("model")
    for name in COMPARE_METRICS:
        table.add_column(COMPARE_LABELS[name], justify="right")
    table.add_column("train min", justify="right")
    table.add_column("params", justify="right")
    for row in result.rows:
        minutes, params = row.get("train_minutes"), row.get("n_params")
        table.add_row(
            row["model"],
            *[format_estimate(row["metrics"][m]) for m in COMPARE_METRICS],
            "" if minutes is None else f"{minutes:.1f}",
            "" if params is None else f"{params:,}",
        )
    console.print(table)
    if result.differences:
        reference = result.differences[0]["reference"]
        diffs = Table(title=f"Difference from {reference} (paired patient bootstrap, 95% CI)")
        diffs.add_column("model")
        for name in COMPARE_METRICS:
            diffs.add_column(COMPARE_LABELS[name], justify="right")
        for diff in result.differences:
            cells = [format_difference(diff["metrics"][m], m) for m in COMPARE_METRICS]
            diffs.add_row(diff["model"], *cells)
        console.print(diffs)
    console.print(f"comparison: {result.html_path}  (table: {result.json_path.name})")


image_app = typer.Typer(help="Read, describe and convert single images.", no_args_is_help=True)
app.add_typer(image_app, name="image")


@image_app.command("info")
def image_info_command(
    path: str = typer.Argument(..., help="Image file or DICOM series folder."),
    series: str | None = typer.Option(None, "--series", help="DICOM series key or UID."),
    not_ct: bool = typer.Option(False, "--not-ct", help="Accept non-CT DICOM (unit range)."),
    allow_uneven: bool = typer.Option(
        False, "--allow-uneven", help="Accept unevenly spaced DICOM slices."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Read one image and show what was understood: format, geometry, values, meta."""
    import json

    from rich.table import Table

    from lungcancer.io import read_image, scan_summary

    scan = read_image(path, expect_ct=not not_ct, series_uid=series, allow_uneven=allow_uneven)
    summary = scan_summary(scan)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    table = Table(title=f"{path}", show_header=False)
    for key, value in summary.items():
        shown = ", ".join(f"{v:g}" for v in value) if isinstance(value, list) else str(value)
        table.add_row(key, shown)
    console.print(table)


@image_app.command("series")
def image_series_command(
    folder: str = typer.Argument(..., help="Folder of DICOM files (searched recursively)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the DICOM series in a folder (keys to pass as --series), without PHI."""
    import dataclasses
    import json

    from rich.table import Table

    from lungcancer.io import list_dicom_series

    infos = list_dicom_series(folder)
    if as_json:
        print(json.dumps([dataclasses.asdict(info) for info in infos], indent=2))
        return
    table = Table(title=f"DICOM series in {folder}")
    for column in ("key", "modality", "files", "rows x cols", "description"):
        table.add_column(column)
    for info in infos:
        size = f"{info.rows}x{info.columns}"
        table.add_row(info.key, info.modality, str(info.n_files), size, info.description)
    console.print(table)


@image_app.command("convert")
def image_convert_command(
    source: str = typer.Argument(..., help="Image file or DICOM series folder."),
    target: str = typer.Argument(..., help="Output .nrrd, .nii(.gz), .mha or .mhd file."),
    series: str | None = typer.Option(None, "--series", help="DICOM series key or UID."),
    not_ct: bool = typer.Option(False, "--not-ct", help="Accept non-CT DICOM (unit range)."),
    allow_uneven: bool = typer.Option(
        False, "--allow-uneven", help="Accept unevenly spaced DICOM slices."
    ),
) -> None:
    """Convert an image or DICOM series to a volume file, keeping HU and geometry."""
    from lungcancer.io import read_image, write_volume

    scan = read_image(source, expect_ct=not not_ct, series_uid=series, allow_uneven=allow_uneven)
    write_volume(scan, target)
    spacing = " x ".join(f"{v:g}" for v in scan.spacing_mm)
    console.print(f"wrote {target}: {scan.shape} voxels (z, y, x), {spacing} mm, {scan.intensity}")


@image_app.command("mask")
def image_mask_command(
    source: str = typer.Argument(..., help="The image the mask belongs to (file or DICOM folder)."),
    mask: str = typer.Argument(..., help="Its mask: RTSTRUCT/SEG (RS.dcm#GTV-1), NIfTI, NRRD..."),
    target: str = typer.Argument(..., help="Output .nrrd, .nii(.gz), .mha or .mhd mask file."),
    series: str | None = typer.Option(None, "--series", help="DICOM series key or UID."),
) -> None:
    """Lay a mask onto its image and write it as a volume file with the image's geometry."""
    from lungcancer.io import read_image, read_mask, write_mask

    scan = read_image(source, series_uid=series)
    lesion = read_mask(mask, like=scan)
    write_mask(lesion, scan, target)
    slices = int(lesion.any(axis=(1, 2)).sum())
    console.print(
        f"wrote {target}: {int(lesion.sum())} voxels inside on {slices} of {scan.shape[0]} "
        f"slice(s), on the image's {scan.shape} grid (z, y, x)"
    )


@image_app.command("rois")
def image_rois_command(
    path: str = typer.Argument(..., help="A DICOM RT Structure Set or Segmentation file."),
) -> None:
    """List the ROIs (or segments) of a DICOM segmentation: what `--mask FILE#ROI` can name."""
    from rich.table import Table

    from lungcancer.errors import ImageReadError
    from lungcancer.io.dicom_masks import list_regions
    from lungcancer.io.reader import parse_dicom

    regions = list_regions(parse_dicom(Path(path)))
    if not regions:
        raise ImageReadError(
            "this file holds no ROIs",
            path=path,
            expected="a DICOM RT Structure Set (RTSTRUCT) or Segmentation (SEG)",
            found="no ROI or segment",
            hint="pass the structure set or SEG file of the series",
        )
    table = Table("number", "name", "contours or frames", "taken without #ROI")
    for region in regions:
        table.add_row(
            str(region.number),
            region.name,
            str(region.parts),
            "yes" if region.taken_by_default else "",
        )
    console.print(table)
    if not any(r.taken_by_default for r in regions):
        console.print(f"none is taken without a name: --mask {Path(path).name}#NUMBER (or #NAME)")


_LAYOUT_HELP = "auto, folders, manifest, volumes, luna16 or medmnist."
_MASK_HELP = (
    "Lesion mask on the image's grid (NIfTI, NRRD, PNG), or a DICOM RTSTRUCT/SEG; "
    "RS.dcm#GTV-1 names its ROI."
)
_DATASET_HELP = "Dataset folder, manifest or LUNA16 annotations CSV, or MedMNIST .npz."


def _print_json(value: object) -> None:
    import json

    print(json.dumps(value, indent=1, default=str))


def _print_problems(problems: tuple[str, ...] | list[str], title: str, limit: int = 20) -> None:
    if not problems:
        return
    err_console.print(f"[bold yellow]{title} ({len(problems)}):[/]")
    for problem in list(problems)[:limit]:
        err_console.print(f"  {problem}", highlight=False, markup=False)
    if len(problems) > limit:
        err_console.print(f"  ... and {len(problems) - limit} more (see --json)")


@data_app.command("inspect")
def data_inspect_command(
    path: str = typer.Argument(..., help=_DATASET_HELP),
    layout: str = typer.Option("auto", "--layout", help=_LAYOUT_HELP),
    files: int = typer.Option(24, "--files", help="Images decoded for spacing/HU summaries."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Show what the toolkit understood: classes, counts, patients, formats, spacing, HU."""
    from rich.table import Table

    from lungcancer.data.inspect import inspect_dataset

    summary = inspect_dataset(path, layout=layout, files=files)
    if as_json:
        _print_json(summary.to_dict())
        return
    splits = sorted({split for counts in summary.counts.values() for split in counts})
    table = Table(title=f"{summary.n_samples} samples, layout {summary.layout}")
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    table.add_column("total", justify="right")
    for name in summary.class_names:
        counts = summary.counts[name]
        table.add_row(name, *[str(counts.get(s, 0)) for s in splits], str(sum(counts.values())))
    console.print(table)
    if summary.has_patient_ids:
        patients = f"{summary.n_patients} patients"
    elif summary.n_patients:
        patients = f"patient ids for some images only ({summary.n_patients} patients known)"
    else:
        patients = "no patient ids: splits will keep near-duplicate images together instead"
    console.print(patients, highlight=False)
    console.print("formats: " + ", ".join(f"{k} {v}" for k, v in summary.formats.items()))
    details = Table(title=f"from {summary.files_read} file(s) decoded")
    details.add_column("quantity")
    details.add_column("min", justify="right")
    details.add_column("median", justify="right")
    details.add_column("max", justify="right")
    rows = [(f"spacing {axis} (mm)", r) for axis, r in summary.spacing_mm.items()]
    rows += [
        (f"{k} intensity ({summary.intensity})", r) for k, r in summary.intensity_p1_p99.items()
    ]
    for name, r in rows:
        details.add_row(name, f"{r.min:g}", f"{r.median:g}", f"{r.max:g}")
    console.print(details)
    if summary.shapes:
        console.print("image shapes (z x y x x): " + ", ".join(summary.shapes))
    _print_problems(summary.problems, "problems found")


def _split_table(title: str, index: DatasetIndex, splits: dict[str, list[int]]) -> Table:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("class")
    names = list(splits)
    for name in names:
        table.add_column(name, justify="right")
    labels = index.label_ids()
    for class_id, class_name in enumerate(index.class_names):
        cells = [str(sum(1 for i in splits[n] if labels[i] == class_id)) for n in names]
        table.add_row(class_name, *cells)
    patients = [str(len({index.samples[i].patient_id for i in splits[n]} - {""})) for n in names]
    table.add_row("patients", *patients, style="dim")
    return table


def _print_audit(report: AuditReport) -> None:
    for pair, count in report.patient_overlap.items():
        style = "bold red" if count else "green"
        console.print(f"[{style}]patients shared {pair}: {count}[/]", highlight=False)
    if report.overlap_examples:
        console.print("  e.g. patient keys " + ", ".join(report.overlap_examples))
    if report.duplicates_checked:
        style = "bold red" if report.cross_split else "green"
        console.print(
            f"[{style}]near-duplicate groups across splits: {len(report.cross_split)}[/]"
            f" (of {report.duplicate_groups} groups in all)",
            highlight=False,
        )
        for group in report.cross_split[:5]:
            console.print(
                f"  {' / '.join(group.splits)}: {', '.join(group.keys[:4])}",
                highlight=False,
                markup=False,
            )
    else:
        console.print("near-duplicates: not checked (the dataset has patient ids)")
    for warning in report.warnings:
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


def _hashes_if_needed(index: DatasetIndex, wanted: bool | None) -> ImageHashes | None:
    from lungcancer.data.audit import image_hashes

    if wanted is False or (wanted is None and index.has_patient_ids):
        return None
    with err_console.status(f"hashing {len(index.samples)} images for near-duplicates..."):
        return image_hashes(index)


@data_app.command("split")
def data_split_command(
    path: str = typer.Argument(..., help=_DATASET_HELP),
    out: str = typer.Option(..., "--out", help="Where to write the split file (JSON)."),
    layout: str = typer.Option("auto", "--layout", help=_LAYOUT_HELP),
    seed: int = typer.Option(0, "--seed", help="Same seed, same split."),
    val: float = typer.Option(0.15, "--val", help="Share of samples for validation."),
    test: float = typer.Option(0.2, "--test", help="Share for the test set (unless fixed)."),
    folds: int = typer.Option(0, "--folds", help="k >= 2 for k-fold cross-validation."),
    fold: int = typer.Option(0, "--fold", help="Which fold is val (0-based)."),
    as_json: bool = typer.Option(False, "--json", help="Print sizes and audit as JSON."),
) -> None:
    """Split by patient, stratified by class, seeded; near-duplicates kept together."""
    from lungcancer.data.audit import audit
    from lungcancer.data.layouts import load_index
    from lungcancer.data.splits import make_splits, save_splits

    index = load_index(path, layout=layout)
    hashes = _hashes_if_needed(index, None)
    splits = make_splits(
        index,
        val_fraction=val,
        test_fraction=test,
        seed=seed,
        folds=folds,
        fold=fold,
        hashes=hashes,
    )
    save_splits(splits, out)
    report = audit(index, splits.indices, hashes=hashes)
    if as_json:
        _print_json(
            {
                "split_file": out,
                "sizes": splits.sizes(),
                "grouping": splits.grouping,
                "fixed": splits.fixed,
                "audit": report.to_dict(),
            }
        )
        return
    console.print(_split_table(f"split (seed {seed}) -> {out}", index, splits.indices))
    console.print("kept together by: " + ", ".join(splits.grouping), highlight=False)
    if splits.fixed:
        console.print("kept the layout's own splits: " + ", ".join(splits.fixed))
    _print_audit(report)


@data_app.command("audit")
def data_audit_command(
    path: str = typer.Argument(..., help=_DATASET_HELP),
    splits_file: str | None = typer.Option(
        None,
        "--splits",
        help="Split file to audit (default: the layout's own split folders "
        "or column, else a fresh default split).",
    ),
    layout: str = typer.Option("auto", "--layout", help=_LAYOUT_HELP),
    duplicates: bool | None = typer.Option(
        None,
        "--duplicates/--no-duplicates",
        help="Hash images for near-duplicates (default: only without patient ids).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Look for patients and near-duplicate images shared between splits; exit 1 on leakage."""
    from lungcancer.data.audit import audit
    from lungcancer.data.layouts import load_index
    from lungcancer.data.splits import layout_splits, load_splits, make_splits

    index = load_index(path, layout=layout)
    hashes = _hashes_if_needed(index, duplicates)
    if splits_file is not None:
        splits, origin = load_splits(splits_file, index).indices, splits_file
    elif layout_splits(index):
        splits, origin = layout_splits(index), "the layout's own splits"
    else:
        splits, origin = make_splits(index, hashes=hashes).indices, "a default split (seed 0)"
    report = audit(index, splits, hashes=hashes, check_duplicates=hashes is not None)
    if as_json:
        _print_json({"audited": origin, **report.to_dict()})
    else:
        console.print(_split_table(f"audit of {origin}", index, splits))
        _print_audit(report)
        verdict = "[bold red]leakage found[/]" if report.leakage else "[green]no leakage found[/]"
        console.print(verdict)
    if report.leakage:
        raise typer.Exit(1)


@app.command("measure")
def measure_command(
    image: str = typer.Argument(..., help="CT image (DICOM folder, NIfTI, NRRD, MetaImage...)."),
    mask: str = typer.Option(..., "--mask", help=_MASK_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the measurements as JSON."),
) -> None:
    """Greatest lesion diameter (mm), volume (ml), T descriptor and Lung-RADS band by size."""
    from dataclasses import asdict

    from rich.table import Table

    from lungcancer.data.measure import measure_file

    lesions = measure_file(image, mask)
    if as_json:
        _print_json({"lesions": [asdict(lesion) for lesion in lesions]})
        return
    table = Table(title=f"{len(lesions)} lesion(s), largest first")
    for column in ("#", "diameter mm", "volume ml", "voxels", "centre z,y,x", "T", "Lung-RADS"):
        table.add_column(column, justify="left" if column == "centre z,y,x" else "right")
    for number, lesion in enumerate(lesions, start=1):
        centre = ",".join(f"{v:.0f}" for v in lesion.center_zyx)
        table.add_row(
            str(number),
            f"{lesion.diameter_mm:.1f}",
            f"{lesion.volume_ml:.3f}",
            str(lesion.voxel_count),
            centre,
            lesion.t_descriptor,
            lesion.lung_rads_band,
        )
    console.print(table)
    note = "T and Lung-RADS from size alone (invasion, nodes and nodule type not assessed)."
    if lesions[0].in_plane_only:
        note += " Single-slice mask: diameter measured in-plane only."
    console.print(note)


@gan_app.command("train")
def gan_train_command(
    data: str = typer.Option(..., "--data", help="LungSim folder or manifest with lesion masks."),
    config: str | None = typer.Option(None, "--config", help="YAML with gan: and data: sections."),
    mode: str | None = typer.Option(None, "--mode", help="paired (LungSim pairs) | unpaired."),
    patch: int | None = typer.Option(None, "--patch", help="Patch side in pixels (64 default)."),
    steps: int | None = typer.Option(None, "--steps", help="Training steps."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Examples per step."),
    max_minutes: float | None = typer.Option(
        None, "--max-minutes", help="Stop (and save) after this many minutes; 0 = no limit."
    ),
    precision: str | None = typer.Option(None, "--precision", help="auto | bf16 | fp32."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda."),
    seed: int | None = typer.Option(None, "--seed", help="Training seed."),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads (0: one per physical core)."
    ),
    out: str | None = typer.Option(None, "--out", help="Run folder (default runs/gan)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt."),
) -> None:
    """Train the progression GAN; writes checkpoint.pt, losses.jsonl and sample grids."""
    from lungcancer.config import DataConfig, GanConfig, load_section, override
    from lungcancer.progression.loop import INERT_D_MARGIN
    from lungcancer.progression.training import train_gan

    gan_cfg = override(
        load_section(config, "gan", GanConfig),
        data=data,
        mode=mode,
        patch_size=patch,
        steps=steps,
        batch_size=batch_size,
        max_minutes=max_minutes,
        precision=precision,
        device=device,
        seed=seed,
        threads=threads,
        out_dir=out,
        resume=resume or None,
    )
    data_cfg = load_section(config, "data", DataConfig)
    result = train_gan(gan_cfg, data_cfg)
    if result.stopped_early:
        err_console.print(
            f"[bold yellow]warning:[/] stopped at step {result.steps} of {gan_cfg.steps} "
            f"(--max-minutes {gan_cfg.max_minutes:g})",
            highlight=False,
        )
    losses = ", ".join(f"{k} {v:.4f}" for k, v in result.losses.items())
    console.print(f"steps {result.steps} in {result.minutes:.1f} min; last losses: {losses}")
    if result.val_l1 is not None:
        console.print(f"validation L1 (window units): {result.val_l1:.4f}")
    if result.d_margin is not None:
        console.print(f"discriminator margin (2 - hinge loss, second half): {result.d_margin:.4f}")
        if gan_cfg.lambda_adv > 0 and abs(result.d_margin) < INERT_D_MARGIN:
            err_console.print(
                "[bold yellow]warning:[/] the discriminator did not tell real from generated "
                f"patches (margin under {INERT_D_MARGIN:g}): the adversarial term had no effect. "
                f"Lower gan.r1_gamma (now {gan_cfg.r1_gamma:g}) or raise gan.lr_d.",
                highlight=False,
            )
    console.print(f"checkpoint: {result.checkpoint}", highlight=False)


@gan_app.command("evaluate")
def gan_evaluate_command(
    gan_ckpt: str = typer.Argument(..., help="GAN checkpoint (checkpoint.pt)."),
    data: str = typer.Option(..., "--data", help="LungSim folder with longitudinal series."),
    classifier: str | None = typer.Option(
        None, "--classifier", help="Classifier checkpoint: stage fidelity, FID and KID."
    ),
    months: float = typer.Option(12.0, "--months", help="Render month 0 -> this month."),
    config: str | None = typer.Option(
        None, "--config", help="YAML whose data: section set the training split."
    ),
    out: str | None = typer.Option(None, "--out", help="Folder for metrics.json/metrics.md."),
    as_json: bool = typer.Option(False, "--json", help="Print metrics.json to stdout."),
    split: str = typer.Option(
        "test",
        "--split",
        help="test (report), val (choose settings without test patients) or all (every "
        "patient of --data: an external set, e.g. synth --seed 1 --id-prefix ext).",
    ),
    spread: bool = typer.Option(
        True,
        "--spread/--no-spread",
        help="Draw the true future's new nodes and M1a findings outside the lesion on the "
        "scored frames (as simulate --spread does).",
    ),
) -> None:
    """Score the GAN and two baselines on held-out patients against their true future."""
    from lungcancer.config import DataConfig, load_section
    from lungcancer.progression.fidelity import evaluate_gan

    result = evaluate_gan(
        gan_ckpt,
        data,
        classifier=classifier,
        months=months,
        data_cfg=load_section(config, "data", DataConfig),
        out_dir=out,
        split=split,
        spread=spread,
    )
    if as_json:
        _print_json(result.metrics)
        return
    console.print(result.table, highlight=False)
    for name, check in result.metrics["targets"].items():
        if isinstance(check, dict) and check.get("measured") is not None:
            verdict = "met" if check["met"] else f"MISSED by {check['miss_by']}"
            console.print(f"{name}: {check['measured']} (target {check['target']}) {verdict}")
        elif isinstance(check, bool):
            console.print(f"{name}: {'yes' if check else 'NO'}")
    if "stage_fidelity" not in result.metrics:
        console.print("stage fidelity, FID and KID need --classifier", highlight=False)
    why_not = (result.metrics.get("spread") or {}).get("why_not")
    if why_not:
        console.print(f"note: no nodes or M1a findings drawn: {why_not}", highlight=False)
    for kind, path in result.files.items():
        console.print(f"{kind}: {path}", highlight=False)


@app.command("simulate")
def simulate_command(
    gan_ckpt: str = typer.Argument(..., help="GAN checkpoint (checkpoint.pt)."),
    image: str = typer.Argument(..., help="CT slice or volume (DICOM, NIfTI, NRRD, ...)."),
    mask: str | None = typer.Option(None, "--mask", help=_MASK_HELP),
    point: str | None = typer.Option(
        None, "--point", help="Lesion centre in voxels, z,y,x (or y,x for a slice)."
    ),
    diameter_mm: float | None = typer.Option(
        None, "--diameter-mm", help="Lesion diameter (needed with --point)."
    ),
    classifier: str | None = typer.Option(
        None, "--classifier", help="Classifier checkpoint that scores every frame."
    ),
    months: str = typer.Option("0,3,6,12,18,24", "--months", help="Months from baseline."),
    histology: str = typer.Option(
        "adeno", "--histology", help="adeno | squamous | large-cell | ground-glass."
    ),
    vdt_days: float | None = typer.Option(
        None, "--vdt-days", help="Volume-doubling time (default: the histology's median)."
    ),
    n: str | None = typer.Option(None, "--n", help="N descriptor (default N0, held)."),
    m: str | None = typer.Option(None, "--m", help="M descriptor (default M0, held)."),
    invasion: str = typer.Option(
        "none", "--invasion", help="none | chest_wall (>= T3) | mediastinum (T4), held."
    ),
    stage: str | None = typer.Option(
        None, "--stage", help="The lesion's known current stage (I-IV), if any."
    ),
    allow_regression: bool = typer.Option(
        False, "--allow-regression", help="Allow frames at an earlier stage than now."
    ),
    patch: int | None = typer.Option(None, "--patch", help="Refuse a GAN of another patch size."),
    spread: str = typer.Option(
        "",
        "--spread",
        help="N/M rising over time, MONTH:DESCRIPTOR, e.g. 12:N2,18:M1a; the new nodes and "
        "M1a findings are drawn outside the lesion.",
    ),
    m1a: str = typer.Option(
        "effusion", "--m1a", help="What M1a shows: effusion | nodule (other lung) | both."
    ),
    out: str = typer.Option("runs/simulate", "--out", help="Output folder."),
    as_json: bool = typer.Option(False, "--json", help="Print timeline.json to stdout."),
) -> None:
    """Simulate a tumour's growth: strip PNG, GIF, timeline JSON and plot."""
    from rich.table import Table

    from lungcancer.progression.simulate import parse_months, parse_point, parse_spread, simulate

    result = simulate(
        gan_ckpt,
        image,
        mask=mask,
        point_zyx=parse_point(point) if point else None,
        diameter_mm=diameter_mm,
        classifier=classifier,
        months=parse_months(months),
        histology=histology,
        vdt_days=vdt_days,
        n=n,
        m=m,
        invasion=invasion,
        current_stage=stage,
        allow_regression=allow_regression,
        patch_size=patch,
        spread=parse_spread(spread),
        m1a_kind=m1a,
        out_dir=out,
    )
    if as_json:
        print(result.files["timeline_json"].read_text(encoding="utf-8"), end="")
        return
    table = Table(title=f"progression ({result.histology}, VDT {result.vdt_days:g} days)")
    for column in ("month", "diameter (mm)", "T", "N", "M", "stage", *result.class_names):
        table.add_column(column)
    for f in result.timeline:
        probs = [f"{f.probabilities[c]:.2f}" for c in result.class_names]
        table.add_row(f"{f.months:g}", f"{f.diameter_mm:.1f}", f.t, f.n, f.m, f.stage_group, *probs)
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    for kind, path in result.files.items():
        console.print(f"{kind}: {path}", highlight=False)


@app.command("calibrate")
def calibrate_command(
    target: str = typer.Argument(..., help="Run folder (uses best.pt) or checkpoint file."),
    split: str = typer.Option("val", "--split", help="Split to fit on: val (or train)."),
    class_bias: bool = typer.Option(
        False,
        "--class-bias/--temperature-only",
        help="Also fit per-class decision biases for macro F1 (moves decisions; can overfit "
        "a small split). Default: the temperature only, which changes no decision.",
    ),
    out: str | None = typer.Option(
        None, "--out", help="Calibrated checkpoint (default RUN_DIR/calibrated.pt)."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    data: str | None = typer.Option(None, "--data", help="Dataset path if it moved."),
) -> None:
    """Fit a temperature (and class biases) on the validation split; write a new checkpoint."""
    from lungcancer.evaluate.posthoc import calibrate_run

    result = calibrate_run(
        target, split=split, class_bias=class_bias, out=out, device=device, data_source=data
    )
    fitted = result.calibration
    console.print(f"{fitted.describe(result.class_names)}", highlight=False)
    for key in ("nll", "ece", "accuracy", "macro_f1"):
        console.print(
            f"  {split} {key}: {fitted.before[key]:.4f} -> {fitted.after[key]:.4f}",
            highlight=False,
        )
    console.print(
        f"wrote {result.checkpoint}; the {split} figures above are fitted on those images "
        f"(optimistic): score it on the test split with lungcancer evaluate "
        f"{result.checkpoint} --out <folder>",
        highlight=False,
    )


@app.command("evaluate")
def evaluate_command(
    target: str = typer.Argument(..., help="Run folder (uses best.pt) or checkpoint file."),
    split: str = typer.Option("test", "--split", help="Which split of the run: test, val, train."),
    out: str | None = typer.Option(None, "--out", help="Output folder (default RUN_DIR/eval)."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples; 0 = no CIs."),
    localisation_samples: int = typer.Option(
        60,
        "--localisation-samples",
        help="Masked samples scored with Grad-CAM (pointing game, energy in mask); 0 = none.",
    ),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    data: str | None = typer.Option(None, "--data", help="Dataset path if it moved."),
    by: list[str] | None = typer.Option(
        None,
        "--by",
        help="Subgroup analysis by a manifest column, repeatable: COLUMN (one group per value; "
        "quartiles if numeric) or COLUMN:EDGE,EDGE,... e.g. diameter_mm:10,20,30.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print metrics.json to stdout."),
) -> None:
    """Evaluate a trained run: metrics with patient-bootstrap CIs, plots, HTML report."""
    import warnings

    from rich.table import Table

    from lungcancer.evaluate.api import evaluate_run
    from lungcancer.evaluate.metrics import HEADLINE_METRICS, UndefinedMetricWarning
    from lungcancer.evaluate.report import METRIC_TEXT

    with warnings.catch_warnings():
        # The same messages are in metrics["warnings"] and printed once below.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        result = evaluate_run(
            target,
            split=split,
            out_dir=out,
            n_boot=n_boot,
            localisation_samples=localisation_samples,
            seed=seed,
            batch_size=batch_size,
            device=device,
            data_source=data,
            by=tuple(by or ()),
        )
    metrics = result.metrics
    if as_json:
        print(result.metrics_path.read_text(encoding="utf-8"), end="")
        return
    for warning in metrics["warnings"]:
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    ci = metrics["ci"]
    table = Table(
        title=f"{metrics['run'].get('model', '')} on the {split} split: "
        f"{metrics['n_samples']} images, {metrics['n_patients']} {metrics['grouping']}s"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    for name in HEADLINE_METRICS:
        value = metrics["headline"][name]
        interval = ci["headline"][name]
        shown = "" if interval["low"] is None else f"{interval['low']:.3f} – {interval['high']:.3f}"
        if interval["low"] is not None and interval["n_used"] < ci["n_boot"]:
            # Resamples that drew no patient of some class leave the metric undefined.
            shown += f" ({interval['n_used']} of {ci['n_boot']} resamples)"
        table.add_row(METRIC_TEXT[name][0], "undefined" if value is None else f"{value:.3f}", shown)
    console.print(table)
    for block in metrics.get("subgroups", []):
        console.print(_subgroup_table(block))
    if ci["n_boot"]:
        console.print(f"CIs: {ci['n_boot']} resamples by {ci['unit']}, seed {ci['seed']}")
    console.print(f"report: {result.report_path}")


def _subgroup_table(block: dict[str, Any]) -> Table:
    """One `--by` analysis as a console table: counts, accuracy and macro AUC with CIs."""
    from rich.table import Table

    def shown(value: float | None, interval: dict[str, Any]) -> str:
        if value is None:
            return "undefined"
        if interval.get("low") is None:
            return f"{value:.3f}"
        return f"{value:.3f} ({interval['low']:.3f} – {interval['high']:.3f})"

    table = Table(title=f"by {block['column']}")
    for column in ("group", "samples", "patients", "accuracy (95% CI)", "macro AUC (95% CI)"):
        table.add_column(column, justify="left" if column == "group" else "right")
    for g in block["groups"]:
        table.add_row(
            g["group"],
            str(g["n_samples"]),
            str(g["n_patients"]),
            shown(g["metrics"]["accuracy"], g["ci"]["accuracy"]),
            shown(g["metrics"]["macro_roc_auc"], g["ci"]["macro_roc_auc"]),
        )
    return table


@app.command("explain")
def explain_command(
    ckpt: str = typer.Argument(..., help="Classifier checkpoint (best.pt)."),
    image: str = typer.Argument(..., help="Image file or DICOM series folder."),
    mask: str | None = typer.Option(None, "--mask", help="Lesion mask: adds localisation scores."),
    class_name: str | None = typer.Option(
        None, "--class", help="Class to explain (default: the predicted class)."
    ),
    method: str = typer.Option("gradcam", "--method", help="gradcam | gradcampp."),
    out: str = typer.Option("runs/explain", "--out", help="Folder for overlays and JSON."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Grad-CAM / Grad-CAM++ overlays (PNG) and, with a mask, pointing game and energy share."""
    from pathlib import Path

    from lungcancer.explain.run import explain_file
    from lungcancer.train.inference import load_classifier

    clf = load_classifier(ckpt, device="cpu")
    items = explain_file(
        clf, image, mask_path=mask, class_name=class_name, method=method, out_dir=out
    )
    if as_json:
        _print_json([item.summary() for item in items])
        return
    for item in items:
        probs = ", ".join(f"{c} {p:.3f}" for c, p in item.probabilities.items())
        console.print(
            f"{item.name}: predicted [bold]{item.predicted_class}[/] ({probs}); "
            f"map explains '{item.explained_class}' -> {item.overlay_path}",
            highlight=False,
        )
        if item.pointing_hit is not None and item.energy_share is not None:
            hit = "hit" if item.pointing_hit else "miss"
            console.print(
                f"  pointing game: {hit}; energy inside the mask: {item.energy_share:.1%}"
            )
    console.print(f"summary: {Path(out) / 'explanations.json'}")


@app.command("serve")
def serve_command(
    ckpt: str = typer.Option(..., "--ckpt", help="Classifier checkpoint (best.pt)."),
    gan: str | None = typer.Option(
        None, "--gan", help="Progression GAN checkpoint: adds the simulation section."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface (0.0.0.0: all; no login)."),
    port: int = typer.Option(7860, "--port", help="TCP port."),
    max_upload_mb: int = typer.Option(200, "--max-upload-mb", help="Largest accepted upload."),
    timeout_s: float = typer.Option(60.0, "--timeout", help="Processing limit per request (s)."),
) -> None:
    """Web app: upload a CT image, see probabilities, Grad-CAM and (--gan) its progression."""
    from lungcancer.app.server import serve
    from lungcancer.app.uploads import UploadLimits

    limits = UploadLimits(max_upload_bytes=max_upload_mb * 1024 * 1024, timeout_s=timeout_s)
    console.print(f"starting the app at http://{host}:{port}  (Ctrl+C stops)", highlight=False)
    serve(ckpt, gan_ckpt=gan, host=host, port=port, limits=limits, block=True)


@app.command("export")
def export_command(
    ckpt: str = typer.Argument(..., help="Classifier checkpoint (best.pt)."),
    fmt: str = typer.Option("onnx", "--format", help="onnx | torchscript."),
    out: str | None = typer.Option(None, "--out", help="Output file (default: beside CKPT)."),
) -> None:
    """Export to ONNX (opset 17) or TorchScript, checked against PyTorch (max |dp| <= 1e-4)."""
    from lungcancer.export.convert import default_output, export_classifier
    from lungcancer.train.inference import load_classifier

    clf = load_classifier(ckpt, device="cpu", precision="fp32")
    target = out or str(default_output(ckpt, fmt))
    report = export_classifier(clf, fmt, target)
    opset = f", opset {report.opset}" if report.opset is not None else ""
    console.print(
        f"wrote {report.path} ({report.format}{opset}); parity on {report.n_samples} inputs "
        f"{report.input_shape}: max |probability difference| {report.max_abs_diff:.2e} "
        f"<= {report.tolerance:g}",
        highlight=False,
    )


@app.command("train")
def train_command(
    config: str | None = typer.Option(
        None, "--config", help="YAML file with data:, model: and train: sections."
    ),
    data: str | None = typer.Option(
        None, "--data", help="Dataset folder, manifest CSV or .npz (data.source)."
    ),
    train_extra: list[str] | None = typer.Option(
        None,
        "--train-extra",
        help="Another dataset whose samples only train (repeatable; data.train_extra): "
        "--data alone is split, so its val and test splits stay the same.",
    ),
    model: str | None = typer.Option(None, "--model", help="resnet50 | densenet121 | cnn."),
    epochs: int | None = typer.Option(None, "--epochs", help="Passes over the training split."),
    max_steps: int | None = typer.Option(
        None,
        "--max-steps",
        help="Optimizer steps in all; the schedule spans them and the run ends there "
        "(--epochs stays an upper bound; 0 = off).",
    ),
    low_res_px: int | None = typer.Option(
        None,
        "--low-res-px",
        help="Progressive resizing: the first --low-res-fraction of the steps train on inputs "
        "resized to this many pixels across (0 = off).",
    ),
    low_res_crop_px: str | None = typer.Option(
        None,
        "--low-res-crop-px",
        help="Instead of resizing, crop those steps' inputs to their centre at the same pixel "
        "size: rows,columns (e.g. 80,112 of a 128 px lung-centred input).",
    ),
    low_res_fraction: float | None = typer.Option(
        None,
        "--low-res-fraction",
        help="Share of the optimizer steps at --low-res-px or --low-res-crop-px.",
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Images per step."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (of the head)."),
    out: str | None = typer.Option(None, "--out", help="Run folder (train.out_dir)."),
    pretrained: str | None = typer.Option(
        None, "--pretrained", help="imagenet, a URL, or a weights/checkpoint PATH."
    ),
    precision: str | None = typer.Option(None, "--precision", help="auto | fp32 | bf16 | fp16."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    seed: int | None = typer.Option(None, "--seed", help="Training seed (not the split's)."),
    max_minutes: float | None = typer.Option(
        None,
        "--max-minutes",
        help="Time budget: plan only the epochs that fit (the cosine ends with them).",
    ),
    image_size: int | None = typer.Option(None, "--image-size", help="Input side in pixels."),
    freeze_epochs: int | None = typer.Option(
        None, "--freeze-epochs", help="Epochs with a frozen (pretrained) backbone."
    ),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda[:N]."),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads (default: one per physical core)."
    ),
    aux_targets: str | None = typer.Option(
        None,
        "--aux-targets",
        help="Manifest columns also learnt as auxiliary targets, e.g. diameter_mm,t,n,m "
        "('' for none).",
    ),
    aux_mask_weight: float | None = typer.Option(
        None,
        "--aux-mask-weight",
        help="Weight of the lesion-mask auxiliary loss (needs mask_path; 0 = off).",
    ),
    precise_bn_batches: int | None = typer.Option(
        None,
        "--precise-bn-batches",
        help="Recompute batch-norm statistics from this many fixed training batches before "
        "each validation (0 = off; default 8).",
    ),
) -> None:
    """Train a classifier; flags override the YAML file's sections."""
    from lungcancer.config import DataConfig, ModelConfig, TrainConfig, load_section, override
    from lungcancer.train.api import train

    data_cfg = override(
        load_section(config, "data", DataConfig),
        source=data,
        image_size=image_size,
        train_extra=tuple(train_extra) if train_extra else None,
    )
    model_cfg = override(
        load_section(config, "model", ModelConfig), name=model, pretrained=pretrained
    )
    train_cfg = override(
        load_section(config, "train", TrainConfig),
        out_dir=out,
        epochs=epochs,
        max_steps=max_steps,
        low_res_px=low_res_px,
        low_res_crop_px=_int_list(low_res_crop_px, "--low-res-crop-px"),
        low_res_fraction=low_res_fraction,
        batch_size=batch_size,
        lr=lr,
        precision=precision,
        resume=True if resume else None,
        seed=seed,
        max_minutes=max_minutes,
        freeze_epochs=freeze_epochs,
        device=device,
        threads=threads,
        aux_targets=None
        if aux_targets is None
        else tuple(c.strip() for c in aux_targets.split(",") if c.strip()),
        aux_mask_weight=aux_mask_weight,
        precise_bn_batches=precise_bn_batches,
    )
    try:
        result = train(data_cfg, model_cfg, train_cfg)
    except KeyboardInterrupt:
        # Before the first epoch started (data preparation): nothing to save yet.
        err_console.print("interrupted before training started; nothing was saved")
        raise typer.Exit(130) from None
    if result.interrupted:
        err_console.print(
            f"interrupted: saved {result.last_checkpoint}; continue with "
            f"`lungcancer train ... --out {result.run_dir} --resume`",
            highlight=False,
        )
        raise typer.Exit(130)
    console.print(
        f"best: {result.best_checkpoint} (epoch {result.best_epoch}, "
        f"val macro AUC {result.best_metric:.4f}); last: {result.last_checkpoint}; "
        f"stopped: {result.stopped}",
        highlight=False,
    )


@app.command("predict")
def predict_command(
    checkpoint: str = typer.Argument(..., help="best.pt or last.pt from `lungcancer train`."),
    inputs: list[str] = typer.Argument(
        ..., help="PNG/JPG, DICOM file or series folder, NIfTI, NRRD or MetaImage files."
    ),
    mask: list[str] | None = typer.Option(
        None, "--mask", help="Lesion mask; repeat once per input, in input order."
    ),
    out: str | None = typer.Option(None, "--out", help="Write predictions to a .csv or .json."),
    as_json: bool = typer.Option(False, "--json", help="Print predictions as JSON to stdout."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda[:N] | auto."),
    engine: str = typer.Option(
        "torch", "--engine", help="torch | onnx (then CHECKPOINT is a .onnx from `export`)."
    ),
    threads: int = typer.Option(
        0, "--threads", help="CPU threads (default: one per physical core)."
    ),
) -> None:
    """Class probabilities per image (per lesion or slice, plus a per-scan mean for volumes)."""
    from rich.table import Table

    from lungcancer.train.inference import (
        load_classifier,
        predict_files,
        predictions_json,
        write_predictions,
    )

    if engine == "onnx":
        from lungcancer.export.runtime import load_onnx_classifier, predict_files_onnx

        onnx_clf = load_onnx_classifier(checkpoint)
        class_names = onnx_clf.class_names
        rows = predict_files_onnx(onnx_clf, inputs, mask_paths=mask or None)
    elif engine == "torch":
        clf = load_classifier(checkpoint, device=device, threads=threads)
        clf.policy.apply_threads()
        class_names = clf.class_names
        rows = predict_files(clf, inputs, mask_paths=mask or None)
    else:
        raise LungCancerError("unknown --engine", expected="torch or onnx", found=engine)
    if out:
        err_console.print(f"wrote {write_predictions(rows, class_names, out)}")
    if as_json:
        print(predictions_json(rows))
        return
    table = Table(title=f"Predictions of {checkpoint}")
    for column in ("input", "item", "predicted", *class_names):
        table.add_column(column)
    for row in rows:
        probs = [f"{row.probabilities[c]:.3f}" for c in class_names]
        item = f"[bold]{row.item}[/]" if row.aggregate else row.item
        table.add_row(row.path, item, row.predicted, *probs)
    console.print(table)


def _float_list(text: str | None, flag: str) -> tuple[float, ...] | None:
    """Parse "0,3,6" into floats; a bad value is a ConfigError naming the flag."""
    return _number_list(text, flag, float, "e.g. 0,3,6,12")


def _int_list(text: str | None, flag: str) -> tuple[int, ...] | None:
    """Parse "80,112" into integers; a bad value is a ConfigError naming the flag."""
    return _number_list(text, flag, int, "e.g. 80,112")


def _number_list(
    text: str | None, flag: str, cast: Callable[[str], _Number], example: str
) -> tuple[_Number, ...] | None:
    from lungcancer.errors import ConfigError

    if text is None:
        return None
    try:
        return tuple(cast(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        kind = "whole numbers" if cast is int else "numbers"
        raise ConfigError(
            f"{flag} must be comma-separated {kind}", expected=example, found=text
        ) from exc


@app.command("synth")
def synth_command(
    out: str | None = typer.Option(None, "--out", help="Dataset folder to create."),
    patients: int | None = typer.Option(None, "--patients", help="Number of patients."),
    timepoints: str | None = typer.Option(
        None, "--timepoints", help="Visits in months, e.g. 0,3,6,12 (first = baseline)."
    ),
    size: int | None = typer.Option(None, "--size", help="In-plane matrix (default 256)."),
    dims: int | None = typer.Option(None, "--dims", help="2 (slices) or 3 (volumes)."),
    depth: int | None = typer.Option(None, "--depth", help="Slices per volume with --dims 3."),
    classes: str | None = typer.Option(None, "--classes", help="stage | t | binary."),
    seed: int | None = typer.Option(None, "--seed", help="Dataset seed."),
    workers: int | None = typer.Option(None, "--workers", help="Parallel processes."),
    dose: float | None = typer.Option(None, "--dose", help="Relative dose (noise ~ 1/sqrt)."),
    thickness: float | None = typer.Option(
        None, "--thickness", help="Slice thickness in mm (0 = vary 1-5 mm per patient)."
    ),
    off_centre: int | None = typer.Option(
        None, "--off-centre-slices", help="Extra slices per visit through the lesion (2D)."
    ),
    offset_mm: float | None = typer.Option(
        None, "--slice-offset-mm", help="How far off-centre slices may go (mm)."
    ),
    near_threshold: float | None = typer.Option(
        None, "--near-threshold", help="Share of tumours sized near a T threshold (0-1)."
    ),
    slab_mm: float | None = typer.Option(
        None,
        "--slab-mm",
        help="2D: write each sample as 3 slices, this far apart (2.5D; data.slab_slices: 3).",
    ),
    class_weights: str | None = typer.Option(
        None, "--class-weights", help="One weight per class, e.g. 2,1,1,1,1,1."
    ),
    id_prefix: str | None = typer.Option(
        None,
        "--id-prefix",
        help="Patient ids '<prefix>-00042' (default sim): keeps an external test set apart.",
    ),
    followup_pose: str | None = typer.Option(
        None,
        "--followup-pose",
        help="own (each visit lies differently) | baseline (every visit in the first's pose: "
        "a pose-free truth for gan evaluate).",
    ),
    no_followup_spread: bool = typer.Option(
        False,
        "--no-followup-spread",
        help="Later visits keep the baseline's nodes and M1a findings: only the lesion changes.",
    ),
    no_png: bool = typer.Option(False, "--no-png", help="Skip the per-sample PNG previews."),
    preview: str | None = typer.Option(
        None, "--preview", help="Also (or only) write a contact sheet, one row per class."
    ),
    per_class: int = typer.Option(4, "--per-class", help="Contact-sheet columns."),
    config: str | None = typer.Option(None, "--config", help="YAML with a synth: section."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty folder."),
) -> None:
    """Generate LungSim synthetic chest CT with TNM-staged tumours (and/or a contact sheet)."""
    from rich.progress import Progress
    from rich.table import Table

    from lungcancer.config import load_section, override
    from lungcancer.errors import ConfigError
    from lungcancer.synth import SynthConfig, contact_sheet, generate

    if out is None and preview is None:
        raise ConfigError(
            "nothing to do",
            expected="--out DIR (a dataset) and/or --preview OUT.png (a contact sheet)",
            hint="e.g. lungcancer synth --out data/sim --patients 60",
        )
    cfg = override(
        load_section(config, "synth", SynthConfig),
        patients=patients,
        timepoints_months=_float_list(timepoints, "--timepoints"),
        size=size,
        dims=dims,
        depth=depth,
        classes=classes,
        seed=seed,
        workers=workers,
        dose=dose,
        slice_thickness_mm=thickness,
        off_centre_slices=off_centre,
        slice_offset_max_mm=offset_mm,
        near_threshold_fraction=near_threshold,
        slab_mm=slab_mm,
        class_weights=_float_list(class_weights, "--class-weights"),
        id_prefix=id_prefix,
        followup_pose=followup_pose,
        followup_spread=False if no_followup_spread else None,
        previews=False if no_png else None,
    )
    if out is not None:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("patients", total=cfg.patients)
            result = generate(
                cfg,
                out,
                overwrite=overwrite,
                progress=lambda done, total: bar.update(task, completed=done),
            )
        table = Table(title=f"LungSim: {result.samples} samples in {result.out_dir}")
        for column in ("class", "patients", "samples"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for name in cfg.class_names:
            table.add_row(
                name,
                str(result.patient_counts.get(name, 0)),
                str(result.sample_counts.get(name, 0)),
            )
        console.print(table)
        console.print(f"manifest: {result.manifest_path}")
    if preview is not None:
        path = contact_sheet(cfg, preview, per_class=per_class)
        console.print(f"contact sheet: {path}")


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Demo folder."),
    config: Path | None = typer.Option(
        None, "--config", help="YAML with demo/data/model/train sections (configs/quick.yaml)."
    ),
) -> None:
    """Run the whole toolkit on LungSim and write an HTML report (what `make demo` runs)."""
    from lungcancer.demo import run_demo

    result = run_demo(out, config_path=config, log=console.print)
    console.print(f"[bold green]demo finished[/]: open {result.report_path}")


def main() -> None:
    """Entry point: run the app; a `LungCancerError` becomes a readable message and exit 2."""
    try:
        app(standalone_mode=False)
    except LungCancerError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        sys.exit(2)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code or 0)
    except Exception as exc:
        if _is_usage_error(exc):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        raise


def _is_usage_error(exc: Exception) -> bool:
    """An unknown flag, a missing argument, a bad value: click's, or typer's own copy of click.

    Typer 0.2x vendors click as `typer._click`, whose exceptions derive from
    `typer.TyperException`, not from `click.ClickException`; catching only the latter let
    `--bogus` end in a traceback.
    """
    import click

    kinds: tuple[type[Exception], ...] = (click.ClickException,)
    vendored = getattr(typer, "TyperException", None)
    if isinstance(vendored, type) and issubclass(vendored, Exception):
        kinds += (vendored,)
    return isinstance(exc, kinds) and hasattr(exc, "show") and hasattr(exc, "exit_code")


if __name__ == "__main__":
    main()
