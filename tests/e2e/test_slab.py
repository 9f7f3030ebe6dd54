"""2.5D input end to end: LungSim slabs -> train -> predict, explain and ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lungcancer.cli import app
from lungcancer.config import DataConfig, ModelConfig, TrainConfig


@pytest.fixture(scope="module")
def slab_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from lungcancer.synth.api import SynthConfig, generate
    from lungcancer.train.api import train

    root = tmp_path_factory.mktemp("slab")
    cfg = SynthConfig(patients=8, size=48, classes="binary", off_centre_slices=0, slab_mm=3.0)
    manifest = generate(cfg, root / "data").manifest_path
    result = train(
        DataConfig(source=str(manifest), image_size=32, cache_dir="", slab_slices=3),
        ModelConfig(name="cnn", in_chans=3),
        TrainConfig(out_dir=str(root / "run"), epochs=1, batch_size=4, precision="fp32"),
    )
    return result.best_checkpoint, manifest


def test_a_slab_model_predicts_explains_and_exports(
    slab_run: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, manifest = slab_run
    from lungcancer.io import read_image

    # The largest nodule: at 48 px (8 mm pixels) the smallest are one voxel.
    masks = sorted(manifest.parent.glob("sim-*/*_m0_s0_mask.nrrd"))
    mask = max(masks, key=lambda m: float(read_image(m).array.sum()))
    image = mask.with_name(mask.name.replace("_mask.nrrd", ".nrrd"))
    runner = CliRunner()
    out = tmp_path / "pred.json"
    done = runner.invoke(
        app, ["predict", str(checkpoint), str(image), "--mask", str(mask), "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    import json

    rows = json.loads(out.read_text())
    probs = np.array([list(r["probabilities"].values()) for r in rows])
    assert probs.shape[1] == 2 and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    explained = runner.invoke(
        app, ["explain", str(checkpoint), str(image), "--out", str(tmp_path / "cam")]
    )
    assert explained.exit_code == 0, explained.output
    assert list((tmp_path / "cam").glob("*_gradcam.png"))
    exported = runner.invoke(
        app, ["export", str(checkpoint), "--out", str(tmp_path / "model.onnx")]
    )
    assert exported.exit_code == 0, exported.output
    assert "(3, 32, 32)" in exported.output
