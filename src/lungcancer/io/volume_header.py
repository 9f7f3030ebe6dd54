"""A volume header's promise checked against the bytes on disk, before any voxel is allocated.

ITK allocates (and zero-fills) the whole voxel buffer a header declares before it reads the
data: a 400-byte NRRD whose `sizes` line was damaged to "2000 2000 600" costs 4.8 GB and
seconds, and a detached header naming /dev/zero never runs out of data. So the header is read
first (`ImageFileReader.ReadImageInformation`), the files holding the voxels are found, and
a header that declares more voxels than those files can hold is refused.
"""

from __future__ import annotations

import math
import stat
from pathlib import Path
from typing import Any

from lungcancer.errors import ImageReadError

# Deflate (gzip, zlib) shrinks data at most 1032 times; raw and text encodings not at all. A
# voxel takes at least one byte, so more voxels than this many times the data is a lie.
MAX_VOXELS_PER_STORED_BYTE = 1100
_HEADER_BYTES = 65536
_DATA_FILE_KEYS = {"nrrd": ("data file", "datafile"), "metaimage": ("elementdatafile",)}
_NIFTI_PAIR_MAGIC = (b"ni1\x00", b"ni2\x00")


def _named_data_file(format_name: str, head: bytes) -> str | None:
    keys = _DATA_FILE_KEYS.get(format_name, ())
    separator = "=" if format_name == "metaimage" else ":"
    # An attached NRRD's header ends at its first blank line; binary voxels follow.
    text = head.split(b"\n\n", 1)[0].decode("latin-1")
    for line in text.splitlines():
        key, found, value = line.partition(separator)
        if found and key.strip().lower() in keys:
            return value.strip()
    return None


def data_files(path: Path, format_name: str) -> list[Path]:
    """The files that hold a volume's voxels: the file itself, or what its header names.

    Args:
        path: the volume file (for detached formats, the header).
        format_name: "nifti", "nrrd" or "metaimage".

    Returns:
        Existing or not, the files a reader would take voxels from.

    Raises:
        ImageReadError: the header splits the voxels over a list or pattern of files.
    """
    with open(path, "rb") as fh:
        head = fh.read(_HEADER_BYTES)
    if format_name == "nifti":
        if head[344:348] in _NIFTI_PAIR_MAGIC or head[4:8] in _NIFTI_PAIR_MAGIC:
            images = [path.with_suffix(s) for s in (".img", ".img.gz")]
            return [path, *([p for p in images if p.exists()] or images[:1])]
        return [path]
    named = _named_data_file(format_name, head)
    if named is None or named.upper() == "LOCAL":
        return [path]
    if named.upper().startswith("LIST") or "%" in named or len(named.split()) > 1:
        raise ImageReadError(
            "the header splits the voxels over several data files",
            path=path,
            expected="voxels in the file itself or in one data file",
            found=f"data file entry {named[:100]!r}",
            hint="re-save the volume as a single file (.nrrd, .mha or .nii.gz)",
        )
    data = Path(named)
    return [data if data.is_absolute() else path.parent / data]


def check_declared_size(reader: Any, path: Path, format_name: str) -> None:
    """Refuse a header that declares more voxels than its data files can hold.

    Args:
        reader: a `SimpleITK.ImageFileReader` after `ReadImageInformation()`.
        path: the volume file (for detached formats, the header).
        format_name: "nifti", "nrrd" or "metaimage".

    Raises:
        ImageReadError: a data file is not a regular file (a device, a FIFO), or the declared
            size cannot come from the bytes on disk.
    """
    stored = 0
    for data in data_files(path, format_name):
        try:
            mode = data.stat()
        except OSError:
            # A missing data file is ITK's to report, with the name it looked for.
            return
        if not stat.S_ISREG(mode.st_mode):
            raise ImageReadError(
                "the volume's data file is not a regular file",
                path=path,
                expected="a data file on disk",
                found=f"{data} (a device, pipe or folder)",
                hint="point the header at the .raw/.img file that holds the voxels",
            )
        stored += mode.st_size
    size = [int(v) for v in reader.GetSize()]
    voxels = math.prod(size) * int(reader.GetNumberOfComponents())
    if voxels > MAX_VOXELS_PER_STORED_BYTE * stored:
        raise ImageReadError(
            "the header declares more voxels than the file can hold",
            path=path,
            expected=f"at most {MAX_VOXELS_PER_STORED_BYTE * stored} voxels in {stored} bytes",
            found=f"the header declares {' x '.join(map(str, size))} = {voxels} voxels",
            hint="the header is damaged or its data file is incomplete: re-export the volume",
        )
