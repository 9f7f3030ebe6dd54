"""The `lungcancer` command: parse flags, call the API, print. No logic lives here."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from lungcancer.errors import LungCancerError

app = typer.Typer(
    name="lungcancer",
    help="Lung cancer classification and progression simulation on CT.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect, split and audit datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)


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
    except Exception as exc:  # click's usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
