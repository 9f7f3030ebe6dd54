"""The progression section of the page: the GAN's simulated growth of the uploaded lesion.

It reuses the image (and mask) uploaded above, runs `lungcancer.progression.simulate` with the
served classifier scoring every frame, and shows the strip, the GIF and the timeline. Outputs
live in a private folder of the app; only the latest few simulations are kept, and the folder is
removed when the app stops.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from lungcancer.app.processing import Processor, page_message
from lungcancer.app.uploads import load_mask
from lungcancer.errors import LungCancerError

HISTOLOGIES = ("adeno", "squamous", "large-cell", "ground-glass")
TIMELINE_HEADERS = ["months", "diameter (mm)", "T", "N", "M", "stage group", "stage", "model says"]
# Simulations whose files stay on disk (older ones are deleted; Gradio keeps its own copies).
_KEEP_RUNS = 8


@dataclass(frozen=True)
class SimulationView:
    """What the page shows for one simulation.

    Attributes:
        strip: PNG of the lesion at every time point.
        gif: animated GIF of the same frames.
        timeline: one row per time point (see `TIMELINE_HEADERS`).
        notes: assumptions the user should know.
    """

    strip: Path
    gif: Path
    timeline: list[list[Any]]
    notes: tuple[str, ...]


class ProgressionRunner:
    """Runs simulations for uploads with one loaded GAN.

    Args:
        gan_ckpt: GAN checkpoint written by `lungcancer gan train`.
        classifier_ckpt: the served classifier's checkpoint (it scores every frame).
        processor: the app's processor (upload reading, limits, timeout).
    """

    def __init__(
        self, gan_ckpt: str | Path, classifier_ckpt: str | Path, processor: Processor
    ) -> None:
        from lungcancer.progression.checkpoint import load_gan

        self.gan = load_gan(gan_ckpt)
        self.classifier_ckpt = Path(classifier_ckpt)
        self.processor = processor
        self._root = Path(tempfile.mkdtemp(prefix="lungcancer-progression-"))
        self._runs: list[Path] = []
        self._lock = threading.Lock()

    def run(
        self,
        upload: str | Path,
        mask_upload: str | Path | None,
        months: str,
        histology: str,
        centre_zyx: str = "",
        diameter_mm: float | None = None,
    ) -> SimulationView:
        """Simulate the uploaded lesion's growth.

        Args:
            upload: the CT image (HU: DICOM, NIfTI, NRRD; not PNG/JPEG).
            mask_upload: lesion mask; without it, `centre_zyx` and `diameter_mm` are needed.
            months: comma-separated time points, e.g. "0,6,12,24".
            histology: growth-model histology.
            centre_zyx: "z,y,x" lesion centre in voxels, when there is no mask.
            diameter_mm: lesion diameter, with a centre.
        """
        from lungcancer.progression.simulate import parse_months, parse_point, simulate

        scan = self.processor.scan(upload)
        mask = None if mask_upload is None else load_mask(mask_upload, scan, self.processor.limits)
        point = parse_point(centre_zyx) if mask is None and centre_zyx.strip() else None
        if mask is None and point is None:
            raise LungCancerError(
                "the simulation needs to know where the lesion is",
                expected="a lesion mask upload, or a centre z,y,x with a diameter",
                hint="upload the lesion mask, or type the lesion centre and its diameter",
            )
        time_points = parse_months(months)
        with self._lock:
            out_dir = self._root / f"run{len(self._runs):05d}"
            self._runs.append(out_dir)
            while len(self._runs) > _KEEP_RUNS:
                shutil.rmtree(self._runs.pop(0), ignore_errors=True)

        def work() -> SimulationView:
            result = simulate(
                self.gan,
                scan,
                mask=mask,
                point_zyx=point,
                diameter_mm=diameter_mm or None,
                classifier=self.classifier_ckpt,
                months=time_points,
                histology=histology,
                out_dir=out_dir,
            )
            rows = []
            for frame in result.timeline:
                probs = frame.probabilities
                top = max(probs, key=lambda k: probs[k]) if probs else ""
                says = f"{top} {probs[top]:.0%}" if top else ""
                rows.append(
                    [
                        frame.months,
                        round(frame.diameter_mm, 1),
                        frame.t,
                        frame.n,
                        frame.m,
                        frame.stage_group,
                        frame.stage,
                        says,
                    ]
                )
            return SimulationView(result.files["strip"], result.files["gif"], rows, result.notes)

        return self.processor.with_timeout(work)

    @property
    def workdir(self) -> Path:
        """The app's private folder of simulation outputs."""
        return self._root

    def close(self) -> None:
        """Remove every simulation's files."""
        shutil.rmtree(self._root, ignore_errors=True)


def progression_section(runner: ProgressionRunner) -> Callable[[Any, Any], None]:
    """A builder for the progression section, given the page's image and mask inputs."""

    def build(image_file: Any, mask_file: Any) -> None:
        with gr.Accordion("Progression simulation (GAN)", open=True):
            gr.Markdown(
                "Simulated growth of the uploaded lesion under a Gompertz growth model, drawn "
                "by the GAN and scored by the classifier. **A what-if illustration, not a "
                "prediction for this patient.** Needs a CT image in HU (not PNG/JPEG) and the "
                "lesion mask, or the lesion centre and diameter."
            )
            with gr.Row():
                months = gr.Textbox("0,3,6,12,18,24", label="Months from now")
                histology = gr.Dropdown(list(HISTOLOGIES), value="adeno", label="Histology")
                centre = gr.Textbox("", label="Lesion centre z,y,x (voxels), without a mask")
                diameter = gr.Number(None, label="Lesion diameter (mm), with a centre")
            button = gr.Button("Simulate progression")
            sim_status = gr.Markdown(elem_id="simulation-status")
            with gr.Row():
                strip = gr.Image(type="filepath", label="Progression strip", interactive=False)
                gif = gr.Image(type="filepath", label="Animation", interactive=False)
            timeline = gr.Dataframe(headers=TIMELINE_HEADERS, label="Timeline", interactive=False)

        def run(
            upload: str | None,
            mask: str | None,
            months_text: str,
            histology_name: str,
            centre_text: str,
            diameter_value: float | None,
        ) -> tuple[Any, Any, Any, str]:
            """Strip PNG, GIF, timeline rows and status for the uploaded lesion."""
            if upload is None:
                return None, None, None, "**Status:** upload a CT image first."
            try:
                view = runner.run(
                    upload, mask, months_text, histology_name, centre_text or "", diameter_value
                )
            except Exception as exc:  # every failure becomes a message, never a stack trace
                return None, None, None, page_message(exc)
            notes = "  \n".join(f"- {n}" for n in view.notes)
            return str(view.strip), str(view.gif), view.timeline, f"**Status:** done.  \n{notes}"

        button.click(
            run,
            [image_file, mask_file, months, histology, centre, diameter],
            [strip, gif, timeline, sim_status],
            api_name="simulate",
        )

    return build
