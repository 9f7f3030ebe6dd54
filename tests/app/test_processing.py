"""The app's processing on good and bad uploads, without a browser."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from lungcancer.app.processing import (
    PREDICTED,
    ProcessingTimeoutError,
    Processor,
    unexpected_error_message,
)
from lungcancer.app.uploads import UploadLimits
from lungcancer.errors import LungCancerError, UnsupportedModalityError


def test_png_gives_probabilities_and_an_overlay(cnn_bundle: Any, png_upload: Path) -> None:
    processor = Processor(cnn_bundle)
    info = processor.inspect(png_upload)
    assert info.depth == 1 and "png" in info.description
    result = processor.analyse(png_upload, class_name=PREDICTED)
    assert set(result.probabilities) == {"benign", "malignant"}
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.overlay.dtype == np.uint8 and result.overlay.shape[2] == 3
    assert result.lesion_text == "" and result.localisation_text == ""
    chosen = processor.analyse(png_upload, class_name="benign", method="gradcampp")
    assert chosen.explained_class == "benign"


def test_volume_with_mask_measures_the_lesion_on_its_slice(
    cnn_bundle: Any, nrrd_upload: tuple[Path, Path]
) -> None:
    image, mask = nrrd_upload
    processor = Processor(cnn_bundle)
    assert processor.inspect(image).depth == 5
    result = processor.analyse(image, mask_upload=mask)
    assert result.slice_index == 2  # the lesion spans slices 1-3
    assert "greatest diameter" in result.lesion_text and "mm" in result.lesion_text
    assert "pointing game" in result.localisation_text
    picked = processor.analyse(image, slice_index=99)
    assert picked.slice_index == 4  # clamped to the last slice


def test_zipped_series_and_dicom_are_analysed(
    cnn_bundle: Any, series_zip: Path, dicom_upload: Path
) -> None:
    processor = Processor(cnn_bundle)
    assert processor.analyse(series_zip, slice_index=1).slice_index == 1
    assert processor.analyse(dicom_upload).slice_index == 0


def test_mr_dicom_gives_a_readable_message(cnn_bundle: Any, mr_upload: Path) -> None:
    with pytest.raises(UnsupportedModalityError, match="MR"):
        Processor(cnn_bundle).analyse(mr_upload)


def test_missing_upload_is_a_readable_message(cnn_bundle: Any, tmp_path: Path) -> None:
    with pytest.raises(LungCancerError, match="no image was uploaded"):
        Processor(cnn_bundle).analyse(tmp_path / "gone.png")


class _Slow(nn.Module):
    gradcam_layer = "conv"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(1.0)
        return self.conv(x).mean((2, 3))


def test_slow_processing_stops_at_the_timeout(cnn_bundle: Any, png_upload: Path) -> None:
    processor = Processor(replace(cnn_bundle, model=_Slow()), UploadLimits(timeout_s=0.2))
    started = time.monotonic()
    with pytest.raises(ProcessingTimeoutError, match="took too long"):
        processor.analyse(png_upload)
    assert time.monotonic() - started < 1.0
    processor.close()


def test_unexpected_errors_log_no_message(caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise ValueError("/tmp/gradio/abc/Doe_Jane.dcm could not be parsed")
    except ValueError as exc:
        with caplog.at_level(logging.ERROR):
            message = unexpected_error_message(exc)
    assert "ValueError" in message and "Doe" not in message
    assert "ValueError" in caplog.text and "Doe" not in caplog.text
