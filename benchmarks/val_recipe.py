"""Train a benchmark recipe with some settings changed, and read it on the validation split only.

Usage:
    python benchmarks/val_recipe.py data/lungsim1400 --model cnn --out runs/val_cnn_pbn8 \
        --set train.precise_bn_batches=8 [--set data.seed=1 ...] [--train-extra DIR] \
        [--threads 1]

The recipe is `bench_train.RECIPES[model]` on the same split as `bench_train.py --accuracy`
(with `--train-extra`, the same extra training sets at the same optimizer steps). Each
`--set SECTION.KEY=VALUE` overrides one field of the data, model or train config (the value is
read as YAML: `8`, `0.5`, `true`, `[80, 112]`). It prints every epoch's validation macro AUC
and F1 and the training CPU time. The test split is never scored: this is the tool for
choosing, on validation, what a recipe should be.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import yaml

SECTIONS = ("data", "model", "train")


def parse_overrides(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """`["train.lr=0.001", ...]` as {"train": {"lr": 0.001}, ...}; a bad pair exits."""
    overrides: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        section, dot, field = key.partition(".")
        if not sep or not dot or section not in SECTIONS or not field:
            raise SystemExit(
                f"--set {pair!r}: expected SECTION.KEY=VALUE with SECTION one of {SECTIONS}"
            )
        value = yaml.safe_load(raw)
        overrides[section][field] = tuple(value) if isinstance(value, list) else value
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data")
    parser.add_argument("--model", default="cnn", choices=("cnn", "densenet121"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--train-extra", action="append", default=[])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    overrides = parse_overrides(args.overrides)

    from bench_train import RECIPES, recipe_configs, with_train_extra
    from lungcancer.train.api import train

    recipe, factor = with_train_extra(RECIPES[args.model], args.data, args.train_extra)
    recipe = {section: {**recipe[section], **overrides[section]} for section in SECTIONS}
    data_cfg, model_cfg, train_cfg = recipe_configs(
        args.model, recipe, args.data, args.out, args.threads
    )
    started = time.process_time()
    result = train(data_cfg, model_cfg, train_cfg)
    cpu_min = (time.process_time() - started) / 60
    changed = ", ".join(args.overrides) or "the recipe as it is"
    print(f"{args.model}, {changed} ({factor:.1f}x training slices); validation split:")
    for row in result.history:
        print(
            f"  epoch {row['epoch']}: macro AUC {row['val_macro_auc']:.4f}, "
            f"macro F1 {row['val_macro_f1']:.4f}, accuracy {row['val_acc']:.4f}"
        )
    best = result.history[result.best_epoch - 1] if result.history else None
    print(
        f"best epoch {result.best_epoch}: macro AUC {result.best_metric:.4f}"
        + (f", macro F1 {best['val_macro_f1']:.4f}" if best is not None else "")
        + f"; {cpu_min:.1f} CPU-min"
    )


if __name__ == "__main__":
    main()
