"""What a perfect lesion finder would give the classifier: the true mask as an input channel.

Usage:
    python benchmarks/oracle_mask_channel.py data/lungsim1400 --train-extra data/lungsim-extra \
        --out runs/oracle_mask [--model cnn] [--no-mask] [--threads 1]

Trains the benchmark recipe (`bench_train.RECIPES`, the same split, steps and extra training
sets as `bench_train.py --accuracy --train-extra ...`) with each slice's true lesion mask,
read on the input grid and moved by the same augmentation, stacked after the two window
channels. The validation split gets its true masks too, so this is an oracle: no user has
these masks. It measures how much a detect-then-classify pipeline could gain at most, before
one is built. `--no-mask` trains the same recipe without the channel, on this machine and
precision, as its baseline. Prints the best validation macro AUC and F1; the test split is
not scored.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lungcancer.data import torch_dataset


def _with_mask_channel() -> None:
    """Make every `ClassificationDataset` item the image with its lesion mask stacked on."""

    def item(self: torch_dataset.ClassificationDataset, i: int) -> tuple[torch.Tensor, int]:
        if not self.samples[i].mask_path:
            raise SystemExit(f"{self.samples[i].path}: no lesion mask; the oracle needs one")
        image, label, mask = self.item_with_mask(i)
        # The third window is a placeholder that keeps the config's channel count honest.
        return torch.cat([image[:-1], mask]), label

    # item_with_mask calls self[i] only for samples without a mask file, refused above.
    torch_dataset.ClassificationDataset.__getitem__ = item  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data")
    parser.add_argument("--train-extra", action="append", default=[])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="cnn", choices=("cnn", "densenet121"))
    parser.add_argument("--no-mask", action="store_true", help="the baseline: no mask channel")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from bench_train import RECIPES, recipe_configs, with_train_extra
    from lungcancer.train.api import train

    recipe, factor = with_train_extra(RECIPES[args.model], args.data, args.train_extra)
    if not args.no_mask:
        _with_mask_channel()
        # One more window, so the data and model configs agree on three channels; the
        # dataset above replaces it with the mask.
        windows = recipe["data"]["windows"]
        recipe = {
            **recipe,
            "data": {**recipe["data"], "windows": (*windows, windows[0])},
            "model": {**recipe["model"], "in_chans": len(windows) + 1},
        }
    data_cfg, model_cfg, train_cfg = recipe_configs(
        args.model, recipe, args.data, args.out, args.threads
    )
    started = time.process_time()
    result = train(data_cfg, model_cfg, train_cfg)
    best = result.history[result.best_epoch - 1] if result.history else None
    print(
        f"{args.model} {'without' if args.no_mask else 'with'} the true mask channel "
        f"({factor:.1f}x training slices): best validation macro AUC {result.best_metric:.4f}"
        + (f", macro F1 {best['val_macro_f1']:.4f}" if best is not None else "")
        + f" (epoch {result.best_epoch}); {(time.process_time() - started) / 60:.1f} CPU-min"
    )


if __name__ == "__main__":
    main()
