"""End-to-end fixtures: a small LungSim dataset and a classifier trained on it for one epoch."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from lungcancer.config import DataConfig, ModelConfig, TrainConfig
from lungcancer.io import read_image


@pytest.fixture(scope="session", autouse=True)
def _isolated_phi_salt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("LUNGCANCER_PHI_SALT", "XDG_CACHE_HOME")}
    os.environ["LUNGCANCER_PHI_SALT"] = "test-salt"
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def lungsim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LungSim dataset: 12 patients, benign vs malignant nodules, 64 px, one slice each."""
    from lungcancer.synth.api import SynthConfig, generate

    out = tmp_path_factory.mktemp("lungsim") / "data"
    cfg = SynthConfig(patients=12, size=64, classes="binary", off_centre_slices=1, seed=3)
    return generate(cfg, out).manifest_path


@pytest.fixture(scope="session")
def lungsim_rows(lungsim: Path) -> list[dict[str, str]]:
    with open(lungsim, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def trained_checkpoint(lungsim: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `cnn` trained on the LungSim manifest for one epoch at 32x32 (the training API)."""
    from lungcancer.train.api import train

    run = tmp_path_factory.mktemp("run") / "cnn"
    result = train(
        DataConfig(source=str(lungsim), image_size=32, cache_dir="", augment=False),
        ModelConfig(name="cnn"),
        TrainConfig(out_dir=str(run), epochs=1, batch_size=8, device="cpu", precision="fp32"),
    )
    return result.best_checkpoint


@pytest.fixture(scope="session")
def malignant_case(lungsim: Path, lungsim_rows: list[dict[str, str]]) -> dict[str, Path]:
    """A malignant LungSim sample: its PNG preview, NRRD slice and lesion mask."""
    row = next(r for r in lungsim_rows if r["label"] == "malignant")
    nrrd = lungsim.parent / row["path"]
    return {
        "png": nrrd.with_suffix(".png"),
        "nrrd": nrrd,
        "mask": lungsim.parent / row["mask_path"],
    }


@pytest.fixture(scope="session")
def dicom_slice(malignant_case: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The malignant LungSim slice as a CT DICOM file (written with pydicom)."""
    scan = read_image(malignant_case["nrrd"])
    hu = np.clip(scan.array[0], -1024, 3000)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "SECRET-ID-42"
    ds.SliceThickness = scan.spacing_mm[0]
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [scan.spacing_mm[1], scan.spacing_mm[2]]
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "-1024"
    ds.PixelData = np.round(hu + 1024).astype("<i2").tobytes()
    path = tmp_path_factory.mktemp("dicom") / "Doe_Jane_chest"
    ds.save_as(path, enforce_file_format=True)
    return path
