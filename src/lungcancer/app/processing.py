"""What the web app does with an upload, free of any UI code (so it is testable directly).

Every public method takes the uploaded file's path (as Gradio hands it over) and returns plain
values. Bad input raises `LungCancerError` with a message written for the page; the UI layer
shows it. Work runs under a wall-clock limit so one pathological file cannot hold the page.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from lungcancer.app.uploads import UploadLimits, describe, load_mask, load_scan
from lungcancer.data.measure import measure_lesion
from lungcancer.errors import LungCancerError
from lungcancer.explain.run import ClassifierLike, explain_scan
from lungcancer.io.record import Scan

logger = logging.getLogger(__name__)

T = TypeVar("T")
PREDICTED = "predicted class"
NOTICE = "Research use only — not a diagnostic device."
# Uploaded images kept in memory so moving the slice picker does not re-read a volume.
_SCAN_CACHE_SIZE = 2


class ProcessingTimeoutError(LungCancerError):
    """Processing an upload took longer than the app allows."""


@dataclass(frozen=True)
class UploadInfo:
    """What the page shows right after an upload.

    Attributes:
        description: de-identified one-line description (format, modality, size, spacing).
        depth: number of axial slices (1 for a 2D image).
        default_slice: the slice to show first (the middle one).
    """

    description: str
    depth: int
    default_slice: int


@dataclass(frozen=True)
class Analysis:
    """Everything the page shows for one image.

    Attributes:
        probabilities: class name -> probability.
        overlay: RGB uint8 heat map over the lung-window image.
        explained_class: the class the map explains.
        lesion_text: lesion size from the mask, or "" without a mask.
        localisation_text: pointing game and energy share with a mask, else "".
        slice_index: the axial slice explained (2D models), else None (3D models see the
            volume or the lesion patch).
    """

    probabilities: dict[str, float]
    overlay: np.ndarray
    explained_class: str
    lesion_text: str
    localisation_text: str
    slice_index: int | None


def unexpected_error_message(exc: BaseException) -> str:
    """A page-safe message for a bug, with a server log entry free of data.

    Exception messages may quote file paths (whose names can hold patient names), so only the
    exception type and the code locations (file, line, function; no source text) are logged.
    """
    frames = "\n".join(
        f"  {frame.filename}:{frame.lineno} in {frame.name}"
        for frame in traceback.extract_tb(exc.__traceback__)
    )
    logger.error("processing failed with %s\n%s", type(exc).__name__, frames)
    return (
        f"Processing failed because of an internal error ({type(exc).__name__}). "
        "The image was not stored. Please report this with the server log."
    )


def page_message(exc: BaseException) -> str:
    """The status-box text (Markdown) for a failure: the error's own words, or a bug notice."""
    if isinstance(exc, LungCancerError):
        return f"**Could not process the image.** {exc}".replace("\n  ", "  \n")
    return f"**Could not process the image.** {unexpected_error_message(exc)}"


class Processor:
    """The app's work on uploads: read, predict, explain, measure.

    Args:
        clf: the loaded classifier.
        limits: upload caps and the processing timeout.
    """

    def __init__(self, clf: ClassifierLike, limits: UploadLimits | None = None) -> None:
        self.clf = clf
        self.limits = limits or UploadLimits()
        self.class_names = tuple(clf.class_names)
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lungcancer-app")
        self._cache: OrderedDict[tuple[str, int, int], Scan] = OrderedDict()
        self._cache_lock = threading.Lock()
        # Grad-CAM hooks one shared model; two requests must not interleave on it.
        self._model_lock = threading.Lock()

    def with_timeout(self, fn: Callable[[], T]) -> T:
        """Run `fn` under the processing time limit.

        Raises:
            ProcessingTimeoutError: the limit passed; the page gets a message, and the work is
                abandoned (its result is dropped when it finishes).
        """
        future = self._executor.submit(fn)
        try:
            return future.result(timeout=self.limits.timeout_s)
        except FuturesTimeout as exc:
            future.cancel()
            raise ProcessingTimeoutError(
                "processing took too long",
                path="the uploaded file",
                expected=f"at most {self.limits.timeout_s:.0f} s",
                hint="upload a single series or a smaller image",
            ) from exc

    def scan(self, upload: str | Path) -> Scan:
        """The uploaded image as a `Scan` (kept in a small memory cache per upload)."""
        path = Path(upload)
        if not path.is_file():
            raise LungCancerError("no image was uploaded", hint="upload an image first")
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        scan = self.with_timeout(lambda: load_scan(path, self.limits))
        with self._cache_lock:
            self._cache[key] = scan
            while len(self._cache) > _SCAN_CACHE_SIZE:
                self._cache.popitem(last=False)
        return scan

    def inspect(self, upload: str | Path) -> UploadInfo:
        """Read an upload and describe it (de-identified)."""
        scan = self.scan(upload)
        depth = scan.shape[0]
        return UploadInfo(describe(scan), depth, depth // 2)

    def analyse(
        self,
        upload: str | Path,
        *,
        slice_index: int | None = None,
        class_name: str | None = None,
        method: str = "gradcam",
        mask_upload: str | Path | None = None,
    ) -> Analysis:
        """Probabilities, Grad-CAM overlay and (with a mask) lesion size for an upload.

        Args:
            upload: the image file.
            slice_index: axial slice for 2D models (None: the middle slice, or the lesion's
                slice when a mask is given).
            class_name: class to explain; None or "predicted class" explains the prediction.
            method: "gradcam" or "gradcampp".
            mask_upload: optional lesion mask file with the image's geometry.
        """
        scan = self.scan(upload)
        target = None if class_name in (None, "", PREDICTED) else class_name

        def work() -> Analysis:
            mask = None
            if mask_upload is not None:
                mask = load_mask(mask_upload, scan, self.limits)
            index: int | None = None
            if self.clf.data_config.spatial_dims == 2:
                if slice_index is not None:
                    index = min(max(int(slice_index), 0), scan.shape[0] - 1)
                elif mask is not None and mask.any():
                    index = round(measure_lesion(mask, scan.spacing_mm).center_zyx[0])
                else:
                    index = scan.shape[0] // 2
            with self._model_lock:
                first = explain_scan(
                    self.clf,
                    scan,
                    mask=mask,
                    class_name=target,
                    method=method,
                    slice_index=index,
                )[0]
            return Analysis(
                probabilities=first.probabilities,
                overlay=first.overlay,
                explained_class=first.explained_class,
                lesion_text=lesion_text(mask, scan) if mask is not None else "",
                localisation_text=_localisation_text(first.pointing_hit, first.energy_share),
                slice_index=index,
            )

        return self.with_timeout(work)

    def close(self) -> None:
        """Stop the worker threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def lesion_text(mask: np.ndarray, scan: Scan) -> str:
    """Lesion size from a mask, as the page shows it."""
    if not mask.any():
        return "The mask is empty: no lesion to measure."
    lesion = measure_lesion(mask, scan.spacing_mm)
    plane = " (in-plane, single slice)" if lesion.in_plane_only else ""
    spacing_note = ""
    if "assumed" in str(scan.meta.get("spacing_from", "")):
        spacing_note = " The image carries no pixel spacing, so millimetres are assumed."
    return (
        f"Largest lesion: greatest diameter {lesion.diameter_mm:.1f} mm{plane}, "
        f"volume {lesion.volume_ml:.2f} ml, T descriptor by size alone {lesion.t_descriptor}, "
        f"Lung-RADS size band {lesion.lung_rads_band}.{spacing_note}"
    )


def _localisation_text(hit: bool | None, share: float | None) -> str:
    if hit is None or share is None:
        return ""
    where = "on" if hit else "not on"
    return (
        f"The heat map's maximum is {where} the lesion (pointing game); "
        f"{share:.0%} of the heat lies inside the mask."
    )
