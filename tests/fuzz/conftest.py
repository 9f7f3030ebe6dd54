"""Valid tiny inputs for the fuzz tests to mutate, and a fixed PHI salt."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# fuzz_tools lives beside this file and io_builders in tests/io; with --import-mode=importlib
# neither folder is on sys.path by itself.
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "io"))

from io_builders import ct_dataset, write_ct_series, write_dataset

from lungcancer.io import Scan, write_mask, write_volume


@pytest.fixture(autouse=True)
def _isolated_phi_salt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LUNGCANCER_PHI_SALT", "test-salt")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="session")
def valid_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small valid file of each fuzzed kind, written once per session."""
    folder = tmp_path_factory.mktemp("valid")
    stored = (np.arange(64, dtype=np.int16).reshape(8, 8) * 7) % 2000
    write_dataset(ct_dataset(stored, position_xyz_mm=(0.0, 0.0, 0.0)), folder / "slice.dcm")
    write_ct_series(folder / "series", n_slices=3, rows=8, columns=8)
    volume = Scan(
        array=(np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5) * 9.0) - 1000.0,
        spacing_mm=(2.0, 0.7, 0.8),
        origin_xyz_mm=(-10.0, 5.0, 30.0),
    )
    write_volume(volume, folder / "volume.nrrd")
    write_volume(volume, folder / "volume_raw.nrrd", compress=False)
    mask = np.zeros(volume.shape, dtype=bool)
    mask[1:3, 2:4, 1:4] = True
    write_mask(mask, volume, folder / "mask.nrrd")
    gray = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).astype(np.uint8)
    Image.fromarray(gray).save(folder / "gray.png")
    Image.fromarray(np.stack([gray, gray[::-1], gray.T], axis=-1)).save(folder / "rgb.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "gray16.png")
    return {
        "dicom": folder / "slice.dcm",
        "series": folder / "series",
        "nrrd": folder / "volume.nrrd",
        "nrrd_raw": folder / "volume_raw.nrrd",
        "mask": folder / "mask.nrrd",
        "png": folder / "gray.png",
        "png_rgb": folder / "rgb.png",
        "png16": folder / "gray16.png",
    }


def png_bytes(array: np.ndarray) -> bytes:
    """PNG encoding of a uint8 array."""
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="session")
def manifest_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest-layout dataset: two classes of 32x32 PNGs, one with a lesion mask."""
    root = tmp_path_factory.mktemp("manifest")
    rng = np.random.default_rng(0)
    rows = ["path,label,patient_id,mask_path,split,time_point,slice_index,diameter_mm"]
    for index in range(6):
        label = "benign" if index % 2 else "malignant"
        image = rng.integers(0, 255, size=(32, 32), dtype=np.uint8)
        (root / f"img{index}.png").write_bytes(png_bytes(image))
        mask_path = ""
        if index == 0:
            mask = np.zeros((32, 32), dtype=np.uint8)
            mask[10:16, 12:18] = 255
            (root / "mask0.png").write_bytes(png_bytes(mask))
            mask_path = "mask0.png"
        split = ("train", "val", "test")[index % 3]
        rows.append(f"img{index}.png,{label},p{index // 2},{mask_path},{split},{index},,12.5")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root / "manifest.csv"
