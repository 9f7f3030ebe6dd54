"""Two gloo processes under torchrun train exactly as one process with the same global batch."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from ddp_worker import PROBE, build_probe, result_weights, run
from train_builders import write_png_dataset

from lungcancer.models import registry
from lungcancer.train.checkpoint import load_checkpoint
from lungcancer.train.distributed import (
    ShardedSampler,
    evaluation_sampler,
    threads_per_process,
)
from lungcancer.train.loop import EpochSampler

TIMING_FIELDS = ("seconds", "images_per_s")
WORKER = Path(__file__).parent / "ddp_worker.py"


def _without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_FIELDS} for row in rows]


@pytest.mark.parametrize("mode", ["plain", "aux"])
def test_two_processes_match_one_process_with_the_same_global_batch(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    torchrun: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    # "aux": the classifier and the auxiliary head train as one DDP module.
    monkeypatch.setitem(registry._REGISTRY, PROBE, build_probe)
    single = run(tmp_path / "single", batch_size=8, aux=mode == "aux")

    report = tmp_path / "report"
    report.mkdir()
    torchrun(str(WORKER), str(tmp_path / "ddp"), str(report), "4", mode)

    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # Every rank computed the same (all-reduced, gathered) history, equal to one process's.
    assert _without_timing(ranks[0]["history"]) == _without_timing(ranks[1]["history"])
    for ddp_row, single_row in zip(ranks[0]["history"], single.history, strict=True):
        for key, value in _without_timing([single_row])[0].items():
            assert ddp_row[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    ddp_weights = result_weights(tmp_path / "ddp")
    for name, value in result_weights(tmp_path / "single").items():
        torch.testing.assert_close(ddp_weights[name], value, rtol=1e-4, atol=1e-6)
    if mode == "aux":
        ddp_head = load_checkpoint(tmp_path / "ddp" / "last.pt")["aux"]["state_dict"]
        single_head = load_checkpoint(tmp_path / "single" / "last.pt")["aux"]["state_dict"]
        for name, value in single_head.items():
            torch.testing.assert_close(ddp_head[name], value, rtol=1e-4, atol=1e-6)
    # Only rank 0 wrote the run folder: one log line per epoch, no second lock or history.
    log = (tmp_path / "ddp" / "train.log").read_text()
    assert log.count("epoch 1/2") == 1 and log.count("epoch 2/2") == 1
    assert not (tmp_path / "ddp" / ".lock").exists()


@pytest.mark.parametrize("n", [7, 8, 9])
def test_training_shards_cover_the_epoch_in_equal_lengths(n: int) -> None:
    base = EpochSampler([i % 2 for i in range(n)], balance="none", seed=3)
    shards = [ShardedSampler(base, rank, 3, pad=True) for rank in range(3)]
    for shard in shards:
        shard.set_epoch(5)
    orders = [list(shard) for shard in shards]
    assert len({len(order) for order in orders}) == 1 == len({len(s) for s in shards})
    assert len(orders[0]) == len(shards[0])
    base.set_epoch(5)
    epoch = list(base)
    assert sorted({i for order in orders for i in order}) == sorted(epoch)
    # Dealt round-robin: step k of the shards together is step k of one process's order.
    interleaved = [order[k] for k in range(len(orders[0])) for order in orders]
    assert interleaved[:n] == epoch


def test_a_resumed_shard_skips_what_it_already_trained_on() -> None:
    base = EpochSampler([0, 1] * 6, balance="sampler", seed=0)
    full, resumed = ShardedSampler(base, 1, 2, pad=True), ShardedSampler(base, 1, 2, pad=True)
    full.set_epoch(2)
    expected = list(full)[4:]
    resumed.set_epoch(2, skip=4)
    assert list(resumed) == expected and len(resumed) == len(expected)


def test_evaluation_shards_see_every_sample_once() -> None:
    class Two:
        rank, world_size = 0, 2

    parts = []
    for rank in (0, 1):
        context = Two()
        context.rank = rank
        sampler = evaluation_sampler(9, context)  # type: ignore[arg-type]
        assert sampler is not None
        parts.append(list(sampler))
    assert sorted(parts[0] + parts[1]) == list(range(9))
    assert evaluation_sampler(9, None) is None


def test_cpu_threads_are_shared_among_the_processes_of_a_machine() -> None:
    class Local:
        local_world_size = 4

    assert threads_per_process(0, 16, Local()) == 4  # type: ignore[arg-type]
    assert threads_per_process(0, 2, Local()) == 1  # type: ignore[arg-type]
    assert threads_per_process(3, 16, Local()) == 3  # type: ignore[arg-type]
    assert threads_per_process(0, 16, None) == 16


def test_lungcancer_train_runs_unchanged_under_torchrun(
    tmp_path: Path, torchrun: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    data = write_png_dataset(tmp_path / "data", per_class=8, size=32)
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"image_size": 32, "cache_dir": str(tmp_path / "cache")},
                "train": {"epochs": 1, "batch_size": 4, "threads": 1, "device": "cpu"},
            }
        )
    )
    launched = torchrun(
        "-m", "lungcancer.cli", "train", "--config", str(config), "--data", str(data),
        "--model", "cnn", "--out", str(tmp_path / "run"),
        env={"LUNGCANCER_PHI_SALT": "test-salt"},
    )  # fmt: skip
    run = tmp_path / "run"
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    log = (run / "train.log").read_text()
    assert log.count("epoch 1/1") == 1, log
    # Rank 1 read rank 0's split file instead of making its own.
    assert (run / "splits.json").is_file()
    assert launched.stdout.count("best:") == 2  # both ranks return the same result
