"""Mutated manifest CSVs end in an index or a `LungCancerError`, never a crash or a hang."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from fuzz_tools import GARBAGE_TEXT, bounded, ends_cleanly, fuzz_settings, mutated
from hypothesis import given
from hypothesis import strategies as st

from lungcancer.data import load_index
from lungcancer.errors import DatasetError

EXTRA_COLUMNS = ("lesion_center_z", "lesion_center_y", "lesion_center_x", "slice_index")
CELL_VALUES = (
    *GARBAGE_TEXT,
    "img0.png",
    "mask0.png",
    "gray.png",
    "train",
    "TEST",
    "holdout",
    "benign",
    "malignant",
    "12.5",
    "3",
    "a\nb",
    "=cmd|' /C calc'!A0",
)


def table(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def render(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


@st.composite
def garbage_cells(draw: st.DrawFn, text: str) -> str:
    """The manifest with cells replaced, columns added or dropped, and rows ragged."""
    rows = table(text)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(("cell", "cell", "column", "drop", "ragged", "duplicate")))
        if action == "cell":
            row = draw(st.integers(0, len(rows) - 1))
            if rows[row]:
                column = draw(st.integers(0, len(rows[row]) - 1))
                rows[row][column] = draw(st.sampled_from(CELL_VALUES))
        elif action == "column":
            rows[0].append(draw(st.sampled_from(EXTRA_COLUMNS)))
            for row in rows[1:]:
                row.append(draw(st.sampled_from(CELL_VALUES)))
        elif action == "drop" and rows[0]:
            column = draw(st.integers(0, len(rows[0]) - 1))
            rows = [row[:column] + row[column + 1 :] for row in rows]
        elif action == "ragged" and len(rows) > 1:
            row = draw(st.integers(1, len(rows) - 1))
            if draw(st.booleans()):
                rows[row] = rows[row][: draw(st.integers(0, len(rows[row])))]
            else:
                rows[row] = rows[row] + draw(st.lists(st.sampled_from(CELL_VALUES), max_size=3))
        elif action == "duplicate":
            rows.append(list(rows[draw(st.integers(0, len(rows) - 1))]))
    return render(rows)


@fuzz_settings(120)
@given(data=st.data())
def test_mutated_manifest_bytes(
    manifest_dataset: Path, tmp_path: Path, data: st.DataObject
) -> None:
    valid = manifest_dataset.read_bytes()
    path = manifest_dataset.parent / f"fuzzed-{tmp_path.name}.csv"
    path.write_bytes(data.draw(mutated(valid)))
    try:
        ends_cleanly(lambda: load_index(path))
    finally:
        path.unlink()


@fuzz_settings(150)
@given(data=st.data())
def test_manifest_cells_hold_garbage(
    manifest_dataset: Path, tmp_path: Path, data: st.DataObject
) -> None:
    valid = manifest_dataset.read_text(encoding="utf-8")
    path = manifest_dataset.parent / f"garbage-{tmp_path.name}.csv"
    path.write_text(data.draw(garbage_cells(valid)), encoding="utf-8")
    try:
        ends_cleanly(lambda: load_index(path))
    finally:
        path.unlink()


def test_a_row_longer_than_the_header_is_a_dataset_error(
    manifest_dataset: Path, tmp_path: Path
) -> None:
    rows = table(manifest_dataset.read_text(encoding="utf-8"))
    rows[2].append("stray cell")
    path = manifest_dataset.parent / f"long-{tmp_path.name}.csv"
    path.write_text(render(rows), encoding="utf-8")
    try:
        with pytest.raises(DatasetError, match="line 3 has more cells"), bounded():
            load_index(path)
    finally:
        path.unlink()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("slice_index", "nan"),
        ("slice_index", "inf"),
        ("lesion_center_z", "nan"),
        ("lesion_center_z", "-inf"),
    ],
)
def test_non_finite_numbers_are_a_dataset_error(
    manifest_dataset: Path, tmp_path: Path, column: str, value: str
) -> None:
    rows = table(manifest_dataset.read_text(encoding="utf-8"))
    extra = [c for c in ("lesion_center_z", "lesion_center_y", "lesion_center_x") if c != column]
    header = [*rows[0], *([column] if column not in rows[0] else []), *extra]
    body = []
    for row in rows[1:]:
        cells = dict(zip(rows[0], row, strict=True))
        cells.update({column: value, **{c: "4" for c in extra}})
        body.append([cells.get(name, "") for name in header])
    path = manifest_dataset.parent / f"numbers-{tmp_path.name}.csv"
    path.write_text(render([header, *body]), encoding="utf-8")
    try:
        with pytest.raises(DatasetError, match=column), bounded():
            load_index(path)
    finally:
        path.unlink()
