"""What a training run keeps on disk: the checkpoint format and the run folder.

A checkpoint is one self-describing file: everything needed to rebuild the model (name +
args), to preprocess new images the same way (the data config), and to resume training exactly
(optimizer, schedule, RNG states, epoch, history). It is written atomically and read only with
`torch.load(weights_only=True)`, so a file cannot run code.

`RunFolder` is the one place a run writes files (checkpoints, configs, logs, history), guarded
by a lock file against a second run and by a rank check so only the main process writes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lungcancer.config import save_configs
from lungcancer.errors import CheckpointError, TrainingError
from lungcancer.io.atomic import atomic_write_text, atomic_write_with, remove_stale_temp_files
from lungcancer.models.pretrained import safe_torch_load

if TYPE_CHECKING:
    from lungcancer.train.api import RunSpec

FORMAT = "lungcancer-classifier"
VERSION = 1
REQUIRED_KEYS = (
    "format",
    "version",
    "model",
    "class_names",
    "data_config",
    "model_config",
    "train_config",
    "state_dict",
)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a checkpoint's numbers."""
    import monai

    import lungcancer

    return {
        "torch": str(torch.__version__),
        "monai": str(monai.__version__),
        "lungcancer": str(lungcancer.__version__),
    }


def git_hash() -> str:
    """The source tree's commit, or "" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as weights-only-loadable values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back RNG states saved by `capture_rng`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write a checkpoint atomically: readers see the old file or the new one, never half."""
    atomic_write_with(path, lambda tmp: torch.save(checkpoint, tmp))


def load_checkpoint(
    path: str | Path,
    *,
    expected_model: str | None = None,
    expected_classes: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Read and check a classifier checkpoint, never executing code from it.

    Args:
        path: the `.pt` file.
        expected_model: refuse a checkpoint of another model name.
        expected_classes: refuse a checkpoint trained on another class list.

    Returns:
        The checkpoint dict (see `build` in `lungcancer.train.api` for its keys).

    Raises:
        CheckpointError: missing, unreadable, unsafe, of another format or version, or for
            another model or class set than expected.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(
            "checkpoint not found",
            path=p,
            expected="a .pt file written by `lungcancer train` (best.pt or last.pt)",
            hint="check the path; a run folder holds best.pt and last.pt",
        )
    ckpt = safe_torch_load(p, what="checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format", "no 'format' key") if isinstance(ckpt, dict) else type(ckpt)
        raise CheckpointError(
            "not a lungcancer classifier checkpoint",
            path=p,
            expected=f"format {FORMAT!r}",
            found=str(found),
            hint="plain weights go to --pretrained, not here",
        )
    if ckpt.get("version") != VERSION:
        raise CheckpointError(
            "unsupported checkpoint version",
            path=p,
            expected=f"version {VERSION}",
            found=f"version {ckpt.get('version')}",
            hint="use the lungcancer release that wrote it",
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(
            "the checkpoint is incomplete",
            path=p,
            expected=", ".join(REQUIRED_KEYS),
            found=f"missing {', '.join(missing)}",
        )
    name = ckpt["model"]["name"]
    if expected_model is not None and name != expected_model:
        raise CheckpointError(
            "the checkpoint is for another model",
            path=p,
            expected=expected_model,
            found=name,
            hint="pass the matching --model, or start a new run folder (--out)",
        )
    classes = tuple(ckpt["class_names"])
    if expected_classes is not None and classes != tuple(expected_classes):
        raise CheckpointError(
            "the checkpoint was trained on another class set",
            path=p,
            expected=", ".join(expected_classes),
            found=", ".join(classes),
            hint="use the dataset (and class map) it was trained on, or start a new run folder",
        )
    return ckpt


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def is_main_process() -> bool:
    """True unless this is a non-zero rank of an initialised process group."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def progress_enabled() -> bool:
    """Progress bars only on an interactive terminal, never under CI."""
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    return sys.stderr.isatty() and not ci and is_main_process()


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over `total` items; yields `advance(n)` (a no-op when disabled)."""
    if not progress_enabled():
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress("{task.description}", *columns, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


HISTORY_FIELDS = (
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_macro_auc",
    "val_macro_f1",
    "seconds",
    "images_per_s",
    "backbone_frozen",
)


class RunFolder:
    """A run's output folder; every write is skipped on non-main processes.

    Files: config.yaml, splits.json, best.pt, last.pt, history.jsonl, history.csv, train.log,
    TensorBoard events under tb/ (when tensorboard is installed), and `.lock` while running.

    Args:
        path: the folder (created when missing).
        echo: also print log lines to stderr.
    """

    def __init__(self, path: str | Path, *, echo: bool = True) -> None:
        self.path = Path(path)
        self.best = self.path / "best.pt"
        self.last = self.path / "last.pt"
        self.lock_file = self.path / ".lock"
        self.main = is_main_process()
        self.echo = echo
        self._warned: set[str] = set()
        self._tensorboard: Any = None
        self._tensorboard_checked = False

    @contextlib.contextmanager
    def locked(self) -> Iterator[RunFolder]:
        """Hold the folder's lock file for the duration (refused if another live run holds it)."""
        if not self.main:
            yield self
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self._acquire()
        # Holding the lock, no one else writes here: temp files are a killed run's leftovers.
        for stale in remove_stale_temp_files(self.path):
            self.log(f"removed {stale.name}, left by a run that was killed while writing")
        try:
            yield self
        finally:
            self.close()
            self.lock_file.unlink(missing_ok=True)

    def _acquire(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _lock_holder(self.lock_file)
                if holder is not None and _process_alive(holder):
                    raise TrainingError(
                        "another training run is writing into this folder",
                        path=self.path,
                        expected="a folder no other run holds",
                        found=f"{self.lock_file} held by the process with pid {holder}",
                        hint="wait for that run to finish, or choose another --out; delete the "
                        "lock file only if that process is not a training run",
                    ) from None
                # The holder died without cleaning up (killed, power cut): take over.
                self.lock_file.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            return
        raise TrainingError("could not take the run folder's lock", path=self.lock_file)

    def check_fresh_or_resumable(self, resume: bool) -> None:
        """Refuse to overwrite a finished run, and to resume one that is not there."""
        if not self.main:
            return
        if resume and not self.last.is_file():
            raise TrainingError(
                "nothing to resume: the folder has no last.pt",
                path=self.path,
                expected=str(self.last),
                hint="drop --resume to start a new run, or point --out at the run to continue",
            )
        if not resume and (self.last.exists() or self.best.exists()):
            raise TrainingError(
                "the folder already holds a training run",
                path=self.path,
                found=", ".join(p.name for p in (self.best, self.last) if p.exists()),
                hint="pass --resume to continue it, or choose another --out",
            )

    def load_resume_state(self, spec: RunSpec) -> dict[str, Any]:
        """last.pt, checked to be for this model and class set."""
        return load_checkpoint(
            self.last, expected_model=spec.model_name, expected_classes=spec.class_names
        )

    def keep_copy(self, source: Path, name: str) -> None:
        """Copy `source` into the folder as `name` (unless it is already there)."""
        target = self.path / name
        if self.main and source.resolve() != target.resolve():
            atomic_write_with(target, lambda tmp: _copy(source, tmp))

    def log(self, message: str) -> None:
        """Append a timestamped line to train.log (and echo it)."""
        if not self.main:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "train.log", "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {message}\n")
        if self.echo:
            print(message, file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        """Log a warning once per run."""
        if message not in self._warned:
            self._warned.add(message)
            self.log(f"warning: {message}")

    def save_configs(self, spec: RunSpec) -> None:
        """config.yaml with the data, model and train sections the run used."""
        if self.main:
            save_configs(
                self.path / "config.yaml",
                data=spec.data_cfg,
                model=spec.model_cfg,
                train=spec.train_cfg,
            )

    def save_checkpoint(self, name: str, checkpoint: dict[str, Any]) -> None:
        """Write a checkpoint file in the folder (atomically)."""
        if self.main:
            save_checkpoint(self.path / name, checkpoint)

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite history.jsonl and history.csv, and add the last row to TensorBoard."""
        if not self.main or not rows:
            return
        jsonl = "".join(json.dumps(row) + "\n" for row in rows)
        atomic_write_text(self.path / "history.jsonl", jsonl)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path / "history.csv", buffer.getvalue())
        board = self._board()
        if board is not None:
            last = rows[-1]
            for key in HISTORY_FIELDS[1:]:
                board.add_scalar(key, float(last[key]), int(last["epoch"]))
            board.flush()

    def _board(self) -> Any:
        if not self._tensorboard_checked:
            self._tensorboard_checked = True
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return None
            self._tensorboard = SummaryWriter(log_dir=str(self.path / "tb"))
        return self._tensorboard

    def close(self) -> None:
        """Flush and close TensorBoard (if it was opened)."""
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def _copy(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)


def _lock_holder(lock_file: Path) -> int | None:
    try:
        return int(lock_file.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
