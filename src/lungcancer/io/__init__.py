"""Reading medical images into `Scan` records (float32 z-y-x, spacing in mm, PHI removed)."""

from lungcancer.io.record import IntensityKind, Scan

__all__ = ["IntensityKind", "Scan"]
