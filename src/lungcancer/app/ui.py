"""The Gradio page: upload a CT image, see class probabilities and where the model looked.

Named API endpoints (Gradio's HTTP API, see docs/readme/explain_serve.md):
- `/predict` (image file, slice index) -> class probabilities.
- `/explain` (image file, slice index, class, method, mask file) -> probabilities,
  Grad-CAM overlay, lesion text, status text.
Bad input never raises into the page: the status box says what was wrong and what to do; the
API's `/predict` raises `gr.Error` with the same message, which clients receive as an error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gradio as gr

from lungcancer.app.processing import (
    NOTICE,
    PREDICTED,
    Analysis,
    Processor,
    UploadInfo,
    page_message,
)
from lungcancer.errors import LungCancerError
from lungcancer.explain.gradcam import METHODS

TITLE = "lungcancer: CT classifier with Grad-CAM"
_UPLOAD_HELP = (
    "PNG/JPEG slice, a DICOM file, a .zip of one DICOM series, NIfTI or NRRD. "
    "The file type is read from the content, not the name."
)
# The notice stands out; uploaded file names are hidden (names of medical images often carry
# patient names, and a page may be shared on screen): the upload box says "uploaded file".
CSS = """
#notice {border: 2px solid #b45309; border-radius: 6px; padding: 4px 12px;}
#image-file td.filename > span, #mask-file td.filename > span {display: none;}
#image-file td.filename::after, #mask-file td.filename::after {content: "uploaded file";}
"""


def _status_ok(text: str) -> str:
    return f"**Status:** {text}"


def _safely(fn: Callable[..., Any], cleared: Callable[[], tuple[Any, ...]]) -> Callable[..., Any]:
    """Run a UI handler; on any error return `cleared()` outputs plus the status message."""

    @functools.wraps(fn)  # Gradio's API page names the parameters after `fn`'s own
    def wrapped(*args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # every failure becomes a message, never a stack trace
            return (*cleared(), page_message(exc))

    return wrapped


def build_app(
    processor: Processor, *, simulate_tab: Callable[[gr.File, gr.File], None] | None = None
) -> gr.Blocks:
    """The Gradio Blocks app around a `Processor`.

    Args:
        processor: reads uploads and runs the classifier.
        simulate_tab: optional builder of the progression section, called inside the
            Blocks context with the image and mask upload components.

    Returns:
        The app; call `.launch()` on it (see `serve`).
    """
    class_choices = [PREDICTED, *processor.class_names]

    def analyse(
        upload: str,
        slice_index: float | None,
        class_name: str | None,
        method: str | None,
        mask: str | None,
    ) -> tuple[Analysis, UploadInfo, tuple[Any, Any, str, str]]:
        info = processor.inspect(upload)
        result = processor.analyse(
            upload,
            slice_index=None if slice_index is None else int(slice_index),
            class_name=class_name,
            method=method or "gradcam",
            mask_upload=mask,
        )
        shown = result.slice_index
        where = "" if shown is None or info.depth == 1 else f" of slice {shown}"
        lesion = "  \n".join(t for t in (result.lesion_text, result.localisation_text) if t)
        status = _status_ok(
            f"done. The heat map{where} shows the evidence for '{result.explained_class}'."
        )
        return result, info, (result.probabilities, result.overlay, lesion, status)

    def explain(
        upload: str | None,
        slice_index: float | None,
        class_name: str | None,
        method: str | None,
        mask: str | None,
    ) -> tuple[Any, Any, str, str]:
        """Probabilities, Grad-CAM overlay, lesion text and status for an uploaded image."""
        if upload is None:
            return None, None, "", _status_ok("waiting for an image.")
        return analyse(upload, slice_index, class_name, method, mask)[2]

    def refresh(
        upload: str | None,
        slice_index: float | None,
        class_name: str | None,
        method: str | None,
        mask: str | None,
    ) -> tuple[Any, ...]:
        """`explain` plus the slice picker and the image description, for the page."""
        if upload is None:
            return (gr.update(visible=False), "", *explain(None, None, None, None, None))
        result, info, shown = analyse(upload, slice_index, class_name, method, mask)
        slider = gr.update(
            visible=info.depth > 1,
            minimum=0,
            maximum=max(info.depth - 1, 1),
            value=info.default_slice if result.slice_index is None else result.slice_index,
            step=1,
        )
        return (slider, info.description, *shown)

    def new_image(
        upload: str | None, _s: float | None, c: str | None, m: str | None, k: str | None
    ) -> tuple[Any, ...]:
        # A new image or mask: start at the default (or the lesion's) slice, not the old one.
        return refresh(upload, None, c, m, k)

    def predict(upload: str | None, slice_index: float | None) -> dict[str, float]:
        """Class probabilities for an uploaded image (API only)."""
        if upload is None:
            raise gr.Error("no image was uploaded", print_exception=False)
        try:
            return processor.analyse(
                upload, slice_index=None if slice_index is None else int(slice_index)
            ).probabilities
        except LungCancerError as exc:
            raise gr.Error(str(exc), print_exception=False) from exc

    # Gradio keeps its own copy of each upload for the session (so the slice picker can re-read it);
    # copies older than 15 minutes are deleted every 5 minutes, and all of them at restart.
    with gr.Blocks(title=TITLE, delete_cache=(300, 900), analytics_enabled=False) as app:
        gr.Markdown(f"# {TITLE}")
        gr.Markdown(f"**{NOTICE}** Outputs are model estimates for research.", elem_id="notice")
        with gr.Row():
            with gr.Column(scale=1):
                image_file = gr.File(label="CT image", file_count="single", elem_id="image-file")
                gr.Markdown(_UPLOAD_HELP)
                mask_file = gr.File(
                    label="Lesion mask (optional, same geometry)", elem_id="mask-file"
                )
                slice_slider = gr.Slider(
                    label="Axial slice", minimum=0, maximum=1, step=1, value=0, visible=False
                )
                class_choice = gr.Dropdown(
                    class_choices, value=PREDICTED, label="Explain the evidence for"
                )
                method = gr.Radio(list(METHODS), value="gradcam", label="Method")
                analyse_button = gr.Button("Analyse", variant="primary")
                info = gr.Markdown(elem_id="image-info")
            with gr.Column(scale=1):
                status = gr.Markdown(_status_ok("waiting for an image."), elem_id="status")
                probabilities = gr.Label(label="Class probabilities", elem_id="probabilities")
                overlay = gr.Image(
                    label="Grad-CAM overlay (lung window)",
                    type="numpy",
                    format="png",
                    interactive=False,
                    elem_id="overlay",
                )
                lesion = gr.Markdown(elem_id="lesion")
        if simulate_tab is not None:
            simulate_tab(image_file, mask_file)
        inputs = [image_file, slice_slider, class_choice, method, mask_file]
        api_outputs = [probabilities, overlay, lesion, status]
        page_outputs = [slice_slider, info, *api_outputs]

        def cleared_page() -> tuple[Any, ...]:
            return gr.update(), "", None, None, ""

        def cleared_api() -> tuple[Any, ...]:
            return None, None, ""

        for trigger in (image_file.change, mask_file.change):
            trigger(
                _safely(new_image, cleared_page), inputs, page_outputs, api_visibility="private"
            )
        for trigger in (slice_slider.release, class_choice.change, method.change):
            trigger(_safely(refresh, cleared_page), inputs, page_outputs, api_visibility="private")
        analyse_button.click(_safely(explain, cleared_api), inputs, api_outputs, api_name="explain")
        # API only: the same image and slice inputs, probabilities out.
        predict_button = gr.Button(visible=False)
        predict_button.click(
            predict, [image_file, slice_slider], [probabilities], api_name="predict"
        )
    return app
