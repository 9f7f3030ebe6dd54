"""Crash safety: a full disk or a kill -9 never leaves half a file, and a killed run resumes.

The disk-full tests make the writer put part of the file on disk and then fail with ENOSPC, as
a real full disk does; the kill tests SIGKILL real processes at arbitrary moments.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from train_builders import BlobDataset, make_spec, write_png_dataset
from typer.testing import CliRunner

from lungcancer.cli import app
from lungcancer.config import DataConfig
from lungcancer.data import ClassificationDataset, load_index
from lungcancer.data.cache import SampleCache
from lungcancer.errors import LungCancerError, TrainingError
from lungcancer.evaluate.report import write_report
from lungcancer.io import Scan, write_volume
from lungcancer.train.api import fit
from lungcancer.train.checkpoint import RunFolder, load_checkpoint, save_checkpoint

TIMING_FIELDS = ("seconds", "images_per_s")


def _disk_full(written: bytes = b"partial") -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), written.decode(errors="replace"))


def _fill_then_fail(target: str | os.PathLike[str] | Any) -> None:
    """What a full disk does to a writer: some bytes land, then the write fails."""
    if isinstance(target, str | os.PathLike):
        # open(), not Path.write_bytes: the tests patch the latter to get here.
        with open(target, "wb") as fh:
            fh.write(b"\x00" * 1000)
    else:
        target.write(b"\x00" * 1000)
    raise _disk_full()


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def _checkpoint_writer(folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Callable]:
    path = folder / "last.pt"

    def write(version: int) -> None:
        save_checkpoint(path, {"format": "test", "version": version, "w": torch.full((64,), 1.0)})

    def break_it() -> None:
        monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: _fill_then_fail(f))

    return path, (write, break_it)


def _report_writer(folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Callable]:
    path = folder / "report.html"

    def write(version: int) -> None:
        write_report(path, title=f"v{version}", metrics=None, plots={}, run_info={"v": version})

    def break_it() -> None:
        monkeypatch.setattr(Path, "write_bytes", lambda self, data: _fill_then_fail(self))

    return path, (write, break_it)


def _cache_writer(folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Callable]:
    cache = SampleCache(folder)
    path = cache.path_for("sample")

    def write(version: int) -> None:
        cache.put("sample", np.full((4, 4), float(version), dtype=np.float32))

    def break_it() -> None:
        monkeypatch.setattr(np, "save", lambda fh, *a, **k: _fill_then_fail(fh))

    return path, (write, break_it)


def _history_writer(folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Callable]:
    run = RunFolder(folder, echo=False)
    path = folder / "history.jsonl"

    def write(version: int) -> None:
        run.write_history([{"epoch": version, "lr": 0.1, "train_loss": 1.0}])

    def break_it() -> None:
        monkeypatch.setattr(Path, "write_bytes", lambda self, data: _fill_then_fail(self))

    return path, (write, break_it)


def _volume_writer(folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Callable]:
    import SimpleITK as sitk  # noqa: N813 (the name every SimpleITK user knows)

    path = folder / "scan.nrrd"

    def write(version: int) -> None:
        array = np.full((2, 3, 4), float(version), dtype=np.float32)
        write_volume(Scan(array=array, spacing_mm=(1.0, 1.0, 1.0)), path)

    def fail(image: Any, name: str, *args: Any, **kwargs: Any) -> None:
        Path(name).write_bytes(b"NRRD0004\n")
        raise RuntimeError("itk::ERROR: NrrdImageIO: Write failed: No space left on device")

    def break_it() -> None:
        monkeypatch.setattr(sitk, "WriteImage", fail)

    return path, (write, break_it)


WRITERS = {
    "checkpoint": _checkpoint_writer,
    "report": _report_writer,
    "cache": _cache_writer,
    "history": _history_writer,
    "volume": _volume_writer,
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_full_disk_keeps_the_previous_file_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    folder = tmp_path / kind
    folder.mkdir()
    path, (write, break_it) = WRITERS[kind](folder, monkeypatch)
    write(1)
    before = path.read_bytes()
    files_before = set(p.name for p in folder.iterdir())
    break_it()
    with pytest.raises(LungCancerError, match="disk is full") as caught:
        write(2)
    assert "free some space" in str(caught.value)
    assert path.read_bytes() == before
    assert _leftovers(folder, files_before) == []


def test_a_full_disk_during_training_keeps_the_last_good_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    spec = make_spec(epochs=2, out_dir=str(run_dir))
    real_save = torch.save
    saves = {"n": 0}

    def second_epoch_fills_the_disk(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        saves["n"] += 1
        # Epoch 1 writes last.pt and best.pt; epoch 2's first write hits the full disk.
        if saves["n"] > 2:
            _fill_then_fail(f)
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", second_epoch_fills_the_disk)
    folder = RunFolder(run_dir, echo=False)
    with pytest.raises(LungCancerError, match="disk is full"), folder.locked() as run:
        fit(spec, BlobDataset(24, seed=1), BlobDataset(8, seed=2), run)
    monkeypatch.undo()
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1
    assert not (run_dir / ".lock").exists()
    assert not list(run_dir.glob(".*.tmp"))


WRITER_LOOP = textwrap.dedent(
    """
    import pathlib
    import sys

    import torch

    from lungcancer.train.checkpoint import save_checkpoint

    path, folder = sys.argv[1], pathlib.Path(sys.argv[2])
    for version in range(1_000_000):
        (folder / f"writing-{version}").touch()
        # 8 MB per file: tens of milliseconds to write, so a kill soon after the marker
        # usually lands mid-write.
        save_checkpoint(path, {"version": version, "w": torch.full((2_000_000,), float(version))})
    """
)


def test_kill_9_while_writing_checkpoints_leaves_only_whole_files(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER_LOOP)
    run_dir, markers = tmp_path / "run", tmp_path / "markers"
    run_dir.mkdir()
    markers.mkdir()
    writer = subprocess.Popen([sys.executable, str(script), str(run_dir / "last.pt"), markers])
    try:
        _wait_for((markers / "writing-2").exists, writer, what="the third checkpoint write")
        time.sleep(0.005)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    state = torch.load(run_dir / "last.pt", weights_only=True)
    # A whole file, old or new: every value is the version it was written as.
    assert state["version"] >= 1
    assert torch.equal(state["w"], torch.full((2_000_000,), float(state["version"])))
    # A killed write's temp file is never mistaken for the checkpoint, and the next run
    # (which takes the folder's lock) clears it.
    assert all(p.name.startswith(".last.pt.") for p in run_dir.glob(".*.tmp"))
    with RunFolder(run_dir, echo=False).locked():
        pass
    assert sorted(p.name for p in run_dir.iterdir()) == ["last.pt"] + (
        ["train.log"] if (run_dir / "train.log").exists() else []
    )


def test_an_epoch_augments_the_same_after_reseed_whatever_came_before(tmp_path: Path) -> None:
    # Resuming creates the augmenter fresh; a straight run has used it for earlier epochs.
    data = write_png_dataset(tmp_path / "data", per_class=2, size=32)
    cfg = DataConfig(source=str(data), image_size=32, cache_dir="")
    index = load_index(data)
    used = ClassificationDataset(index, range(len(index.samples)), cfg, train=True)
    fresh = ClassificationDataset(index, range(len(index.samples)), cfg, train=True)
    for i in range(len(used)):
        used[i]
    used.reseed(1234)
    fresh.reseed(1234)
    for i in range(len(used)):
        assert torch.equal(used[i][0], fresh[i][0])


def _wait_for(ready: Callable[[], bool], process: subprocess.Popen, *, what: str) -> None:
    deadline = time.monotonic() + 180
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"the process ended (code {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _history(run_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_FIELDS} for row in rows]


def _train_args(data: Path, config: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(config), "--data", str(data), "--out", str(out), *extra]


def test_kill_9_during_training_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    epochs = 6
    data = write_png_dataset(tmp_path / "data", per_class=12, size=48)
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"image_size": 48, "cache_dir": str(tmp_path / "cache")},
                "model": {"name": "cnn"},
                "train": {"epochs": epochs, "batch_size": 4, "threads": 1, "patience": 0},
            }
        )
    )
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "lungcancer.cli", *_train_args(data, config, killed)]
    env = {**os.environ, "LUNGCANCER_PHI_SALT": "test-salt"}
    victim = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for((killed / "last.pt").exists, victim, what="epoch 1's checkpoint")
        # A second run into the same folder while the first is alive is refused.
        second = CliRunner().invoke(app, _train_args(data, config, killed, "--resume"))
        assert isinstance(second.exception, TrainingError)
        assert "another training run" in str(second.exception)
    finally:
        victim.send_signal(signal.SIGKILL)
        _, stderr = victim.communicate()
    assert victim.returncode == -signal.SIGKILL, stderr
    done_before_kill = load_checkpoint(killed / "last.pt")["epoch"]
    assert 1 <= done_before_kill < epochs, "the run ended before it could be killed"
    assert (killed / ".lock").exists()

    resumed = CliRunner().invoke(app, _train_args(data, config, killed, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    straight_dir = tmp_path / "straight"
    straight = CliRunner().invoke(app, _train_args(data, config, straight_dir))
    assert straight.exit_code == 0, straight.output

    assert _history(killed) == _history(straight_dir)
    killed_weights = load_checkpoint(killed / "last.pt")["state_dict"]
    straight_weights = load_checkpoint(straight_dir / "last.pt")["state_dict"]
    for name, value in straight_weights.items():
        assert torch.equal(killed_weights[name], value), name
    assert (
        f"resumed from {killed / 'last.pt'} at epoch {done_before_kill + 1}"
        in (killed / "train.log").read_text()
    )
    assert not (killed / ".lock").exists()


def test_a_killed_runs_lock_and_temp_files_do_not_block_its_resume(tmp_path: Path) -> None:
    spec = make_spec(epochs=2, out_dir=str(tmp_path / "run"), max_minutes=1e-6)
    with RunFolder(tmp_path / "run", echo=False).locked() as run:
        fit(spec, BlobDataset(24, seed=1), BlobDataset(8, seed=2), run)
    # What kill -9 leaves: a lock naming a dead process and a half-written temp file.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run" / ".lock").write_text(f"{dead.pid}\n")
    (tmp_path / "run" / ".last.pt.abc123.tmp").write_bytes(b"\x80\x02half")
    resume = make_spec(epochs=2, out_dir=str(tmp_path / "run"), resume=True)
    with RunFolder(tmp_path / "run", echo=False).locked() as run:
        resumed = fit(resume, BlobDataset(24, seed=1), BlobDataset(8, seed=2), run)
    assert resumed.stopped == "completed"
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert not list((tmp_path / "run").glob(".*.tmp"))
    assert "left by a run that was killed" in (tmp_path / "run" / "train.log").read_text()
