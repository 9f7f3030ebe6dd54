"""Tiny uploads for the app tests: a PNG slice, CT and MR DICOM files, a zipped series, volumes."""

from __future__ import annotations

import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the name every SimpleITK user knows)
import torch
from PIL import Image
from torch import nn

from lungcancer.config import DataConfig
from lungcancer.models import create_model

# The DICOM and checkpoint builders live with the io and progression tests; with
# --import-mode=importlib those folders are not on sys.path by themselves.
sys.path.insert(0, str(Path(__file__).parents[1] / "io"))
sys.path.insert(0, str(Path(__file__).parents[1] / "progression"))
from gan_builders import tiny_config, write_untrained_checkpoint, write_untrained_classifier
from io_builders import ct_dataset, write_dataset


@pytest.fixture(autouse=True)
def _isolated_phi_salt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LUNGCANCER_PHI_SALT", "test-salt")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def phantom_hu(size: int = 32, depth: int = 1) -> np.ndarray:
    """Air outside, soft tissue body, two dark lungs and a bright nodule (z-y-x, HU)."""
    yy, xx = np.mgrid[:size, :size] / size
    plane = np.full((size, size), -1000.0, dtype=np.float32)
    plane[(yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.2] = 40.0
    plane[((yy - 0.5) / 1.4) ** 2 + (xx - 0.32) ** 2 < 0.015] = -850.0
    plane[((yy - 0.5) / 1.4) ** 2 + (xx - 0.68) ** 2 < 0.015] = -850.0
    plane[(yy - 0.45) ** 2 + (xx - 0.3) ** 2 < 0.003] = 30.0
    return np.repeat(plane[None], depth, axis=0)


def write_dicom(
    path: Path,
    hu: np.ndarray,
    *,
    modality: str = "CT",
    z_mm: float = 0.0,
    series_uid: str = "1.2.826.0.1.3680043.99.1",
    instance: int = 1,
) -> Path:
    """One DICOM slice of `hu` (y-x), with a planted patient name that must never show."""
    ds = ct_dataset(
        (hu + 1024).astype(np.int16),
        position_xyz_mm=(0.0, 0.0, z_mm),
        pixel_spacing_mm=(0.8, 0.8),
        modality=modality,
        series_uid=series_uid,
        instance_number=instance,
        slice_thickness_mm=2.0,
    )
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "SECRET-ID-42"
    return write_dataset(ds, path)


@pytest.fixture
def png_upload(tmp_path: Path) -> Path:
    grey = np.clip((phantom_hu()[0] + 1000) / 1100, 0, 1)
    path = tmp_path / "Doe_Jane_slice.jpg"  # the name lies: the content is PNG
    Image.fromarray((grey * 255).astype(np.uint8)).save(path, format="PNG")
    return path


@pytest.fixture
def dicom_upload(tmp_path: Path) -> Path:
    return write_dicom(tmp_path / "ct_no_extension", phantom_hu()[0])


@pytest.fixture
def mr_upload(tmp_path: Path) -> Path:
    return write_dicom(tmp_path / "mr.dcm", phantom_hu()[0], modality="MR")


@pytest.fixture
def series_zip(tmp_path: Path) -> Path:
    volume = phantom_hu(depth=4)
    folder = tmp_path / "Doe_Jane_series"
    files = [
        write_dicom(folder / f"s{i}.dcm", volume[i], z_mm=2.0 * i, instance=i + 1)
        for i in range(len(volume))
    ]
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in files:
            zf.write(file, arcname=f"Doe_Jane/{file.name}")
    return archive


def _volume(volume_hu: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(volume_hu.astype(np.int16))
    image.SetSpacing((0.8, 0.8, 2.0))
    return image


@pytest.fixture
def nifti_upload(tmp_path: Path) -> Path:
    path = tmp_path / "volume.nii.gz"
    sitk.WriteImage(_volume(phantom_hu(depth=5)), str(path))
    renamed = tmp_path / "volume.png"  # a misleading extension; content decides
    path.rename(renamed)
    return renamed


@pytest.fixture
def nrrd_upload(tmp_path: Path) -> tuple[Path, Path]:
    """A NRRD volume and its lesion mask."""
    volume = phantom_hu(depth=5)
    image_path = tmp_path / "volume.nrrd"
    sitk.WriteImage(_volume(volume), str(image_path))
    mask = np.zeros(volume.shape, dtype=np.uint8)
    mask[1:4, 12:17, 7:12] = 1
    mask_image = sitk.GetImageFromArray(mask)
    mask_image.SetSpacing((0.8, 0.8, 2.0))
    mask_path = tmp_path / "mask.nrrd"
    sitk.WriteImage(mask_image, str(mask_path))
    return image_path, mask_path


@dataclass(frozen=True)
class Bundle:
    """The fields of a loaded classifier the app uses."""

    model: nn.Module
    class_names: tuple[str, ...]
    data_config: DataConfig


@pytest.fixture(scope="session")
def cnn_bundle() -> Bundle:
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=2).eval()
    return Bundle(model, ("benign", "malignant"), DataConfig(image_size=32))


@pytest.fixture(scope="session")
def classifier_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 2D `cnn` checkpoint (32 px, two classes) in the training format."""
    path = tmp_path_factory.mktemp("clf") / "best.pt"
    return write_untrained_classifier(path, 32, ("benign", "malignant"))


@pytest.fixture(scope="session")
def gan_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny progression GAN (patch 32) in the progression format."""
    return write_untrained_checkpoint(tmp_path_factory.mktemp("gan") / "gan.pt", tiny_config())
