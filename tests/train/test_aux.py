"""Auxiliary targets: their encoding, their loss, and runs that learn, save and resume them."""

from __future__ import annotations

import csv
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from test_api import assert_same_weights, run_fit
from torch import nn
from train_builders import BlobDataset, BlobsWithFields, BlobsWithMasks

from lungcancer.config import TrainConfig
from lungcancer.data.index import Sample
from lungcancer.errors import ConfigError
from lungcancer.models import create_model
from lungcancer.models.registry import Classifier
from lungcancer.train.api import TrainResult
from lungcancer.train.aux import (
    AuxSpec,
    WithAux,
    aux_loss,
    aux_training,
    build_aux_spec,
    mask_loss,
)
from lungcancer.train.checkpoint import load_checkpoint
from lungcancer.train.inference import load_classifier
from lungcancer.train.precision import PrecisionPolicy


def sample(**extra: str) -> Sample:
    return Sample(path="/x.png", label="a", extra=dict(extra))


def test_numeric_columns_are_z_scored_and_text_columns_become_classes() -> None:
    samples = [sample(d="10", t="T1a"), sample(d="30", t="none"), sample(d="", t="nan")]
    spec = build_aux_spec(samples, ["d", "t"])
    d, t = spec.columns
    assert d.numeric and d.mean == 20.0 and d.std == 10.0
    # "none" is a finding (e.g. no invasion), not a missing cell.
    assert t.categories == ("T1a", "none") and spec.outputs == 1 + 2
    encoded = torch.stack([spec.encode(s) for s in samples])
    assert encoded[:2].tolist() == [[-1.0, 0.0], [1.0, 1.0]]
    assert torch.isnan(encoded[2]).all()  # missing cells stay missing
    # A category never seen in training is missing too, not a wrong class.
    assert math.isnan(float(spec.encode(sample(d="5", t="T4"))[1]))
    assert AuxSpec.from_dict(spec.to_dict()) == spec


def test_a_column_without_values_is_refused_with_the_columns_that_exist() -> None:
    samples = [sample(diameter_mm="12", t=""), sample(diameter_mm="3", t="")]
    with pytest.raises(ConfigError, match="'diamter_mm'") as info:
        build_aux_spec(samples, ["diamter_mm"])
    assert "diameter_mm" in str(info.value)
    with pytest.raises(ConfigError, match="'t' has no value"):
        build_aux_spec(samples, ["t"])


def test_the_loss_counts_missing_targets_as_zero_in_a_batch_mean() -> None:
    spec = build_aux_spec([sample(d="0", k="a"), sample(d="2", k="b")], ["d", "k"])
    outputs = torch.tensor([[0.5, 2.0, -1.0], [3.0, 0.0, 1.0]], requires_grad=True)
    targets = torch.tensor([[1.0, math.nan], [math.nan, 1.0]])
    # Each column: its present samples' losses summed over the whole batch of 2.
    expected = (
        F.smooth_l1_loss(outputs[:1, 0], targets[:1, 0]) / 2
        + F.cross_entropy(outputs[1:, 1:], torch.tensor([1])) / 2
    ) / 2
    torch.testing.assert_close(aux_loss(outputs, targets, spec), expected)
    nothing = aux_loss(outputs, torch.full((2, 2), math.nan), spec)
    assert float(nothing.detach()) == 0.0
    nothing.backward()  # no target in the batch still back-propagates (zeros)
    assert outputs.grad is not None and not outputs.grad.any()


def test_a_run_learns_the_targets_but_saves_the_plain_classifier(tmp_path: Path) -> None:
    aux_run = run_fit(
        tmp_path / "aux",
        BlobsWithFields(24, seed=1),
        BlobDataset(8, seed=2),
        aux_targets=("side_mm", "kind"),
    )
    plain_run = run_fit(tmp_path / "plain", BlobsWithFields(24, seed=1), BlobDataset(8, seed=2))
    aux_ckpt = load_checkpoint(aux_run.last_checkpoint)
    plain_ckpt = load_checkpoint(plain_run.last_checkpoint)
    # The classifier has the same layout with or without the head...
    assert aux_ckpt["state_dict"].keys() == plain_ckpt["state_dict"].keys()
    # ...but the auxiliary loss changed what it learnt.
    assert not torch.equal(
        aux_ckpt["state_dict"]["fc.weight"], plain_ckpt["state_dict"]["fc.weight"]
    )
    saved = aux_ckpt["aux"]
    assert [c["name"] for c in saved["spec"]["columns"]] == ["side_mm", "kind"]
    assert saved["state_dict"]["fc.weight"].shape[0] == 1 + 2
    assert "aux" not in plain_ckpt
    assert load_classifier(aux_run.best_checkpoint).class_names == ("benign", "malignant")
    log = (tmp_path / "aux" / "train.log").read_text()
    assert "auxiliary targets, loss weight 0.5: side_mm (numeric), kind (2 classes)" in log


def test_resume_with_aux_targets_continues_exactly(tmp_path: Path) -> None:
    def go(out: Path, **kwargs: object) -> TrainResult:
        return run_fit(
            out,
            BlobsWithFields(24, seed=1),
            BlobDataset(8, seed=2),
            epochs=3,
            aux_targets=("side_mm", "kind"),
            **kwargs,
        )

    straight = go(tmp_path / "straight")
    go(tmp_path / "resumed", max_minutes=1e-6)
    resumed = go(tmp_path / "resumed", resume=True)
    assert_same_weights(straight.last_checkpoint, resumed.last_checkpoint)
    a = load_checkpoint(straight.last_checkpoint)["aux"]["state_dict"]
    b = load_checkpoint(resumed.last_checkpoint)["aux"]["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_other_aux_targets_is_refused(tmp_path: Path) -> None:
    data = {"train_set": BlobsWithFields(24, seed=1), "val_set": BlobDataset(8, seed=2)}
    run_fit(tmp_path / "run", **data, aux_targets=("side_mm",), max_minutes=1e-6)
    for other in [("kind",), ()]:
        with pytest.raises(ConfigError, match="other auxiliary targets") as info:
            run_fit(tmp_path / "run", **data, aux_targets=other, resume=True)
        assert "['side_mm']" in str(info.value)


def test_a_dataset_without_manifest_fields_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="per-sample manifest fields"):
        run_fit(tmp_path / "run", aux_targets=("diameter_mm",))
    with pytest.raises(ConfigError, match="aux_weight"):
        run_fit(
            tmp_path / "run2", BlobsWithFields(24, seed=1), aux_targets=("kind",), aux_weight=0.0
        )


def write_manifest_dataset(root: Path, n: int = 24, size: int = 32) -> Path:
    """PNGs listed in a manifest with a diameter and a T column (empty for the benign ones)
    and a lesion mask PNG per image (empty for the benign ones)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "patient_id", "diameter_mm", "t", "mask_path"])
        for i in range(n):
            malignant = i % 2 == 1
            side = int(rng.integers(6, 14)) if malignant else 0
            image = rng.normal(0.3, 0.08, size=(size, size))
            image[4 : 4 + side, 4 : 4 + side] += 0.6
            Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(root / f"{i}.png")
            mask = np.zeros((size, size), np.uint8)
            mask[4 : 4 + side, 4 : 4 + side] = 255
            Image.fromarray(mask).save(root / f"{i}_mask.png")
            label = "malignant" if malignant else "benign"
            t = ("T1a" if side < 10 else "T1b") if malignant else ""
            writer.writerow([f"{i}.png", label, f"p{i:02d}", side, t, f"{i}_mask.png"])
    return root / "manifest.csv"


def test_the_cli_trains_with_aux_targets_from_a_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lungcancer.cli import main

    manifest = write_manifest_dataset(tmp_path / "data")
    common = [
        "lungcancer", "train", "--data", str(manifest), "--model", "cnn", "--epochs", "1",
        "--batch-size", "4", "--image-size", "32", "--threads", "1", "--precision", "fp32",
    ]  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        sys, "argv", [*common, "--out", str(tmp_path / "run"), "--aux-targets", "diameter_mm,t"]
    )
    main()
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["train_config"]["aux_targets"] == ["diameter_mm", "t"]
    assert [c["categories"] for c in ckpt["aux"]["spec"]["columns"]] == [[], ["T1a", "T1b"]]

    monkeypatch.setattr(
        sys, "argv", [*common, "--out", str(tmp_path / "bad"), "--aux-targets", "n"]
    )
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "auxiliary target 'n' has no value" in err and "diameter_mm" in err

    # The lesion-mask loss alone, from the manifest's mask files.
    monkeypatch.setattr(
        sys, "argv", [*common, "--out", str(tmp_path / "masks"), "--aux-mask-weight", "1"]
    )
    main()
    ckpt = load_checkpoint(tmp_path / "masks" / "last.pt")
    assert ckpt["train_config"]["aux_mask_weight"] == 1.0
    assert ckpt["aux"]["state_dict"]["mask.weight"].shape[:2] == (1, 160)


def test_the_mask_loss_scores_cells_the_lesion_reaches_and_skips_unknown_masks() -> None:
    masks = torch.zeros(3, 1, 8, 8)
    masks[0, 0, 1, 6] = 1.0  # one pixel in the top-right cell of a 2 x 2 grid
    masks[1, 0, :, :] = 0.3  # a faint share everywhere: under half a pixel, no lesion
    masks[2] = float("nan")  # no mask file for this sample
    cells = torch.tensor([[-9.0, 9.0], [-9.0, -9.0]])
    right = torch.stack([cells, torch.full((2, 2), -9.0), torch.zeros(2, 2)])[:, None]
    loss = mask_loss(right, masks)
    assert float(loss) < 1e-3  # confident and right on both known samples; the third skipped
    wrong = right.clone()
    wrong[0, 0, 0, 1] = -9.0  # misses the lesion's cell
    expected = F.binary_cross_entropy_with_logits(torch.tensor(-9.0), torch.tensor(1.0)) / 4 / 3
    torch.testing.assert_close(mask_loss(wrong, masks), expected, atol=1e-3, rtol=1e-3)
    logits = torch.zeros(3, 1, 2, 2, requires_grad=True)
    mask_loss(logits, torch.full_like(masks, float("nan"))).backward()
    assert logits.grad is not None and not logits.grad.any()


def test_a_run_with_a_mask_loss_saves_the_plain_classifier_and_resumes_exactly(
    tmp_path: Path,
) -> None:
    def go(out: Path, **kwargs: object) -> TrainResult:
        data = BlobsWithMasks(24, seed=1)
        result = run_fit(out, data, BlobDataset(8, seed=2), epochs=3, aux_mask_weight=1.0, **kwargs)
        assert data.mask_calls > 0  # batches came with masks
        return result

    straight = go(tmp_path / "straight")
    plain = run_fit(tmp_path / "plain", BlobsWithFields(24, seed=1), BlobDataset(8, seed=2))
    ckpt = load_checkpoint(straight.last_checkpoint)
    assert ckpt["state_dict"].keys() == load_checkpoint(plain.last_checkpoint)["state_dict"].keys()
    head = ckpt["aux"]["state_dict"]
    assert head["mask.weight"].shape[:2] == (1, 160)  # the cnn's last feature map
    assert "fc.weight" not in head  # no column targets, no column layer
    log = (tmp_path / "straight" / "train.log").read_text()
    assert "auxiliary targets, loss weight 0.5: none; lesion mask per feature-map cell" in log
    go(tmp_path / "resumed", max_minutes=1e-6)
    resumed = go(tmp_path / "resumed", resume=True)
    assert_same_weights(straight.last_checkpoint, resumed.last_checkpoint)
    b = load_checkpoint(resumed.last_checkpoint)["aux"]["state_dict"]
    assert torch.equal(head["mask.weight"], b["mask.weight"])
    # Switching the mask loss off (or on) on resume is refused.
    with pytest.raises(ConfigError, match="lesion-mask loss on"):
        run_fit(tmp_path / "resumed", BlobsWithMasks(24, seed=1), epochs=4, resume=True)


def test_a_mask_loss_without_masks_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no training sample has a lesion mask"):
        run_fit(tmp_path / "a", BlobsWithMasks(24, seed=1, with_masks=False), aux_mask_weight=1.0)
    with pytest.raises(ConfigError, match="ClassificationDataset"):
        run_fit(tmp_path / "b", BlobsWithFields(24, seed=1), aux_mask_weight=1.0)
    with pytest.raises(ConfigError, match="must not be negative"):
        run_fit(tmp_path / "c", BlobsWithMasks(24, seed=1), aux_mask_weight=-1.0)


def test_a_crop_phase_crops_the_lesion_masks_with_the_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lungcancer.train.aux as aux

    grids: list[tuple[tuple[int, ...], tuple[int, ...]]] = []  # (mask, mask logits) per step

    def recording_mask_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        grids.append((tuple(masks.shape[2:]), tuple(logits.shape[2:])))
        return mask_loss(logits, masks)

    monkeypatch.setattr(aux, "mask_loss", recording_mask_loss)
    data = BlobsWithMasks(24, seed=1)
    # 3 steps an epoch, 9 in all; the first 3 on the central 16 x 24 of the 32 px inputs.
    phase: dict[str, object] = {"low_res_crop_px": (16, 24), "low_res_fraction": 1 / 3}
    run_fit(tmp_path / "run", data, BlobDataset(8, seed=2), epochs=3, aux_mask_weight=1.0, **phase)
    assert [mask for mask, _ in grids] == [(16, 24)] * 3 + [(32, 32)] * 6
    # The feature map shrinks with the crop, so each cell still covers the same pixels.
    assert grids[0][1] != grids[-1][1]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "optimizer steps 1-3 of 9 on inputs cropped to their central 16 x 24 px" in log


@pytest.mark.parametrize("channels_last", [True, False])
def test_the_mask_head_takes_the_models_layout(channels_last: bool, tmp_path: Path) -> None:
    """The mask head convolves the backbone's feature map, so it must share the model's layout.
    Its (1, C, 1, 1) weight once stayed contiguous in a channels-last model; the convolution's
    backward returned a channels-last gradient, and DistributedDataParallel warned "Grad strides
    do not match bucket view strides" and copied it every step (seen on CUDA and CPU)."""
    policy = PrecisionPolicy(torch.device("cpu"), "fp32", channels_last, False, 1, "test")
    model = policy.prepare_model(create_model("cnn", num_classes=2), 2)
    assert isinstance(model, Classifier)
    cfg = TrainConfig(aux_mask_weight=1.0)
    aux = aux_training(cfg, BlobsWithMasks(8, seed=1), model, None, policy)
    assert aux is not None and aux.head.mask is not None
    weight = aux.head.mask.weight
    channels = weight.shape[1]
    assert weight.stride() == (
        (channels, 1, channels, channels) if channels_last else (channels, 1, 1, 1)
    )
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        wrapped = nn.parallel.DistributedDataParallel(WithAux(model, aux.head))
        images = policy.prepare_input(torch.randn(2, 1, 32, 32))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sum(out.float().sum() for out in wrapped(images)).backward()
    finally:
        dist.destroy_process_group()
    assert not [w for w in caught if "Grad strides" in str(w.message)]
