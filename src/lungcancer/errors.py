"""Errors a user can act on.

Every error names the file (when there is one), what was expected, what was found and what to
do. The CLI prints them without a traceback; anything else that escapes is a bug.
"""

from __future__ import annotations

from pathlib import Path


class LungCancerError(Exception):
    """Base class of every error the toolkit raises on purpose.

    Args:
        message: what went wrong, in one sentence.
        path: the file or folder concerned.
        expected: what the toolkit needed.
        found: what it found instead.
        hint: what the user can do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        expected: str | None = None,
        found: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.expected = expected
        self.found = found
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [f"{self.path}: {self.message}" if self.path else self.message]
        if self.expected is not None:
            parts.append(f"expected: {self.expected}")
        if self.found is not None:
            parts.append(f"found: {self.found}")
        if self.hint is not None:
            parts.append(f"what to do: {self.hint}")
        return "\n  ".join(parts)

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments need help to cross process boundaries (multiprocessing pools).
        return (
            _rebuild,
            (type(self), self.message, self.path, self.expected, self.found, self.hint),
        )


def _rebuild(
    cls: type[LungCancerError],
    message: str,
    path: str | None,
    expected: str | None,
    found: str | None,
    hint: str | None,
) -> LungCancerError:
    return cls(message, path=path, expected=expected, found=found, hint=hint)


class ImageReadError(LungCancerError):
    """A file could not be read as a medical or raster image."""


class UnsupportedModalityError(ImageReadError):
    """The file is an image, but not of the modality the toolkit needs (e.g. MR where CT is)."""


class RoiChoiceError(ImageReadError):
    """A DICOM segmentation holds several ROIs and which one is meant is unclear or absent."""


class MissingDependencyError(LungCancerError):
    """An optional extra is needed for this input (e.g. pylibjpeg for compressed DICOM)."""


class GeometryMismatchError(LungCancerError):
    """A mask does not share its image's size, spacing, origin or direction."""


class DatasetError(LungCancerError):
    """A dataset layout, manifest or split is unusable as given."""


class ConfigError(LungCancerError):
    """A configuration file or flag has a wrong key or value."""


class CheckpointError(LungCancerError):
    """A checkpoint is unreadable, unsafe, or does not fit the request."""


class TrainingError(LungCancerError):
    """Training cannot go on (non-finite loss, empty split, ...)."""


class ExportError(LungCancerError):
    """A model cannot be exported, or the export does not reproduce the model's outputs."""
