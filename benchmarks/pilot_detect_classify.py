"""A learned lesion finder in front of the classifier: what it keeps of the oracle's gain.

Usage:
    python benchmarks/pilot_detect_classify.py data/lungsim1400 --train-extra data/lungsim-extra \
        --out runs/pilot_detect_classify [--seg-steps 600] [--lesion-weight 20] [--threads 2]

`oracle_mask_channel.py` measured what the true lesion mask, as a third input channel, gives
the cnn recipe (+0.08 validation macro F1). No user has that mask. This pilot replaces it with
a segmenter's:

1. A small U-Net (MONAI `UNet`, 16-128 channels, 0.2M parameters) learns the lesion mask from
   the training split's two-window inputs, augmented as the classifier's are: binary
   cross-entropy with lesion pixels weighted `--lesion-weight` times (default 20) plus a batch
   soft Dice, AdamW, `--seg-steps` steps of 32 with a cosine rate.
2. Its probability map for every training and validation slice (un-augmented, batched) becomes
   the classifier's third channel, moved by the same augmentation as the image.
3. The cnn recipe trains on it as in the oracle run: same split, extra training sets and 630
   steps (`bench_train.RECIPES`, `with_train_extra`).

It prints the segmenter's validation Dice and how often it finds the lesion, the classifier's
validation macro AUC and F1 per epoch, and the CPU time of both stages: the finder is part of
the pipeline's budget. The test split is not scored. The segmenter trains on the same slices
whose maps the classifier then sees, so training maps are better than validation ones; a real
pipeline would cross-fit them.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lungcancer.data import torch_dataset

# Lesion pixels weigh this much more in the cross-entropy (`--lesion-weight`): they are 0.3%
# of a slice's pixels (median) on LungSim at 128 px, and an unweighted first run learnt to
# predict none (Dice 0).
LESION_WEIGHT = 20.0


def _segmenter() -> torch.nn.Module:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(
        spatial_dims=2,
        in_channels=2,
        out_channels=1,
        channels=(16, 32, 64, 128),
        strides=(2, 2, 2),
        num_res_units=1,
    )


def _soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice over the whole batch: a batch holds lesions even where a slice has none,
    and a lesion covers under 1% of a slice, so a per-pixel loss alone learns "no lesion"."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    return 1 - (2 * inter + 1) / (prob.sum() + target.sum() + 1)


def train_segmenter(
    dataset: torch_dataset.ClassificationDataset,
    steps: int,
    seed: int = 0,
    lesion_weight: float = LESION_WEIGHT,
) -> torch.nn.Module:
    """The U-Net trained on (augmented image, true mask) pairs of `dataset`."""
    net = _segmenter().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    dataset.reseed(seed)
    net.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = 2e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        picks = torch.randint(len(dataset), (32,), generator=generator).tolist()
        items = [dataset.item_with_mask(i) for i in picks]
        x = torch.stack([image[:2] for image, _, _ in items]).contiguous(
            memory_format=torch.channels_last
        )
        y = torch.stack([mask for _, _, mask in items])
        logits = net(x)
        loss = F.binary_cross_entropy_with_logits(
            logits, y, pos_weight=torch.tensor(lesion_weight)
        ) + _soft_dice_loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"  segmenter step {step + 1}/{steps}: loss {loss.item():.4f}", flush=True)
    return net.eval()


@torch.no_grad()
def predict_maps(
    net: torch.nn.Module, dataset: torch_dataset.ClassificationDataset
) -> list[np.ndarray]:
    """The segmenter's lesion probability map of every (un-augmented) item, in order."""
    maps: list[np.ndarray] = []
    for start in range(0, len(dataset), 64):
        stop = min(start + 64, len(dataset))
        batch = torch.stack([dataset[i][0][:2] for i in range(start, stop)])
        prob = torch.sigmoid(net(batch.contiguous(memory_format=torch.channels_last)))
        maps.extend(p[0].numpy().astype(np.float32) for p in prob)
    return maps


def finder_scores(maps: list[np.ndarray], dataset: torch_dataset.ClassificationDataset) -> str:
    """Dice at 0.5 on slices with a lesion, the share of them the map touches, and the share
    of lesion-free slices with any pixel above 0.5."""
    dice, found, false_alarm, empty = [], 0, 0, 0
    for i, prob in enumerate(maps):
        _, _, mask = dataset.item_with_mask(i)
        truth = mask[0].numpy() > 0.5
        called = prob > 0.5
        if truth.any():
            inter = float((truth & called).sum())
            dice.append(2 * inter / (truth.sum() + called.sum()))
            found += inter > 0
        else:
            empty += 1
            false_alarm += bool(called.any())
    return (
        f"Dice {np.mean(dice):.3f} on {len(dice)} slices with a lesion, lesion touched on "
        f"{found / max(1, len(dice)):.3f} of them; a false alarm on "
        f"{false_alarm / max(1, empty):.3f} of {empty} lesion-free slices"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data")
    parser.add_argument("--train-extra", action="append", default=[])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seg-steps", type=int, default=600)
    parser.add_argument("--lesion-weight", type=float, default=LESION_WEIGHT)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from bench_train import RECIPES, recipe_configs, with_train_extra
    from lungcancer.data import SampleCache, prepare_data
    from lungcancer.train.api import train

    recipe, factor = with_train_extra(RECIPES["cnn"], args.data, args.train_extra)
    two, model_cfg, train_cfg = recipe_configs(
        "cnn", recipe, args.data, args.out / "cnn", args.threads
    )
    prepared = prepare_data(two, args.out / "finder")
    cache = SampleCache(two.cache_dir)

    def split(name: str, augment: bool) -> torch_dataset.ClassificationDataset:
        return torch_dataset.ClassificationDataset(
            prepared.index, prepared.splits[name], two, train=augment, cache=cache, masks=True
        )

    started = time.process_time()
    net = train_segmenter(split("train", True), args.seg_steps, lesion_weight=args.lesion_weight)
    seg_cpu = (time.process_time() - started) / 60
    started = time.process_time()
    train_plain, val_plain = split("train", False), split("val", False)
    maps = {
        "train": predict_maps(net, train_plain),
        "val": predict_maps(net, val_plain),
    }
    map_cpu = (time.process_time() - started) / 60
    print(f"finder, validation: {finder_scores(maps['val'], val_plain)}", flush=True)
    # The classifier's datasets list the same samples in the same order as these.
    by_key = {
        (s.path, s.selector): m
        for name, plain in (("train", train_plain), ("val", val_plain))
        for s, m in zip(plain.samples, maps[name], strict=True)
    }

    def item(self: torch_dataset.ClassificationDataset, i: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[i]
        array = np.asarray(self._array(i))
        prob = by_key[(sample.path, sample.selector)]
        if self._augment:
            array, prob = self._augmenter_here().augment_pair(array, prob)
        image = torch.from_numpy(np.array(array, dtype=np.float32))
        # The third window is the placeholder the oracle uses; the finder's map replaces it.
        return torch.cat([image[:-1], torch.from_numpy(np.array(prob, np.float32))[None]]), (
            self.labels[i]
        )

    torch_dataset.ClassificationDataset.__getitem__ = item  # type: ignore[method-assign]
    three = dataclasses.replace(two, windows=(*two.windows, two.windows[0]))
    model_cfg = dataclasses.replace(model_cfg, in_chans=3)
    started = time.process_time()
    result = train(three, model_cfg, train_cfg)
    cls_cpu = (time.process_time() - started) / 60
    best = result.history[result.best_epoch - 1]
    print(
        f"cnn with the finder's lesion map ({factor:.1f}x training slices): best validation "
        f"macro AUC {result.best_metric:.4f}, macro F1 {best['val_macro_f1']:.4f} (epoch "
        f"{result.best_epoch}); CPU-min: segmenter {seg_cpu:.1f}, maps {map_cpu:.1f}, "
        f"classifier {cls_cpu:.1f}"
    )


if __name__ == "__main__":
    main()
