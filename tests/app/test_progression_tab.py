"""The progression section: the GAN's strip, GIF and timeline for an uploaded lesion."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from lungcancer.app.processing import Processor
from lungcancer.app.progression_tab import TIMELINE_HEADERS, ProgressionRunner
from lungcancer.app.server import start_app
from lungcancer.errors import LungCancerError

# Gradio's own queue code warns about pandas options it uses; nothing for us to act on.
pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def runner(cnn_bundle: Any, gan_checkpoint: Path, classifier_checkpoint: Path) -> ProgressionRunner:
    return ProgressionRunner(gan_checkpoint, classifier_checkpoint, Processor(cnn_bundle))


def test_simulation_of_a_masked_lesion(
    runner: ProgressionRunner, nrrd_upload: tuple[Path, Path]
) -> None:
    image, mask = nrrd_upload
    view = runner.run(image, mask, "0,6,12", "adeno")
    assert view.strip.is_file() and view.gif.is_file()
    with Image.open(view.gif) as gif:
        assert gif.n_frames == 3
    assert [row[0] for row in view.timeline] == [0.0, 6.0, 12.0]
    assert all(len(row) == len(TIMELINE_HEADERS) for row in view.timeline)
    diameters = [row[1] for row in view.timeline]
    assert diameters == sorted(diameters)  # the lesion grows
    assert all(row[7].startswith(("benign", "malignant")) for row in view.timeline)
    assert any("assumed" in note for note in view.notes)
    runner.close()
    assert not view.strip.exists()


def test_simulation_needs_a_lesion_and_ct_in_hu(
    runner: ProgressionRunner, nrrd_upload: tuple[Path, Path], png_upload: Path
) -> None:
    image, _ = nrrd_upload
    with pytest.raises(LungCancerError, match="where the lesion is"):
        runner.run(image, None, "0,6", "adeno")
    view = runner.run(image, None, "0,6", "squamous", "2,14,9", 6.0)
    assert len(view.timeline) == 2
    with pytest.raises(LungCancerError, match="Hounsfield"):
        runner.run(png_upload, None, "0,6", "adeno", "0,14,9", 6.0)
    with pytest.raises(LungCancerError):
        runner.run(image, None, "soon", "adeno", "2,14,9", 6.0)
    runner.close()


def test_simulate_endpoint_over_http(
    runner: ProgressionRunner, nrrd_upload: tuple[Path, Path]
) -> None:
    image, mask = nrrd_upload
    app = start_app(runner.processor, port=_free_port(), block=False, progression=runner)
    try:
        client = Client(app.url, verbose=False)
        assert (
            "/simulate"
            in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        )
        strip, gif, timeline, status = client.predict(
            handle_file(str(image)),
            handle_file(str(mask)),
            "0,12",
            "adeno",
            "",
            None,
            api_name="/simulate",
        )
        assert Path(strip).is_file() and Path(gif).is_file()
        assert "done" in status
        assert [row[0] for row in timeline["data"]] == [0, 12]
    finally:
        app.close()
    assert not runner.workdir.exists()  # the app's simulation files are gone
