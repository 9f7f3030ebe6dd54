"""Is a one-class classifier its weights or its batch-norm statistics? A diagnosis.

Usage:
    python benchmarks/bn_recalibration_check.py RUN_DIR/best.pt [--samples 256] [--split val]

Scores the checkpoint on a split of its own run (the split is remade from the checkpoint's data
settings, as `lungcancer train` made it) twice: as saved, and with every batch-norm layer's
running statistics recomputed from the first `--samples` training slices (no augmentation, the
weights untouched: "precise BN"). If the saved model calls every slice one class and the
recomputed one does not, the running statistics lagged the weights (a few fast-changing epochs),
and recomputing them before validation is the fix (the trainer's precise BN, on by default
since it was built; checkpoints trained with `precise_bn_batches: 0` can still lag). Prints
macro AUC, macro F1, accuracy and how many classes are predicted.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch
from sklearn.metrics import f1_score, roc_auc_score

from lungcancer.config import DataConfig, from_dict
from lungcancer.data import ClassificationDataset, SampleCache, prepare_data
from lungcancer.train.inference import load_classifier
from lungcancer.train.precise_bn import recompute_batch_norm


def _stack(dataset: ClassificationDataset, count: int) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--split", default="val", choices=("val", "test"))
    args = parser.parse_args()

    saved = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    data_cfg = from_dict(DataConfig, saved["data_config"])
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare_data(data_cfg, tmp)
    cache = SampleCache(data_cfg.cache_dir) if data_cfg.cache_dir else None

    def split(name: str) -> ClassificationDataset:
        return ClassificationDataset(
            prepared.index, prepared.splits[name], data_cfg, train=False, cache=cache
        )

    scored = split(args.split)
    images, labels = _stack(scored, len(scored)), np.asarray(scored.labels)
    training = _stack(split("train"), args.samples)
    for mode in ("as saved", f"BN from {len(training)} training slices"):
        clf = load_classifier(args.checkpoint, "cpu", precision="fp32")
        model = clf.model.eval()
        if mode != "as saved":
            # What the trainer's precise BN does (train.precise_bn_batches), on these slices.
            batches = [(training[s : s + 32],) for s in range(0, len(training), 32)]
            recompute_batch_norm(model, batches, clf.policy)
        with torch.no_grad():
            logits = torch.cat([model(images[s : s + 64]) for s in range(0, len(images), 64)])
        probs = torch.softmax(logits.float(), dim=1).numpy()
        predicted = probs.argmax(axis=1)
        auc = roc_auc_score(labels, probs, multi_class="ovr")
        print(
            f"{args.split} {mode:32s} macro AUC {auc:.3f}"
            f"  macro F1 {f1_score(labels, predicted, average='macro'):.3f}"
            f"  accuracy {(predicted == labels).mean():.3f}"
            f"  classes predicted {len(set(predicted.tolist()))}"
        )


if __name__ == "__main__":
    main()
