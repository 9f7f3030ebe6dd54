"""The checkpoint file: safe loading, format checks, RNG round trip, atomic writes."""

from __future__ import annotations

import os
import random
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lungcancer.errors import CheckpointError
from lungcancer.train.checkpoint import (
    FORMAT,
    HISTORY_FIELDS,
    VERSION,
    RunFolder,
    capture_rng,
    load_checkpoint,
    progress_enabled,
    restore_rng,
    save_checkpoint,
)


def minimal(**changes: Any) -> dict[str, Any]:
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": "cnn", "args": {"num_classes": 2}},
        "class_names": ["benign", "malignant"],
        "data_config": {},
        "model_config": {},
        "train_config": {},
        "state_dict": {"fc.weight": torch.zeros(2, 3)},
    }
    ckpt.update(changes)
    return ckpt


def test_round_trip_and_expectations(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, minimal())
    loaded = load_checkpoint(path, expected_model="cnn", expected_classes=("benign", "malignant"))
    assert torch.equal(loaded["state_dict"]["fc.weight"], torch.zeros(2, 3))


def test_a_checkpoint_holding_a_pickled_callable_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save(minimal(hook=os.system), path)
    with pytest.raises(CheckpointError, match="could run code") as info:
        load_checkpoint(path)
    assert "posix.system" in str(info.value)


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (minimal(format="something-else"), {}, "not a lungcancer classifier checkpoint"),
        ({"conv1.weight": torch.zeros(1)}, {}, "not a lungcancer classifier checkpoint"),
        (minimal(version=99), {}, "unsupported checkpoint version"),
        ({k: v for k, v in minimal().items() if k != "state_dict"}, {}, "incomplete"),
        (minimal(), {"expected_model": "densenet121"}, "another model"),
        (minimal(), {"expected_classes": ("a", "b")}, "another class set"),
    ],
)
def test_checkpoints_that_do_not_fit_are_refused(
    tmp_path: Path, content: dict[str, Any], kwargs: dict[str, Any], message: str
) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path, **kwargs)


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="cannot read the checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "ckpt.pt", minimal(rng=capture_rng()))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(load_checkpoint(tmp_path / "ckpt.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_failed_save_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, minimal())

    class Unpicklable:
        def __reduce__(self) -> tuple[Any, ...]:
            raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError, match="disk went away"):
        save_checkpoint(path, minimal(extra=Unpicklable()))
    assert load_checkpoint(path)["class_names"] == ["benign", "malignant"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize(
    ("is_tty", "ci", "enabled"),
    [(True, "", True), (True, "true", False), (False, "", False)],
)
def test_progress_bars_only_on_an_interactive_terminal_outside_ci(
    monkeypatch: pytest.MonkeyPatch, is_tty: bool, ci: str, enabled: bool
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: is_tty)
    monkeypatch.setenv("CI", ci)
    assert progress_enabled() is enabled


def test_history_goes_to_tensorboard_when_it_is_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    scalars: list[tuple[str, float, int]] = []

    class FakeWriter:
        def __init__(self, log_dir: str) -> None:
            assert log_dir == str(tmp_path / "tb")

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            scalars.append((tag, value, step))

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    row = {field: 0.5 for field in HISTORY_FIELDS} | {"epoch": 3, "backbone_frozen": False}
    folder = RunFolder(tmp_path, echo=False)
    folder.write_history([row])
    folder.close()
    assert ("val_macro_auc", 0.5, 3) in scalars
    assert len(scalars) == len(HISTORY_FIELDS) - 1
