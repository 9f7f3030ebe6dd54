"""The progression section: the GAN's strip, GIF and timeline for an uploaded lesion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from lungcancer.app.processing import Processor
from lungcancer.app.progression_tab import TIMELINE_HEADERS, ProgressionRunner
from lungcancer.errors import LungCancerError


@pytest.fixture
def runner(cnn_bundle: Any, gan_checkpoint: Path, classifier_checkpoint: Path) -> ProgressionRunner:
    return ProgressionRunner(gan_checkpoint, classifier_checkpoint, Processor(cnn_bundle))


def test_simulation_of_a_masked_lesion(
    runner: ProgressionRunner, nrrd_upload: tuple[Path, Path]
) -> None:
    image, mask = nrrd_upload
    view = runner.run(image, mask, "0,6,12", "adeno")
    assert view.strip.is_file() and view.gif.is_file()
    with Image.open(view.gif) as gif:
        assert gif.n_frames == 3
    assert [row[0] for row in view.timeline] == [0.0, 6.0, 12.0]
    assert all(len(row) == len(TIMELINE_HEADERS) for row in view.timeline)
    diameters = [row[1] for row in view.timeline]
    assert diameters == sorted(diameters)  # the lesion grows
    assert all(row[7].startswith(("benign", "malignant")) for row in view.timeline)
    assert any("assumed" in note for note in view.notes)
    runner.close()
    assert not view.strip.exists()


def test_simulation_needs_a_lesion_and_ct_in_hu(
    runner: ProgressionRunner, nrrd_upload: tuple[Path, Path], png_upload: Path
) -> None:
    image, _ = nrrd_upload
    with pytest.raises(LungCancerError, match="where the lesion is"):
        runner.run(image, None, "0,6", "adeno")
    view = runner.run(image, None, "0,6", "squamous", "2,14,9", 6.0)
    assert len(view.timeline) == 2
    with pytest.raises(LungCancerError, match="Hounsfield"):
        runner.run(png_upload, None, "0,6", "adeno", "0,14,9", 6.0)
    with pytest.raises(LungCancerError):
        runner.run(image, None, "soon", "adeno", "2,14,9", 6.0)
    runner.close()
