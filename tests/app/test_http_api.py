"""Gradio's HTTP API, driven the way the README shows: with gradio_client."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client, handle_file

from lungcancer.app.processing import Processor
from lungcancer.app.server import RunningApp, start_app

# Gradio's own queue code warns about pandas options it uses; nothing for us to act on.
pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def running(cnn_bundle: Any) -> Iterator[RunningApp]:
    app = start_app(Processor(cnn_bundle), port=_free_port(), block=False)
    yield app
    app.close()


@pytest.fixture(scope="module")
def client(running: RunningApp) -> Client:
    return Client(running.url, verbose=False)


def test_named_endpoints_are_documented(client: Client) -> None:
    api = client.view_api(print_info=False, return_format="dict")
    assert {"/predict", "/explain"} <= set(api["named_endpoints"])


def test_predict_and_explain_over_http(client: Client, png_upload: Path) -> None:
    label = client.predict(handle_file(str(png_upload)), 0, api_name="/predict")
    assert {c["label"] for c in label["confidences"]} == {"benign", "malignant"}
    probs, overlay, lesion, status = client.predict(
        handle_file(str(png_upload)), 0, "malignant", "gradcam", None, api_name="/explain"
    )
    assert probs["confidences"] and Path(overlay).is_file()
    assert "evidence for 'malignant'" in status and lesion == ""


def test_bad_upload_is_a_message_not_a_trace(client: Client, mr_upload: Path) -> None:
    _, overlay, _, status = client.predict(
        handle_file(str(mr_upload)), 0, "predicted class", "gradcam", None, api_name="/explain"
    )
    assert overlay is None
    assert "Could not process the image" in status and "MR" in status
    assert "Traceback" not in status
    with pytest.raises(Exception, match="modality MR"):
        client.predict(handle_file(str(mr_upload)), 0, api_name="/predict")
