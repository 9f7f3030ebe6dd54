"""A tiny trained checkpoint (custom CNN, 32x32, two classes) and images to predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the name every SimpleITK user knows)
import torch
from PIL import Image

from lungcancer.config import DataConfig, ModelConfig, TrainConfig, to_dict
from lungcancer.models import create_model
from lungcancer.train.checkpoint import FORMAT, VERSION, save_checkpoint

CLASSES = ("benign", "malignant")


@pytest.fixture(autouse=True)
def _isolated_phi_salt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LUNGCANCER_PHI_SALT", "test-salt")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _batch(generator: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey noise; class 1 images carry a bright 6x6 blob somewhere."""
    x = torch.rand(n, 1, 32, 32, generator=generator) * 0.4
    y = torch.randint(0, 2, (n,), generator=generator)
    for i in torch.nonzero(y).flatten().tolist():
        r, c = torch.randint(2, 24, (2,), generator=generator).tolist()
        x[i, 0, r : r + 6, c : c + 6] = 1.0
    return x, y


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `cnn` after a few training steps (non-trivial BN statistics), in checkpoint format."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    args = {"in_chans": 1, "num_classes": 2, "spatial_dims": 2}
    model = create_model("cnn", **args)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(10):
        x, y = _batch(generator, 16)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(
        path,
        {
            "format": FORMAT,
            "version": VERSION,
            "model": {"name": "cnn", "args": args},
            "class_names": list(CLASSES),
            "data_config": to_dict(DataConfig(image_size=32, classes=CLASSES)),
            "model_config": to_dict(ModelConfig(name="cnn")),
            "train_config": to_dict(TrainConfig(epochs=1)),
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        },
    )
    return path


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    """A PNG with a blob, a PNG without, and a 6-slice NRRD volume with a lesion mask."""
    rng = np.random.default_rng(1)
    out = {}
    for name, blob in (("blob", True), ("plain", False)):
        grey = rng.uniform(0, 0.4, size=(32, 32))
        if blob:
            grey[10:16, 18:24] = 1.0
        out[name] = tmp_path / f"{name}.png"
        Image.fromarray((grey * 255).astype(np.uint8)).save(out[name])
    volume = rng.uniform(-1000, -700, size=(6, 40, 40)).astype(np.int16)
    volume[2:4, 12:20, 20:28] = 40
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((0.8, 0.8, 2.0))
    out["volume"] = tmp_path / "volume.nrrd"
    sitk.WriteImage(image, str(out["volume"]))
    mask = sitk.GetImageFromArray((volume > 0).astype(np.uint8))
    mask.SetSpacing((0.8, 0.8, 2.0))
    out["mask"] = tmp_path / "mask.nrrd"
    sitk.WriteImage(mask, str(out["mask"]))
    return out
