"""Writing LungSim samples: NRRD image and mask, PNG preview, JSON record, manifest CSV.

Paths in the manifest and the records are relative to the dataset folder, so the folder can be
moved. The manifest has `lungcancer.data.index.MANIFEST_COLUMNS` first (split left empty:
`lungcancer.data` splits by patient) and LungSim's own columns after them.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from lungcancer.data.index import MANIFEST_COLUMNS
from lungcancer.io import write_mask, write_volume
from lungcancer.io.atomic import atomic_write_bytes, atomic_write_text
from lungcancer.synth.case import SimSample

# LungSim's columns after the standard ones, in this order.
EXTRA_COLUMNS = (
    "t", "n", "m", "stage_group", "stage", "diameter_mm", "volume_ml", "nodule_type", "margin",
    "histology", "vdt_days", "slice_offset_mm", "lesion_center_z", "lesion_center_y",
    "lesion_center_x", "synthetic", "requested_class", "model_diameter_mm", "invasion", "lobe",
    "calcification", "m1a_findings", "slice_thickness_mm", "pixel_spacing_mm", "dose",
    "slice_index",
)  # fmt: skip
LUNG_WINDOW_HU = (-600.0, 1500.0)  # centre, width


def lung_window_u8(hu: np.ndarray) -> np.ndarray:
    """HU to 8-bit grey in the lung window (W1500 / L-600)."""
    centre, width = LUNG_WINDOW_HU
    unit = np.clip((hu - (centre - width / 2)) / width, 0.0, 1.0)
    return np.asarray(np.rint(unit * 255.0).astype(np.uint8))


def preview_slice(sample: SimSample) -> np.ndarray:
    """The slice a preview shows: the sample's own (2D) or the lesion-centred one (3D)."""
    array = sample.image.array
    return np.asarray(array[array.shape[0] // 2])


def png_bytes(gray_u8: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG, deterministic bytes."""
    buf = io.BytesIO()
    Image.fromarray(gray_u8, mode="L").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def write_sample(sample: SimSample, out_dir: Path, *, previews: bool = True) -> dict[str, str]:
    """Write one sample's files under `out_dir/<patient_id>/` and return its manifest row.

    Args:
        sample: from `render_case` / `render_patient`.
        out_dir: the dataset folder.
        previews: also write the PNG preview.

    Returns:
        The manifest row (every value a string; paths relative to `out_dir`).
    """
    pid = str(sample.record["patient_id"])
    rel = Path(pid)
    image_rel = rel / f"{sample.name}.nrrd"
    mask_rel = rel / f"{sample.name}_mask.nrrd"
    write_volume(sample.image, out_dir / image_rel)
    write_mask(sample.mask, sample.image, out_dir / mask_rel)
    record: dict[str, str | float | int] = {
        "path": image_rel.as_posix(),
        "mask_path": mask_rel.as_posix(),
        **sample.record,
    }
    if previews:
        png_rel = rel / f"{sample.name}.png"
        atomic_write_bytes(out_dir / png_rel, png_bytes(lung_window_u8(preview_slice(sample))))
        record["preview_path"] = png_rel.as_posix()
    atomic_write_text(out_dir / rel / f"{sample.name}.json", json.dumps(record, indent=1) + "\n")
    row = {column: "" for column in (*MANIFEST_COLUMNS, *EXTRA_COLUMNS)}
    for column in row:
        if column in record:
            row[column] = str(record[column])
    return row


def write_manifest(rows: list[dict[str, str]], path: Path) -> None:
    """Write the manifest CSV atomically (standard columns first, then LungSim's)."""
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=[*MANIFEST_COLUMNS, *EXTRA_COLUMNS], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
