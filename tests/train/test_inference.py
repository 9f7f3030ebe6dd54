"""Loading a checkpoint and predicting datasets and image files with its preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from io_builders import ct_dataset, write_dataset
from train_builders import BlobDataset, make_spec, write_png_dataset

from lungcancer.errors import CheckpointError, ConfigError, ImageReadError, UnsupportedModalityError
from lungcancer.io import Scan, write_mask, write_volume
from lungcancer.train.api import fit
from lungcancer.train.checkpoint import RunFolder, load_checkpoint, save_checkpoint
from lungcancer.train.inference import (
    load_classifier,
    predict_dataset,
    predict_files,
    write_predictions,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = RunFolder(tmp_path_factory.mktemp("run"), echo=False)
    with folder.locked():
        fit(make_spec(epochs=1), BlobDataset(16, seed=1), BlobDataset(8, seed=2), folder)
    return folder.best


def test_load_classifier_rebuilds_the_model_in_eval_mode(checkpoint: Path) -> None:
    clf = load_classifier(checkpoint, precision="fp32")
    assert not clf.model.training
    assert clf.class_names == ("benign", "malignant")
    assert clf.data_config.image_size == 32
    assert clf.model_config.name == "cnn"
    assert clf.checkpoint["epoch"] == 1


def test_predict_dataset_gives_probabilities_in_dataset_order(checkpoint: Path) -> None:
    clf = load_classifier(checkpoint, precision="fp32")
    data = BlobDataset(10, seed=5)
    probs = predict_dataset(clf, data, batch_size=4)
    assert probs.shape == (10, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    with torch.no_grad():
        expected = torch.softmax(clf.model(data.images), dim=1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)


def test_bf16_inference_stays_close_to_fp32(checkpoint: Path) -> None:
    data = BlobDataset(8, seed=5)
    fp32 = predict_dataset(load_classifier(checkpoint, precision="fp32"), data)
    auto = predict_dataset(load_classifier(checkpoint), data)
    assert np.abs(fp32 - auto).max() < 0.05


def test_predict_files_png_and_dicom(checkpoint: Path, tmp_path: Path) -> None:
    png = write_png_dataset(tmp_path / "pngs", per_class=1) / "malignant" / "patient_100_a.png"
    stored = np.full((64, 64), 200, dtype=np.int16)  # -824 HU: lung
    stored[20:40, 20:40] = 1064  # +40 HU: a soft-tissue lesion
    dicom = write_dataset(ct_dataset(stored, position_xyz_mm=(0.0, 0.0, 0.0)), tmp_path / "ct.dcm")
    clf = load_classifier(checkpoint, precision="fp32")
    rows = predict_files(clf, [png, dicom])
    assert [(r.path, r.item, r.aggregate) for r in rows] == [
        (str(png), "image", False),
        (str(dicom), "image", False),
    ]
    for row in rows:
        assert sum(row.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert row.predicted == max(row.probabilities, key=row.probabilities.__getitem__)


def _volume(tmp_path: Path) -> tuple[Path, Path]:
    hu = np.full((12, 48, 48), -850.0, dtype=np.float32)
    hu[:, :, :4] = hu[:, :, -4:] = 40.0  # chest wall around the lung field
    hu[5:8, 20:28, 20:28] = 30.0
    scan = Scan(array=hu, spacing_mm=(2.0, 0.8, 0.8))
    write_volume(scan, tmp_path / "ct.nii.gz")
    mask = np.zeros(hu.shape, dtype=np.uint8)
    mask[5:8, 20:28, 20:28] = 1
    write_mask(mask, scan, tmp_path / "ct_mask.nii.gz")
    return tmp_path / "ct.nii.gz", tmp_path / "ct_mask.nii.gz"


def test_a_volume_gives_rows_per_slice_and_a_per_scan_mean(
    checkpoint: Path, tmp_path: Path
) -> None:
    volume, mask = _volume(tmp_path)
    clf = load_classifier(checkpoint, precision="fp32")
    rows = predict_files(clf, [volume])
    items, scan_row = rows[:-1], rows[-1]
    assert len(items) > 1 and all(r.item.startswith("slice") for r in items)
    assert scan_row.aggregate and scan_row.item == f"scan (mean of {len(items)})"
    for name in clf.class_names:
        mean = np.mean([r.probabilities[name] for r in items])
        assert scan_row.probabilities[name] == pytest.approx(mean, abs=1e-5)

    lesion_rows = predict_files(clf, [volume], mask_paths=[mask])
    assert [r.item.split(" (")[0] for r in lesion_rows] == ["lesion 1"]


def test_predict_refuses_mr_and_non_images(checkpoint: Path, tmp_path: Path) -> None:
    clf = load_classifier(checkpoint, precision="fp32")
    mr = write_dataset(
        ct_dataset(np.zeros((16, 16), np.int16), position_xyz_mm=(0, 0, 0), modality="MR"),
        tmp_path / "mr.dcm",
    )
    with pytest.raises(UnsupportedModalityError):
        predict_files(clf, [mr])
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ImageReadError):
        predict_files(clf, [text])
    with pytest.raises(ConfigError, match="one mask per input"):
        predict_files(clf, [text], mask_paths=[])


def test_write_predictions_csv_and_json(checkpoint: Path, tmp_path: Path) -> None:
    clf = load_classifier(checkpoint, precision="fp32")
    png = write_png_dataset(tmp_path / "pngs", per_class=1) / "benign" / "patient_000_a.png"
    rows = predict_files(clf, [png])
    csv_text = write_predictions(rows, clf.class_names, tmp_path / "p.csv").read_text()
    assert csv_text.splitlines()[0] == "path,item,aggregate,predicted,p_benign,p_malignant"
    loaded = json.loads(write_predictions(rows, clf.class_names, tmp_path / "p.json").read_text())
    assert loaded[0]["item"] == "image" and set(loaded[0]["probabilities"]) == {
        "benign",
        "malignant",
    }
    with pytest.raises(ConfigError, match=r"\.csv or \.json"):
        write_predictions(rows, clf.class_names, tmp_path / "p.xlsx")


def test_weights_that_do_not_fit_the_named_model_are_refused(
    checkpoint: Path, tmp_path: Path
) -> None:
    ckpt = load_checkpoint(checkpoint)
    ckpt["model"]["args"]["num_classes"] = 3
    save_checkpoint(tmp_path / "edited.pt", ckpt)
    with pytest.raises(CheckpointError, match="do not fit the model"):
        load_classifier(tmp_path / "edited.pt")
