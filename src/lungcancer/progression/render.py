"""Pictures of a progression: training sample grids, the frame strip, the GIF, the timeline plot.

Frames are shown through a display window (default lung window W1500/L-600, as the classifier
uses) and labelled with month, diameter and stage, so a strip read on its own says what it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from lungcancer.io.atomic import atomic_write_with

if TYPE_CHECKING:
    from lungcancer.progression.pairs import PatchSet
    from lungcancer.progression.timeline import TimelineFrame

DISPLAY_CENTER_HU = -600.0
DISPLAY_WIDTH_HU = 1500.0


def to_uint8(
    hu: np.ndarray, center_hu: float = DISPLAY_CENTER_HU, width_hu: float = DISPLAY_WIDTH_HU
) -> np.ndarray:
    """HU -> 8-bit grey through a display window."""
    low = center_hu - width_hu / 2
    scaled = (np.asarray(hu, np.float32) - low) / width_hu
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _middle_slice(patch: np.ndarray) -> np.ndarray:
    """A 2D view of a 2D or 3D patch (3D: the slice through the centre)."""
    return patch if patch.ndim == 2 else patch[patch.shape[0] // 2]


def save_sample_grid(
    path: str | Path, examples: PatchSet, rendered: np.ndarray, paired: bool
) -> None:
    """Write a training preview: rows input / generated (/ true future), one column per example.

    Args:
        path: PNG file.
        examples: the preview examples (window units).
        rendered: generator outputs for them, (N, 1, *patch).
        paired: add the true-future row.
    """
    rows = [examples.source[:, 0], rendered[:, 0]]
    if paired:
        rows.append(examples.target[:, 0])
    tiles = [
        np.concatenate([_unit_to_uint8(_middle_slice(img)) for img in row], axis=1) for row in rows
    ]
    grid = np.concatenate(tiles, axis=0)
    atomic_write_with(path, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))


def _unit_to_uint8(unit: np.ndarray) -> np.ndarray:
    return (np.clip((unit + 1.0) * 0.5, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _label_frame(image: np.ndarray, lines: Sequence[str], scale: int) -> Image.Image:
    """Upscale a grey frame and write its caption below it."""
    height, width = image.shape
    big = Image.fromarray(image).resize((width * scale, height * scale), Image.Resampling.NEAREST)
    caption_h = 12 * len(lines) + 6
    canvas = Image.new("L", (big.width, big.height + caption_h), color=0)
    canvas.paste(big, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((3, big.height + 3 + 12 * i), line, fill=255)
    return canvas


def _captions(frame: TimelineFrame) -> list[str]:
    # T, N and M spelled out: with a spread schedule the stage can rise through N or M alone.
    return [
        f"{frame.months:g} mo  {frame.diameter_mm:.1f} mm",
        f"{frame.t} {frame.n} {frame.m}  stage {frame.stage}",
    ]


def _scale_for(width: int) -> int:
    # Small crops are enlarged so a caption fits and the lesion is visible.
    return max(1, int(np.ceil(160 / max(width, 1))))


def frames_as_images(
    frames_hu: Sequence[np.ndarray], timeline: Sequence[TimelineFrame]
) -> list[Image.Image]:
    """Captioned 8-bit frames (month, diameter, T and stage under each)."""
    scale = _scale_for(frames_hu[0].shape[-1])
    return [
        _label_frame(to_uint8(_middle_slice(f)), _captions(t), scale)
        for f, t in zip(frames_hu, timeline, strict=True)
    ]


def save_strip(
    path: str | Path, frames_hu: Sequence[np.ndarray], timeline: Sequence[TimelineFrame]
) -> None:
    """Write the frames side by side as one PNG."""
    images = frames_as_images(frames_hu, timeline)
    strip = Image.new("L", (sum(i.width for i in images), max(i.height for i in images)))
    x = 0
    for image in images:
        strip.paste(image, (x, 0))
        x += image.width
    atomic_write_with(path, lambda tmp: strip.save(tmp, format="PNG"))


def save_gif(
    path: str | Path,
    frames_hu: Sequence[np.ndarray],
    timeline: Sequence[TimelineFrame],
    frame_ms: int = 700,
) -> None:
    """Write an animated GIF that loops over the frames."""
    images = frames_as_images(frames_hu, timeline)
    atomic_write_with(
        path,
        lambda tmp: images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0
        ),
    )


def save_timeline_plot(
    path: str | Path,
    timeline: Sequence[TimelineFrame],
    class_names: Sequence[str] = (),
) -> None:
    """Diameter (with the T-descriptor bands) and, when scored, the classifier's probabilities.

    Args:
        path: PNG file.
        timeline: frames with months, diameters and (optionally) probabilities.
        class_names: the classifier's classes, in probability order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    months = [f.months for f in timeline]
    scored = bool(class_names) and all(f.probabilities for f in timeline)
    fig, axes = plt.subplots(
        2 if scored else 1, 1, figsize=(6.5, 5.5 if scored else 3.2), sharex=True, squeeze=False
    )
    ax = axes[0, 0]
    ax.plot(months, [f.diameter_mm for f in timeline], marker="o", color="black")
    for bound_mm in (10, 20, 30, 40, 50, 70):
        ax.axhline(bound_mm, color="grey", lw=0.5, ls=":")
    for f in timeline:
        ax.annotate(
            f.stage,
            (f.months, f.diameter_mm),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    ax.set_ylabel("diameter (mm)")
    ax.set_title("growth model (Gompertz) and stage; dotted: T-descriptor bounds")
    if scored:
        ax2 = axes[1, 0]
        for name in class_names:
            ax2.plot(months, [f.probabilities[name] for f in timeline], marker=".", label=name)
        ax2.set_ylabel("classifier probability")
        ax2.set_ylim(0, 1)
        ax2.legend(fontsize=7, ncol=min(len(class_names), 4))
    axes[-1, 0].set_xlabel("months from baseline")
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
