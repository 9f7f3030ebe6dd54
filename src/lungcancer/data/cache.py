"""Preprocessed samples written once as .npy, read back memory-mapped: later epochs decode nothing.

A sample's key hashes the bytes of its image file (every file of a DICOM series, the data file
of a detached .mhd/.nhdr header), the sample selector (slice, lesion centre, npz entry) and the
config fields that decide preprocessing. Changing the data or the preprocessing therefore
misses the cache instead of serving stale arrays; changing the seed or augmentation does not.

Per process: the folder is listed once per cache object, each file's content is hashed once
(remembered process-wide by path, size and modification time), and opened arrays are kept as
memory maps, so a warm lookup is a dictionary access and a page-cache read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lungcancer.config import DataConfig
from lungcancer.data.index import Sample
from lungcancer.data.transforms import preprocess_fields
from lungcancer.io.atomic import atomic_write_with
from lungcancer.io.dicom_masks import mask_reference

_CHUNK_BYTES = 1 << 20
_CACHE_LAYOUT = "v1"


def _detached_data_file(header: Path) -> Path | None:
    """The data file a .mhd or .nhdr header names, if it names one beside it."""
    name = header.name.lower()
    if not name.endswith((".mhd", ".nhdr")):
        return None
    key = "elementdatafile" if name.endswith(".mhd") else "data file"
    try:
        with open(header, encoding="latin-1") as fh:
            for line in fh:
                separator = "=" if key == "elementdatafile" else ":"
                left, _, right = line.partition(separator)
                if left.strip().lower() == key and right.strip():
                    value = right.strip()
                    if value.upper() in ("LOCAL", "LIST") or "%" in value:
                        return None
                    return header.parent / value
    except OSError:
        return None
    return None


# Digests known to this process, shared by every cache: (path, size, mtime_ns) -> digest and
# (folder, mtime_ns) -> digest.
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}
_FOLDER_DIGESTS: dict[tuple[str, int], str] = {}


class ContentHasher:
    """Hashes file (or series folder) contents once per process, keyed by path, size and mtime.

    Args:
        shared: remember digests process-wide (every `SampleCache` benefits); False keeps
            them to this object, as a fresh process would (benchmarks use it).
    """

    def __init__(self, *, shared: bool = True) -> None:
        self._known = _FILE_DIGESTS if shared else {}
        self._folders = _FOLDER_DIGESTS if shared else {}

    def _file_digest(self, path: Path) -> str:
        stat = path.stat()
        memo = (str(path), stat.st_size, stat.st_mtime_ns)
        digest = self._known.get(memo)
        if digest is None:
            hasher = hashlib.blake2b(digest_size=16)
            with open(path, "rb") as fh:
                while chunk := fh.read(_CHUNK_BYTES):
                    hasher.update(chunk)
            digest = hasher.hexdigest()
            self._known[memo] = digest
        return digest

    def digest(self, path: str | Path) -> str:
        """Hex digest of the content behind `path` (a file, its detached data, or a folder)."""
        target = Path(path)
        if target.is_dir():
            # A series folder is remembered by its own mtime (files added or removed), so a
            # warm lookup does not stat hundreds of slices; slices edited in place, keeping
            # their names, need a new process to be noticed.
            memo = (str(target), target.stat().st_mtime_ns)
            folder_digest = self._folders.get(memo)
            if folder_digest is None:
                parts = [
                    f"{p.relative_to(target).as_posix()}:{self._file_digest(p)}"
                    for p in sorted(target.rglob("*"))
                    if p.is_file() and not p.name.startswith(".")
                ]
                joined = "\n".join(parts).encode()
                folder_digest = hashlib.blake2b(joined, digest_size=16).hexdigest()
                self._folders[memo] = folder_digest
            return folder_digest
        digest = self._file_digest(target)
        data = _detached_data_file(target)
        if data is not None and data.is_file():
            digest += self._file_digest(data)
        return digest


def config_digest(cfg: DataConfig) -> str:
    """Digest of the preprocessing fields of a config (what the cached arrays depend on)."""
    text = json.dumps(preprocess_fields(cfg), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class SampleCache:
    """A folder of preprocessed arrays, one .npy per (content, selector, preprocessing) key.

    Args:
        root: the cache folder (created when first written).
        hasher: how file contents are hashed (default: the process-wide memo).
    """

    def __init__(self, root: str | Path, *, hasher: ContentHasher | None = None) -> None:
        self.root = Path(root) / _CACHE_LAYOUT
        self.hasher = hasher or ContentHasher()
        self._present: set[str] | None = None
        self._open: dict[str, np.ndarray] = {}
        self._config_digests: dict[int, tuple[DataConfig, str]] = {}
        self.hits = 0
        self.misses = 0

    def _listing(self) -> set[str]:
        if self._present is None:
            try:
                self._present = {
                    entry.name[:-4]
                    for entry in os.scandir(self.root)
                    if entry.name.endswith(".npy")
                }
            except FileNotFoundError:
                self._present = set()
        return self._present

    def _config(self, cfg: DataConfig) -> str:
        # Configs are frozen but hold dicts, so they are not hashable: remember by identity.
        known = self._config_digests.get(id(cfg))
        if known is None or known[0] is not cfg:
            known = (cfg, config_digest(cfg))
            self._config_digests[id(cfg)] = known
        return known[1]

    def key(self, sample: Sample, cfg: DataConfig) -> str:
        """The cache key of a sample under a preprocessing config."""
        text = f"{self.hasher.digest(sample.path)}|{sample.selector}|{self._config(cfg)}"
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def mask_key(self, sample: Sample, cfg: DataConfig) -> str:
        """The cache key of a sample's lesion mask on the input grid: the mask file's content
        and the image's (whose lung crop places the mask), selector and config."""
        mask_file, roi = mask_reference(sample.mask_path)
        chosen = f"#{roi}" if roi else ""  # keys of plain mask files stay as they were
        text = (
            f"mask|{self.hasher.digest(mask_file)}{chosen}|{self.hasher.digest(sample.path)}|"
            f"{sample.selector}|{self._config(cfg)}"
        )
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def path_for(self, key: str) -> Path:
        """Where the array of `key` lives."""
        return self.root / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The cached array (read-only memory map), or None when it was never written."""
        array = self._open.get(key)
        if array is not None:
            return array
        if key not in self._listing():
            # Another process (a DataLoader worker) may have written it since the listing.
            if not self.path_for(key).is_file():
                return None
            self._listing().add(key)
        try:
            array = np.load(self.path_for(key), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            # A file cut short by a crash before the atomic rename cannot exist; anything else
            # unreadable is treated as absent and rewritten.
            self._listing().discard(key)
            return None
        self._open[key] = array
        return array

    def put(self, key: str, array: np.ndarray) -> None:
        """Write `array` under `key` atomically (a reader never sees half a file)."""
        data = np.ascontiguousarray(array, dtype=np.float32)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, data, allow_pickle=False)

        atomic_write_with(self.path_for(key), write)
        self._listing().add(key)

    def load(
        self, sample: Sample, cfg: DataConfig, compute: Callable[[], np.ndarray]
    ) -> np.ndarray:
        """The sample's preprocessed array: from the cache, else `compute()` then cached.

        Args:
            sample: which image and which part of it.
            cfg: the preprocessing config.
            compute: decodes and preprocesses the sample on a miss.

        Returns:
            float32 array (read-only when it comes from the cache).
        """
        return self.load_keyed(self.key(sample, cfg), compute)

    def load_keyed(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """Like `load`, for a key computed beforehand (no file hashing or stat here).

        Datasets compute their keys once in the main process, so DataLoader workers, which
        may be restarted every epoch, never hash file contents again.
        """
        cached = self.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        array = compute()
        self.put(key, array)
        return array

    def __getstate__(self) -> dict[str, object]:
        # DataLoader workers started by spawn/forkserver get a fresh view: open memory maps
        # would otherwise be pickled as full array copies.
        state = dict(self.__dict__)
        state["_open"] = {}
        state["_present"] = None
        return state
