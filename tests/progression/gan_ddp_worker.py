"""A few GAN steps under torchrun for the DDP test; each rank reports what it saw and held.

After every step (just after the EMA update) a rank records a checksum of its generator's and
discriminator's weights, and the checksum of each batch it drew. The test then checks that the
ranks drew different batches but held identical weights at every step: gradients were averaged.
The hooks wrap private names of `lungcancer.progression.loop` because the loop exposes no
per-step weights; they only observe.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch
from gan_builders import disc_series, tiny_config

from lungcancer.progression import loop
from lungcancer.progression.checkpoint import gan_geometry
from lungcancer.progression.pairs import longitudinal_pairs, make_patch_set
from lungcancer.progression.patches import HUWindow
from lungcancer.train.distributed import distributed_session

STEPS = 4


def _checksum(module: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in module.parameters()))


def main(out_dir: str, report_dir: str) -> None:
    """Train the tiny GAN for a few steps and write this rank's observations."""
    torch.set_num_threads(1)
    cfg = dataclasses.replace(tiny_config(), steps=STEPS, batch_size=4, threads=1, log_every=1)
    pairs = make_patch_set(
        longitudinal_pairs(disc_series(4)), cfg.stages, gan_geometry(cfg), HUWindow()
    )
    weights: list[list[float]] = []
    batches: list[float] = []
    update_ema, sample_batch = loop._Trainer.update_ema, loop._sample_batch

    def observed_update_ema(self: Any, step: int) -> None:
        update_ema(self, step)
        weights.append([_checksum(self.G), _checksum(self.D), _checksum(self.G_ema)])

    def observed_sample_batch(*args: Any, **kwargs: Any) -> Any:
        batch = sample_batch(*args, **kwargs)
        batches.append(float(batch.source.double().sum()))
        return batch

    loop._Trainer.update_ema = observed_update_ema  # type: ignore[method-assign]
    loop._sample_batch = observed_sample_batch
    with distributed_session("cpu") as context:
        assert context is not None, "run me under torchrun"
        result = loop.training_loop(cfg, pairs, pairs, out_dir, progress=False)
        report = {"weights": weights, "batches": batches, "steps": result.steps}
        (Path(report_dir) / f"rank{context.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:3])
