import errno
import os
import stat
from pathlib import Path

import pytest

from lungcancer.errors import LungCancerError
from lungcancer.io.atomic import atomic_path, atomic_write_text


def test_atomic_write_replaces_and_uses_umask_mode(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_failed_write_keeps_previous_file_and_cleans_temp(tmp_path: Path) -> None:
    target = tmp_path / "best.pt"
    atomic_write_text(target, "good")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_disk_full_is_a_clear_error_and_previous_file_survives(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    atomic_write_text(target, "previous")
    with pytest.raises(LungCancerError, match="disk is full"), atomic_path(target):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "previous"
