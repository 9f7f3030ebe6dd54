"""The LungSim contact sheet: one row per class, lung window, diameter and stage under each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lungcancer.io.atomic import atomic_write_bytes
from lungcancer.synth.api import SynthConfig, render_patient
from lungcancer.synth.case import SimSample
from lungcancer.synth.writer import lung_window_u8, png_bytes, preview_slice

_TILE = 192
_CAPTION = 30
_LABEL_W = 96
_PAD = 4


def _caption(sample: SimSample) -> tuple[str, str]:
    r = sample.record
    if r["stage"] == "normal":
        return "normal", "no lesion"
    size = f"{float(r['diameter_mm']):.1f} mm"
    if r["stage"] == "benign":
        return f"benign {size}", str(r["calcification"] or "")
    tnm = f"{r['t']}{r['n']}{r['m']}"
    return f"{size}  {r['stage_group']}", tnm + ("" if r["invasion"] == "none" else " inv.")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def contact_sheet(cfg: SynthConfig, out_png: str | Path, per_class: int = 4) -> Path:
    """Render `per_class` patients of every class and save a labelled contact sheet.

    Args:
        cfg: the dataset config (size, dims, classes, seed and knobs are used; the
            lesion-centred slice of the first visit is shown).
        out_png: where to write the PNG.
        per_class: columns (patients per class).

    Returns:
        The written path.
    """
    classes = cfg.class_names
    font, small = _font(15), _font(13)
    width = _LABEL_W + per_class * (_TILE + _PAD)
    height = len(classes) * (_TILE + _CAPTION + _PAD)
    sheet = Image.new("L", (width, height), color=0)
    draw = ImageDraw.Draw(sheet)
    for row, name in enumerate(classes):
        y0 = row * (_TILE + _CAPTION + _PAD)
        draw.text((6, y0 + _TILE // 2 - 8), name.replace("_", " "), fill=255, font=font)
        for col in range(per_class):
            # Indices far from any dataset's own keep the sheet's patients distinct.
            index = 1_000_000 + row * 1000 + col
            sample = render_patient(cfg, index, name)[0]
            tile = Image.fromarray(lung_window_u8(preview_slice(sample)), mode="L")
            tile = tile.resize((_TILE, _TILE), Image.Resampling.LANCZOS)
            x0 = _LABEL_W + col * (_TILE + _PAD)
            sheet.paste(tile, (x0, y0))
            top, bottom = _caption(sample)
            draw.text((x0 + 2, y0 + _TILE + 1), top, fill=255, font=small)
            draw.text((x0 + 2, y0 + _TILE + 15), bottom, fill=190, font=small)
    out = Path(out_png)
    atomic_write_bytes(out, png_bytes(np.asarray(sheet)))
    return out
