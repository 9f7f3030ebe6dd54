"""Dataset layouts on disk -> `DatasetIndex`, and reading any sample back as a `Scan`.

Layouts (`layout=` name, what it reads):
- "folders": one folder per class, optionally under train/valid(val)/test folders. Class
  folder suffixes such as `adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib` ("Chest CT-Scan
  images") become the base class; IQ-OTH/NCCD's `Bengin cases` becomes `benign`. A class
  folder holds image files, DICOM series folders, or per-patient folders of either.
- "manifest": a CSV manifest (see `manifest.py`).
- "volumes": class folders of volumes with lesion masks (`case.nii.gz` + `case_mask.nii.gz`,
  `_seg` and `_label` also work; or a folder holding one image or DICOM series and one
  `mask.*`), one sample per lesion (connected component).
- "luna16": a LUNA16-style annotations CSV beside the .mhd volumes.
- "medmnist": a MedMNIST `nodulemnist3d.npz` file (its train/val/test arrays).

Patient ids come from the manifest, the DICOM PatientID (as a salted key), a per-patient folder
name, or a filename pattern (LIDC-IDRI-0001, LUNG1-001, patient_12); every raw id is hashed.
Files that cannot be used are skipped and listed in `DatasetIndex.problems` (PNG files are
verified by their chunk checksums, DICOM by their header and pixel-data length; other images
are checked when decoded); hidden files (names starting with ".") are ignored.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from lungcancer.data.index import DatasetIndex, Sample
from lungcancer.data.manifest import (
    LUNA_COLUMNS,
    SPLIT_ALIASES,
    LayoutRead,
    csv_header,
    lesion_samples,
    read_luna16,
    read_manifest,
)
from lungcancer.errors import DatasetError, ImageReadError, LungCancerError
from lungcancer.io import Scan, detect_format, patient_key, read_image
from lungcancer.io.dicom import read_dicom_header

LAYOUTS = ("folders", "manifest", "volumes", "luna16", "medmnist")
MANIFEST_NAMES = ("manifest.csv", "dataset.csv", "labels.csv")
LUNA_NAMES = ("annotations.csv", "candidates.csv", "candidates_V2.csv")
_MASK_TOKENS = ("mask", "seg", "segmentation", "label", "labels", "lesion")
_VOLUME_FORMATS = ("nifti", "nrrd", "metaimage")
# Data halves of detached headers (.mhd/.nhdr name them); never samples on their own.
_DATA_SUFFIXES = (".raw", ".zraw", ".raw.gz", ".img")
# "Chest CT-Scan images" class folders: base class, then location_T_N_M_stage.
_TNM_SUFFIX = re.compile(r"^(?P<base>.+?)_[a-z.]+_t\w*_n\w*_m\w*_\w+$", re.IGNORECASE)
_PATIENT_PATTERN = re.compile(
    r"(LIDC-IDRI-\d+|LUNG1-\d+|(?:patient|pat|subject)[_-]?\d+)", re.IGNORECASE
)
# IQ-OTH/NCCD misspells "benign" in its folder name.
_CLASS_SPELLINGS = {"bengin": "benign"}
_NPZ_CLASS_NAMES = {"nodulemnist3d": ("benign", "malignant")}


def normalise_class_name(folder_name: str) -> str:
    """The class a folder name stands for: lower case, dataset suffixes removed.

    "adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib" -> "adenocarcinoma", "Bengin cases" ->
    "benign", "Normal cases" -> "normal", "large.cell.carcinoma" stays as it is.
    """
    name = folder_name.strip()
    match = _TNM_SUFFIX.match(name)
    if match:
        name = match.group("base")
    name = name.lower()
    name = re.sub(r"\s+cases?$", "", name)
    return _CLASS_SPELLINGS.get(name, name)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _visible(p))


def _split_folders(root: Path) -> dict[str, Path]:
    return {
        SPLIT_ALIASES[p.name.lower()]: p
        for p in _children(root)
        if p.is_dir() and p.name.lower() in SPLIT_ALIASES
    }


def _mask_image_stem(name: str) -> str | None:
    """For a mask file name, the stem its image has ("" = the folder's only image); else None."""
    stem = name.lower()
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".tif", ".tiff"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    else:
        return None
    if stem in _MASK_TOKENS:
        return ""
    for token in _MASK_TOKENS:
        for sep in ("_", "-", "."):
            if stem.endswith(sep + token):
                return name[: len(stem) - len(token) - 1]
    return None


def _patient_from_name(name: str) -> str:
    match = _PATIENT_PATTERN.search(name)
    return patient_key(match.group(1).upper()) if match else ""


class _FolderScanner:
    """Walks class folders, sorting files into samples and listed problems."""

    def __init__(self, root: Path, read: LayoutRead) -> None:
        self.root = root
        self.read = read

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _skip(self, path: Path, why: str) -> None:
        self.read.problems.append(f"{self._relative(path)}: skipped: {why}")

    def _kind(self, path: Path) -> str | None:
        if path.name.lower().endswith(_DATA_SUFFIXES):
            return None
        try:
            return detect_format(path)
        except ImageReadError as exc:
            self._skip(path, f"not an image ({exc.found})")
            return None

    def _png_ok(self, path: Path) -> bool:
        """Whether a PNG is complete (chunk checksums, no decoding); a broken one is listed."""
        from PIL import Image

        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as exc:  # Pillow raises many types for damaged files
            self._skip(path, f"corrupt or truncated PNG ({type(exc).__name__}: {exc})"[:200])
            return False
        return True

    def _dicom_ok(self, path: Path) -> str | None:
        """The file's patient key if it is a usable CT DICOM image, else None (listed)."""
        try:
            dataset = read_dicom_header(path)
        except ImageReadError as exc:
            self._skip(path, exc.found or exc.message)
            return None
        modality = str(dataset.get("Modality", ""))
        if modality != "CT":
            self._skip(path, f"DICOM modality {modality or 'missing'}, expected CT")
            return None
        raw = str(dataset.get("PatientID", "") or "").strip()
        return patient_key(raw) if raw else ""

    def _is_series(self, folder: Path) -> bool:
        files = [p for p in _children(folder) if p.is_file()]
        if not files:
            return False
        try:
            return detect_format(files[0]) == "dicom"
        except ImageReadError:
            return False

    def folder_samples(self, folder: Path, patient: str) -> list[tuple[Path, str]]:
        """(path, patient key) of every usable image under a class (or patient) folder."""
        found: list[tuple[Path, str]] = []
        for child in _children(folder):
            if child.is_dir():
                if self._is_series(child):
                    first = next(p for p in _children(child) if p.is_file())
                    key = self._dicom_ok(first)
                    if key is not None:
                        found.append((child, key or patient or _patient_from_name(child.name)))
                else:
                    # A sub-folder of a class folder is one patient's images.
                    sub_patient = patient or patient_key(child.name)
                    found.extend(self.folder_samples(child, sub_patient))
                continue
            kind = self._kind(child)
            if kind is None or (kind == "png" and not self._png_ok(child)):
                continue
            key = patient or _patient_from_name(child.name)
            if kind == "dicom":
                dicom_key = self._dicom_ok(child)
                if dicom_key is None:
                    continue
                key = dicom_key or key
            found.append((child, key))
        return found

    def volume_cases(self, folder: Path) -> list[tuple[Path, Path]]:
        """(image, mask) pairs under a class folder; unpaired images are listed."""
        pairs: list[tuple[Path, Path]] = []
        entries = _children(folder)
        files = [p for p in entries if p.is_file()]
        masks = {p: stem for p in files if (stem := _mask_image_stem(p.name)) is not None}
        kinds = {p: kind for p in files if p not in masks and (kind := self._kind(p))}
        singles = [p for p, kind in kinds.items() if kind != "dicom"]
        has_series = any(kind == "dicom" for kind in kinds.values())
        used: set[Path] = set()
        for mask, stem in masks.items():
            image: Path | None
            if stem == "":
                # "mask.nii.gz" pairs with the folder's one image, or its DICOM series.
                image = singles[0] if len(singles) == 1 else (folder if has_series else None)
            else:
                image = next((p for p in singles if _name_stem(p.name) == stem.lower()), None)
            if image is None:
                self._skip(mask, "a mask without its image (expected NAME.<ext> beside it)")
                continue
            used.add(image)
            pairs.append((image, mask))
        for image in singles:
            if image not in used:
                self._skip(image, "no lesion mask beside it (expected NAME_mask.<ext>)")
        for sub in (p for p in entries if p.is_dir()):
            pairs.extend(self.volume_cases(sub))
        return pairs


def _name_stem(name: str) -> str:
    lower = name.lower()
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if lower.endswith(suffix):
            return lower[: -len(suffix)]
    return lower.rsplit(".", 1)[0]


def _class_folders(root: Path) -> list[tuple[str, Path]]:
    """(split, class folder) pairs, split "" when the layout has no split folders."""
    splits = _split_folders(root)
    if splits:
        return [
            (split, folder)
            for split, top in sorted(splits.items())
            for folder in _children(top)
            if folder.is_dir()
        ]
    return [("", folder) for folder in _children(root) if folder.is_dir()]


def _outside_class_folders(root: Path) -> list[str]:
    """Entries the class-folder layouts do not read, as problem lines (never silently)."""
    splits = _split_folders(root)
    tops = [root, *splits.values()] if splits else [root]
    ignored = []
    for top in tops:
        for entry in _children(top):
            if entry.is_file():
                where = entry.relative_to(root).as_posix()
                ignored.append(f"{where}: ignored: a file outside the class folders")
            elif top == root and splits and entry not in splits.values():
                ignored.append(
                    f"{entry.name}/: ignored: not a split folder (train, val/valid, test) "
                    "beside the split folders"
                )
    return ignored


def _check_class_folders(root: Path, folders: list[tuple[str, Path]], what: str) -> None:
    if not folders:
        raise DatasetError(
            "no class folders found",
            path=root,
            expected=f"one sub-folder per class ({what}), optionally under train/val/test",
            found=", ".join(p.name for p in _children(root)[:10]) or "an empty folder",
            hint="arrange the images as ROOT/<class>/<image>, or write a manifest.csv",
        )


def _empty_class_error(folder: Path, problems: list[str]) -> DatasetError:
    skipped = [p for p in problems if f"{folder.name}/" in p]
    found = "an empty folder"
    if skipped:
        found = f"no usable images; skipped {len(skipped)}: {'; '.join(skipped[:3])}"
    return DatasetError(
        "a class folder holds no usable images",
        path=folder,
        expected="at least one readable image per class folder",
        found=found,
        hint="add images, or remove the folder (or leave the class out with a classes list)",
    )


def _read_folders(root: Path) -> LayoutRead:
    read = LayoutRead(problems=_outside_class_folders(root))
    scanner = _FolderScanner(root, read)
    folders = _class_folders(root)
    _check_class_folders(root, folders, "image files or DICOM series")
    for split, folder in folders:
        label = normalise_class_name(folder.name)
        found = scanner.folder_samples(folder, "")
        if not found:
            raise _empty_class_error(folder, read.problems)
        read.samples.extend(
            Sample(
                path=str(p), label=label, patient_id=key, split=split, extra=_folder_extra(folder)
            )
            for p, key in found
        )
    read.has_patient_ids = all(s.patient_id for s in read.samples)
    return read


def _folder_extra(folder: Path) -> dict[str, str]:
    return {"class_folder": folder.name}


def _read_volumes(root: Path) -> LayoutRead:
    read = LayoutRead(problems=_outside_class_folders(root))
    scanner = _FolderScanner(root, read)
    folders = _class_folders(root)
    _check_class_folders(root, folders, "volumes with NAME_mask files")
    for split, folder in folders:
        label = normalise_class_name(folder.name)
        before = len(read.samples)
        for image, mask in scanner.volume_cases(folder):
            base = Sample(
                path=str(image),
                label=label,
                patient_id=_patient_from_name(image.name),
                mask_path=str(mask),
                split=split,
                extra=_folder_extra(folder),
            )
            lesions, problem = lesion_samples(base, where=scanner._relative(image))
            read.samples.extend(lesions)
            if problem:
                read.problems.append(problem)
        if len(read.samples) == before:
            raise _empty_class_error(folder, read.problems)
    read.has_patient_ids = all(s.patient_id for s in read.samples)
    return read


def _npz_contents(path: Path) -> dict[str, tuple[int, ...]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name].shape for name in data.files}
    except (OSError, ValueError) as exc:
        raise DatasetError(
            "the .npz file cannot be read",
            path=path,
            expected="a MedMNIST .npz (train_images, train_labels, ...)",
            found=str(exc),
        ) from exc


def _read_medmnist(path: Path) -> LayoutRead:
    shapes = _npz_contents(path)
    parts = [s for s in ("train", "val", "test") if f"{s}_images" in shapes]
    if not parts or any(f"{s}_labels" not in shapes for s in parts):
        raise DatasetError(
            "the .npz file is not in MedMNIST format",
            path=path,
            expected="arrays train_images/train_labels (and val_, test_)",
            found=f"arrays {', '.join(sorted(shapes))}",
        )
    names = _NPZ_CLASS_NAMES.get(path.name.lower().removesuffix(".npz"))
    read = LayoutRead()
    with np.load(path, allow_pickle=False) as data:
        for split in parts:
            labels = np.asarray(data[f"{split}_labels"]).reshape(-1)
            for i, value in enumerate(labels.tolist()):
                label = names[int(value)] if names and 0 <= int(value) < len(names) else str(value)
                read.samples.append(
                    Sample(
                        path=str(path),
                        label=label,
                        split=split,
                        extra={"npz_array": f"{split}_images", "npz_index": str(i)},
                    )
                )
    return read


@lru_cache(maxsize=8)
def _npz_array(path: str, name: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        return np.asarray(data[name])


def read_sample(sample: Sample) -> Scan:
    """Read the image a sample refers to (any format, or an entry of a MedMNIST .npz)."""
    if "npz_array" in sample.extra:
        images = _npz_array(sample.path, sample.extra["npz_array"])
        image = images[int(sample.extra["npz_index"])]
        scale = 255.0 if images.dtype == np.uint8 else 1.0
        array = np.asarray(image, dtype=np.float32) / scale
        if array.ndim == 2:
            array = array[np.newaxis]
        return Scan(
            array=array,
            spacing_mm=(1.0, 1.0, 1.0),
            modality="CT",
            intensity="unit",
            meta={"format": "medmnist-npz", "spacing_from": "none in file; 1 mm assumed"},
            source=sample.path,
        )
    return read_image(sample.path)


def detect_layout(source: str | Path) -> tuple[str, Path]:
    """Which layout a path holds, and the file or folder to read it from.

    Raises:
        DatasetError: nothing fits; the message lists what was looked for.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError("no such file or folder", path=path, hint="check the dataset path")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "medmnist", path
        if path.suffix.lower() == ".csv":
            header = csv_header(path)
            if all(c in header for c in LUNA_COLUMNS):
                return "luna16", path
            if "path" in header and "label" in header:
                return "manifest", path
            raise DatasetError(
                "the CSV is neither a manifest nor LUNA16 annotations",
                path=path,
                expected="columns path,label (manifest) or seriesuid,coordX,coordY,coordZ",
                found=f"columns {', '.join(header) or '(none)'}",
                hint="rename the columns, or pass --layout",
            )
        raise _nothing_fits(path, "a single file that is not .csv or .npz")
    for name in MANIFEST_NAMES:
        if (path / name).is_file():
            return "manifest", path / name
    for name in LUNA_NAMES:
        if (path / name).is_file() and all(c in csv_header(path / name) for c in LUNA_COLUMNS):
            return "luna16", path / name
    npz = sorted(path.glob("*mnist*.npz"))
    if npz:
        return "medmnist", npz[0]
    folders = _class_folders(path)
    if folders:
        has_masks = any(
            _mask_image_stem(f.name) is not None
            for _, folder in folders
            for f in folder.rglob("*")
            if f.is_file() and _visible(f)
        )
        return ("volumes" if has_masks else "folders"), path
    raise _nothing_fits(path, ", ".join(p.name for p in _children(path)[:10]) or "nothing")


def _nothing_fits(path: Path, found: str) -> DatasetError:
    return DatasetError(
        "no known dataset layout found",
        path=path,
        expected=(
            f"a manifest ({', '.join(MANIFEST_NAMES)}: path,label,...), LUNA16 "
            f"{LUNA_NAMES[0]} beside .mhd volumes, a MedMNIST .npz, or one folder per class "
            "(optionally under train/val/test), with NAME_mask files for lesion volumes"
        ),
        found=found,
        hint="arrange the data in one of these layouts, or write a manifest.csv",
    )


def _apply_classes(
    read: LayoutRead,
    source: Path,
    class_map: Mapping[str, str],
    classes: Sequence[str],
    min_classes: int,
) -> tuple[list[Sample], tuple[str, ...]]:
    samples = []
    for s in read.samples:
        raw = s.extra.get("class_folder", s.label)
        label = class_map.get(raw, class_map.get(s.label, s.label))
        samples.append(s if label == s.label else replace(s, label=label))
    counts = Counter(s.label for s in samples)
    if classes:
        absent = [c for c in classes if counts[c] == 0]
        if absent:
            raise DatasetError(
                f"listed class(es) {', '.join(absent)} have no samples",
                path=source,
                expected=f"samples of every class in {', '.join(classes)}",
                found=", ".join(f"{k}: {v}" for k, v in sorted(counts.items())),
                hint="fix the class names (after the class map), or list only present classes",
            )
        left_out = sorted(set(counts) - set(classes))
        for name in left_out:
            read.problems.append(f"class {name}: {counts[name]} sample(s) left out (not listed)")
        samples = [s for s in samples if s.label in classes]
        names = tuple(classes)
    else:
        names = tuple(sorted(counts))
    if len(names) < min_classes:
        raise DatasetError(
            "a classifier needs at least two classes" if min_classes > 1 else "no samples",
            path=source,
            expected=f"{min_classes} or more classes",
            found=f"only {', '.join(names) or 'no class'} ({len(samples)} samples)",
            hint="add the other class folders, or fix the class map that merged them",
        )
    return samples, names


def load_index(
    source: str | Path,
    *,
    layout: str = "auto",
    class_map: Mapping[str, str] | None = None,
    classes: Sequence[str] = (),
    min_classes: int = 2,
) -> DatasetIndex:
    """Read a dataset into a `DatasetIndex`.

    Args:
        source: a dataset folder, a manifest or annotations CSV, or a MedMNIST .npz.
        layout: "auto" or one of `LAYOUTS`.
        class_map: renames classes; keys may be folder names or normalised class names.
            Mapping several names to one merges classes.
        classes: the class list and its order (class id = position); classes present in the
            data but not listed are left out and reported in `problems`.
        min_classes: fewer classes than this is an error (1 for data that only joins
            another dataset's training split).

    Returns:
        The samples, class names, layout, root folder, whether patient ids exist, and the
        problems found (skipped files and why).

    Raises:
        DatasetError: no layout fits, or a fatal problem (empty class folder, a single class,
            CSV without required columns, missing paths, a listed class without samples).
    """
    detected, path = detect_layout(source)
    if layout not in ("auto", *LAYOUTS):
        raise DatasetError(
            f"unknown layout '{layout}'",
            expected=f"auto or one of {', '.join(LAYOUTS)}",
            found=layout,
        )
    chosen = detected if layout == "auto" else layout
    if layout != "auto" and chosen in ("manifest", "luna16", "medmnist") and path.is_dir():
        raise DatasetError(
            f"layout '{chosen}' needs a file",
            path=path,
            expected="the CSV or .npz file itself",
            found="a folder",
            hint="pass the file's path as the dataset",
        )
    readers = {
        "folders": _read_folders,
        "volumes": _read_volumes,
        "manifest": read_manifest,
        "luna16": read_luna16,
        "medmnist": _read_medmnist,
    }
    try:
        read = readers[chosen](path)
    except LungCancerError:
        raise
    except OSError as exc:
        raise DatasetError(
            "the dataset cannot be read", path=path, found=str(exc.strerror)
        ) from exc
    samples, names = _apply_classes(read, path, class_map or {}, classes, min_classes)
    root = path.parent if path.is_file() else path
    return DatasetIndex(
        samples=tuple(samples),
        class_names=names,
        layout=chosen,
        root=str(root.resolve()),
        has_patient_ids=read.has_patient_ids and bool(samples),
        problems=tuple(read.problems),
    )
