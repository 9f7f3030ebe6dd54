"""The GAN loop under torchrun: ranks draw their own batches but keep identical players."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import torch

from lungcancer.progression.checkpoint import read_gan_checkpoint

WORKER = Path(__file__).parent / "gan_ddp_worker.py"


def test_two_gloo_ranks_average_gradients_and_only_rank_0_writes(
    tmp_path: Path, torchrun: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    report = tmp_path / "report"
    report.mkdir()
    torchrun(str(WORKER), str(tmp_path / "run"), str(report))
    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 4
    # Different data on each rank...
    assert all(a != b for a, b in zip(ranks[0]["batches"], ranks[1]["batches"], strict=True))
    # ...yet the same generator, discriminator and EMA after every step.
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert len({tuple(w) for w in ranks[0]["weights"]}) == 4  # and they did train
    run = tmp_path / "run"
    logged = [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged] == [1, 2, 3, 4]  # one writer, not two
    payload = read_gan_checkpoint(run / "checkpoint.pt")
    assert payload["step"] == 4
    assert all(torch.isfinite(v).all() for v in payload["G_ema"].values())
