"""`lungcancer serve` as a user starts it: a process that serves the page until stopped."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lungcancer.cli import main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_command_serves_the_page_and_its_api(trained_checkpoint: Path) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "lungcancer.cli", "serve", "--ckpt", str(trained_checkpoint)]
    process = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        page = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = response.read().decode("utf-8", errors="replace")
                break
            except OSError:
                time.sleep(0.5)
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        assert "lungcancer" in page
        info_url = f"http://127.0.0.1:{port}/gradio_api/info"
        with urllib.request.urlopen(info_url, timeout=10) as response:
            info = response.read().decode()
        assert '"/predict"' in info and '"/explain"' in info
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_refuses_a_missing_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["lungcancer", "serve", "--ckpt", str(tmp_path / "no.pt")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and "Traceback" not in err
