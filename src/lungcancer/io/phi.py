"""De-identification: salted patient keys and the whitelist of DICOM attributes we keep.

Nothing outside the whitelist ever reaches `Scan.meta`; identifiers are replaced by salted
SHA-256 keys, so the same patient gets the same key on one installation (or with one shared
salt) and the key cannot be reversed by hashing a list of known IDs without the salt.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lungcancer.errors import LungCancerError

SALT_ENV = "LUNGCANCER_PHI_SALT"
KEY_HEX_CHARS = 16
SHORT_KEY_HEX_CHARS = 8

MetaScalar = str | int | float | bool


def _salt_file() -> Path:
    cache_root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_root) / "lungcancer" / "phi_salt"


def phi_salt() -> str:
    """The salt for patient keys: `$LUNGCANCER_PHI_SALT`, else a random per-user salt file.

    The file (`~/.cache/lungcancer/phi_salt`, mode 0600) is created once with a random value.
    Share the environment variable between machines when keys must agree across them.

    Returns:
        The salt string.
    """
    from_env = os.environ.get(SALT_ENV)
    if from_env:
        return from_env
    path = _salt_file()
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    salt = secrets.token_hex(32)
    try:
        # O_EXCL: two processes racing to create the salt must end up agreeing on one value.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise LungCancerError(
            "cannot create the de-identification salt file",
            path=path,
            expected="a writable cache folder",
            found=str(exc.strerror),
            hint=f"set the environment variable {SALT_ENV} to a secret string",
        ) from exc
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(salt)
    return salt


def _salted_hash(value: str, n_chars: int) -> str:
    digest = hashlib.sha256(f"{phi_salt()}\x00{value}".encode()).hexdigest()
    return digest[:n_chars]


def patient_key(raw_id: str) -> str:
    """A de-identified, stable key for a patient identifier.

    Args:
        raw_id: the identifier as found in the data (DICOM PatientID, a manifest column...).

    Returns:
        16 hex characters of SHA-256 over the salt and the identifier.
    """
    return _salted_hash(raw_id.strip(), KEY_HEX_CHARS)


def short_key(uid: str) -> str:
    """A short salted key for a non-patient identifier such as a SeriesInstanceUID.

    Args:
        uid: the raw identifier.

    Returns:
        8 hex characters, enough to tell the series of one folder apart in logs and tables.
    """
    return _salted_hash(uid.strip(), SHORT_KEY_HEX_CHARS)


def _text(value: Any) -> str | None:
    # Multi-valued attributes (e.g. ConvolutionKernel "B30f\\smooth") are joined; control
    # characters are dropped so a value cannot forge extra log lines.
    if value is None:
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        text = "/".join(str(v) for v in value)
    else:
        text = str(value)
    text = "".join(ch for ch in text if ch.isprintable()).strip()
    return text[:64] or None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, 4)


def _pair(value: Any) -> str | None:
    try:
        first, second = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return f"{first:g},{second:g}"


def _integer(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# DICOM keyword -> (meta key, converter). Technical acquisition parameters only: no names,
# IDs, UIDs, dates, times, institutions, physicians or free-text descriptions.
DICOM_WHITELIST: dict[str, tuple[str, Callable[[Any], MetaScalar | None]]] = {
    "Modality": ("modality", _text),
    "Manufacturer": ("manufacturer", _text),
    "ManufacturerModelName": ("manufacturer_model", _text),
    "KVP": ("kvp", _number),
    "XRayTubeCurrent": ("tube_current_ma", _number),
    "ConvolutionKernel": ("convolution_kernel", _text),
    "SliceThickness": ("slice_thickness_mm", _number),
    "SpacingBetweenSlices": ("spacing_between_slices_mm", _number),
    "PixelSpacing": ("pixel_spacing_mm", _pair),
    "ReconstructionDiameter": ("reconstruction_diameter_mm", _number),
    "Rows": ("rows", _integer),
    "Columns": ("columns", _integer),
    "BitsStored": ("bits_stored", _integer),
    "PhotometricInterpretation": ("photometric", _text),
    # Stored value (before rescale) that marks voxels outside the reconstructed field of view.
    "PixelPaddingValue": ("pixel_padding_value", _integer),
    "BodyPartExamined": ("body_part", _text),
    "PatientPosition": ("patient_position", _text),
}


def raw_dicom_text(dataset: Any, keyword: str) -> str | None:
    """An identifier's text straight from its stored bytes, without pydicom's conversion.

    pydicom validates a value when it converts it and logs invalid ones verbatim ("Invalid
    value for VR UI: '...'"), which would put identifiers into the logs; reading the raw
    bytes never triggers that.

    Args:
        dataset: a `pydicom.Dataset`.
        keyword: the attribute, e.g. "PatientID" or "SeriesInstanceUID".

    Returns:
        The stripped text, or None when the attribute is absent or empty.
    """
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None or tag not in dataset:
        return None
    value = dataset.get_item(tag, keep_deferred=True).value
    if isinstance(value, bytes):
        # Identifiers are ASCII in practice; latin-1 never fails and maps ASCII unchanged.
        value = value.decode("latin-1")
    text = str(value).strip(" \x00")
    return text or None


def whitelisted_dicom_meta(dataset: Any) -> dict[str, MetaScalar]:
    """The de-identified metadata of one DICOM dataset.

    Only attributes in `DICOM_WHITELIST` are kept; `contrast` records only whether a contrast
    agent is named (the name itself is free text); `patient_key` is the salted hash of
    PatientID.

    Args:
        dataset: a `pydicom.Dataset` (headers only is enough).

    Returns:
        Meta entries safe to log and to write next to outputs.
    """
    meta: dict[str, MetaScalar] = {}
    for keyword, (meta_key, convert) in DICOM_WHITELIST.items():
        value = convert(dataset.get(keyword))
        if value is not None:
            meta[meta_key] = value
    meta["contrast"] = raw_dicom_text(dataset, "ContrastBolusAgent") is not None
    raw_id = raw_dicom_text(dataset, "PatientID")
    if raw_id is not None:
        meta["patient_key"] = patient_key(raw_id)
    return meta
