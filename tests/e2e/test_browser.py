"""The web app in a real browser: Debian's chromium, headless, driven by Playwright."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lungcancer.app.processing import Processor
from lungcancer.app.server import RunningApp, start_app
from lungcancer.train.inference import load_classifier

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 90_000

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; "
        ".ci/run installs it)",
    ),
    pytest.mark.filterwarnings("ignore:::gradio.queueing"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def app(trained_checkpoint: Path) -> Iterator[RunningApp]:
    processor = Processor(load_classifier(trained_checkpoint, device="cpu"))
    running = start_app(processor, host="127.0.0.1", port=_free_port(), block=False)
    yield running
    running.close()


@pytest.fixture(scope="module")
def page(app: RunningApp) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(app.url)
        yield page
        browser.close()


def _upload(page: Any, path: Path) -> None:
    """Replace whatever is in the image box with `path` and wait for the analysis."""
    clear = page.locator("#image-file button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
        # Clearing resets the status; wait for that, or the old result would look like the new.
        page.wait_for_function(
            "() => document.querySelector('#status').innerText.includes('waiting for an image')"
        )
        page.locator("#image-file input[type=file]").wait_for(state="attached")
    page.locator("#image-file input[type=file]").set_input_files(str(path))
    # Gradio shows "processing" over the old status while the request runs: wait it out.
    page.wait_for_function(
        """() => {
            const text = document.querySelector('#status').innerText;
            return !text.includes('processing') && !text.includes('waiting for an image')
                && (text.includes('done') || text.includes('Could not'));
        }"""
    )


def _shows_results(page: Any) -> None:
    probabilities = page.locator("#probabilities").inner_text()
    assert "benign" in probabilities and "malignant" in probabilities
    assert "%" in probabilities
    overlay = page.locator("#overlay img")
    overlay.wait_for(state="visible")
    width = overlay.evaluate("img => img.naturalWidth")
    assert width >= 256  # the heat map, scaled up for display


def test_notice_is_visible(page: Any) -> None:
    notice = page.locator("#notice")
    notice.wait_for(state="visible")
    assert "Research use only" in notice.inner_text()
    assert "not a diagnostic device" in notice.inner_text()


def test_lungsim_png_gives_probabilities_and_heat_map(
    page: Any, malignant_case: dict[str, Path], tmp_path: Path
) -> None:
    _upload(page, malignant_case["png"])
    assert "done" in page.locator("#status").inner_text()
    _shows_results(page)
    page.screenshot(path=str(tmp_path / "app_png.png"), full_page=True)
    assert (tmp_path / "app_png.png").stat().st_size > 10_000


def test_dicom_file_gives_probabilities_and_no_phi(
    page: Any, dicom_slice: Path, tmp_path: Path
) -> None:
    _upload(page, dicom_slice)
    assert "done" in page.locator("#status").inner_text()
    _shows_results(page)
    assert "dicom, CT" in page.locator("#image-info").inner_text()
    body = page.locator("body").inner_text()
    assert "Doe" not in body and "SECRET" not in body
    page.screenshot(path=str(tmp_path / "app_dicom.png"), full_page=True)


def test_bad_file_gets_a_message_in_the_page(page: Any, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.dcm"
    bogus.write_text("not an image at all")
    _upload(page, bogus)
    status = page.locator("#status").inner_text()
    assert "Could not process the image" in status
    assert "not a supported image format" in status
    assert "Traceback" not in page.locator("body").inner_text()
