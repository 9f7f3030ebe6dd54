"""LungSim's public API: a frozen config, in-memory rendering, and dataset generation.

    cfg = SynthConfig(patients=60, timepoints_months=(0, 6, 12), seed=1)
    result = generate(cfg, "data/sim")          # NRRD + masks + PNG + JSON + manifest.csv
    samples = render_case(cfg, 3)                # patient 3, every visit, in memory

Every patient has its own random streams derived from (seed, patient index), so the output is
identical whatever the number of worker processes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lungcancer.errors import ConfigError, LungCancerError
from lungcancer.synth.case import SimSample, build_patient
from lungcancer.synth.fit import RenderSettings
from lungcancer.synth.truth import CLASS_SETS, Difficulty, class_counts, sample_truth
from lungcancer.synth.visit import render_visit

# Settings whose command-line flag is not simply --name-with-dashes.
_FLAGS = {
    "timepoints_months": "--timepoints",
    "slice_thickness_mm": "--thickness",
    "slice_offset_max_mm": "--slice-offset-mm",
    "near_threshold_fraction": "--near-threshold",
    "threshold_band_mm": "synth.threshold_band_mm",
}
FOLLOWUP_POSES = ("own", "baseline")
_TRUTH_STREAM = 99  # spawn-key slot of a patient's truth stream; case.py uses 0-6 and 100+


@dataclass(frozen=True)
class SynthConfig:
    """How a LungSim dataset is made.

    Attributes:
        patients: number of patients.
        timepoints_months: visits per patient (months; the first is the baseline whose class
            is balanced, later ones follow the growth model).
        size: in-plane matrix (pixels); the field of view is always the whole chest.
        dims: 2 (lesion-centred slices plus off-centre slices) or 3 (lesion-centred volumes).
        depth: slices per volume when dims is 3.
        classes: "stage" (normal, benign, stage_I..IV), "t" (normal, benign, T1..T4) or
            "binary" (benign, malignant nodules).
        seed: the dataset seed.
        workers: processes generating patients in parallel (output does not depend on it).
        dose: relative dose (1 = standard); noise grows as 1/sqrt(dose).
        slice_thickness_mm: fixed slice thickness, or 0 to vary per patient (1-5 mm).
        off_centre_slices: extra slices per visit through the lesion, same label (dims 2).
        slice_offset_max_mm: how far those slices may lie from the lesion centre.
        near_threshold_fraction: share of malignant tumours sized within
            `threshold_band_mm` of a T threshold (hard cases).
        threshold_band_mm: see above.
        class_weights: one weight per class (default: equal).
        previews: write a PNG preview (lung window) beside every sample.
        slab_mm: dims 2: write each sample as three slices, its own in the middle and one this
            far below and above (for 2.5D input, `data.slab_slices: 3`); 0 writes one slice.
        id_prefix: patient ids are "<id_prefix>-00042". Another prefix keeps a second dataset's
            patients apart from the first's (an external test set for a model trained on
            "sim-" patients); it changes no pixel.
        followup_pose: "own" (each visit has its own pose and slice positions, as a patient
            scanned again lies differently) or "baseline" (every visit lies exactly as the
            first; only the disease and the noise change). "baseline" gives a simulator a
            ground truth free of pose: what the same slice would show later.
        followup_spread: later visits show the nodes and M1a findings the tumour has reached
            (True) or keep the baseline's (False: only the primary lesion changes, and the
            labels follow what is drawn). With followup_pose "baseline", a ground truth for
            the lesion alone.
    """

    patients: int = 60
    timepoints_months: tuple[float, ...] = (0.0,)
    size: int = 256
    dims: int = 2
    depth: int = 64
    classes: str = "stage"
    seed: int = 0
    workers: int = 1
    dose: float = 1.0
    slice_thickness_mm: float = 0.0
    off_centre_slices: int = 3
    slice_offset_max_mm: float = 6.0
    near_threshold_fraction: float = 0.2
    threshold_band_mm: float = 3.0
    class_weights: tuple[float, ...] = ()
    previews: bool = True
    slab_mm: float = 0.0
    id_prefix: str = "sim"
    followup_pose: str = "own"
    followup_spread: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.patients >= 1, "patients", "at least 1", self.patients),
            (32 <= self.size <= 1024, "size", "32 to 1024 pixels", self.size),
            (self.dims in (2, 3), "dims", "2 or 3", self.dims),
            (1 <= self.depth <= 512, "depth", "1 to 512 slices", self.depth),
            (self.classes in CLASS_SETS, "classes", " or ".join(CLASS_SETS), self.classes),
            (self.workers >= 1, "workers", "at least 1", self.workers),
            (self.dose > 0, "dose", "a positive number", self.dose),
            (0 <= self.slice_thickness_mm <= 10, "slice_thickness_mm", "0 (vary) to 10 mm",
             self.slice_thickness_mm),
            (self.off_centre_slices >= 0, "off_centre_slices", "0 or more",
             self.off_centre_slices),
            (self.slice_offset_max_mm >= 0, "slice_offset_max_mm", ">= 0",
             self.slice_offset_max_mm),
            (0 <= self.near_threshold_fraction <= 1, "near_threshold_fraction", "0 to 1",
             self.near_threshold_fraction),
            (self.threshold_band_mm > 0, "threshold_band_mm", "> 0", self.threshold_band_mm),
            (0 <= self.slab_mm <= 20, "slab_mm", "0 (one slice) to 20 mm", self.slab_mm),
            (re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,15}", self.id_prefix) is not None,
             "id_prefix", "a letter, then up to 15 letters, digits or _", self.id_prefix),
            (self.followup_pose in FOLLOWUP_POSES, "followup_pose", " or ".join(FOLLOWUP_POSES),
             self.followup_pose),
            (len(self.timepoints_months) >= 1, "timepoints_months", "at least one time point",
             self.timepoints_months),
            (all(t >= 0 for t in self.timepoints_months)
             and list(self.timepoints_months) == sorted(set(self.timepoints_months)),
             "timepoints_months", "distinct months >= 0 in increasing order",
             self.timepoints_months),
        ]  # fmt: skip
        for ok, name, expected, found in checks:
            if not ok:
                raise ConfigError(
                    f"invalid LungSim setting '{name}'",
                    expected=expected,
                    found=repr(found),
                    hint=f"fix {_FLAGS.get(name, '--' + name.replace('_', '-'))} "
                    f"(or '{name}' in the synth: section of the config)",
                )
        if self.class_weights:
            class_counts(self.class_names, 1, self.class_weights)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class list (index = class id)."""
        return CLASS_SETS[self.classes]

    def render_settings(self) -> RenderSettings:
        """The per-visit rendering settings this config implies."""
        return RenderSettings(
            size=self.size,
            dims=self.dims,
            depth=self.depth,
            classes=self.classes,
            off_centre_slices=self.off_centre_slices,
            slice_offset_max_mm=self.slice_offset_max_mm,
            dose=self.dose,
            thickness_mm=self.slice_thickness_mm or None,
            slab_mm=self.slab_mm if self.dims == 2 else 0.0,
        )

    def difficulty(self) -> Difficulty:
        """The difficulty knobs as one object."""
        return Difficulty(self.near_threshold_fraction, self.threshold_band_mm)


@dataclass(frozen=True)
class SynthResult:
    """What `generate` wrote.

    Attributes:
        out_dir: the dataset folder.
        manifest_path: its manifest.csv.
        samples: number of samples (rows).
        patient_counts: patients per requested class.
        sample_counts: samples per written label.
    """

    out_dir: Path
    manifest_path: Path
    samples: int
    patient_counts: dict[str, int] = field(default_factory=dict)
    sample_counts: dict[str, int] = field(default_factory=dict)


def patient_id(index: int, prefix: str = "sim") -> str:
    """The id of patient `index` ("sim-00042")."""
    return f"{prefix}-{index:05d}"


def class_plan(cfg: SynthConfig) -> list[str]:
    """The class each patient is asked to show at baseline (balanced or by weight), shuffled
    by the seed so classes do not come in blocks."""
    counts = class_counts(cfg.class_names, cfg.patients, cfg.class_weights)
    plan = [name for name, k in counts.items() for _ in range(k)]
    # The root stream of the seed; patients draw only from spawned children (index, k).
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed))
    return [plan[i] for i in rng.permutation(len(plan))]


def render_patient(cfg: SynthConfig, index: int, requested_class: str) -> list[SimSample]:
    """Render every visit of one patient asked to show `requested_class`, in memory.

    Args:
        cfg: the dataset config (size, dims, classes, seed, knobs).
        index: the patient index; with the seed it fixes everything random about the patient.
        requested_class: a name from `cfg.class_names`.

    Returns:
        Samples of all visits in time order (per visit: lesion-centred slice first).
    """
    if requested_class not in cfg.class_names:
        raise ConfigError(
            "unknown class for this class set",
            expected=", ".join(cfg.class_names),
            found=requested_class,
        )
    key = (cfg.seed, index)
    truth_rng = np.random.default_rng(
        np.random.SeedSequence(cfg.seed, spawn_key=(index, _TRUTH_STREAM))
    )
    truth = sample_truth(requested_class, cfg.classes, truth_rng, cfg.difficulty())
    settings = cfg.render_settings()
    model = build_patient(
        patient_id(index, cfg.id_prefix), key, truth, settings, cfg.timepoints_months
    )
    base = cfg.timepoints_months[0]
    samples: list[SimSample] = []
    pose_visit = 0 if cfg.followup_pose == "baseline" else None
    for visit, months in enumerate(cfg.timepoints_months):
        samples.extend(
            render_visit(
                model,
                visit,
                float(months),
                float(base),
                settings,
                pose_visit=pose_visit,
                spread_at_baseline=not cfg.followup_spread,
            )
        )
    return samples


def render_case(cfg: SynthConfig, index: int) -> list[SimSample]:
    """Render patient `index` of the dataset `cfg` describes, in memory (no files).

    The patient gets the class `generate` would give it, so `render_case(cfg, i)` equals what
    `generate(cfg, ...)` writes for "<id_prefix>-<i>".
    """
    if not 0 <= index < cfg.patients:
        raise ConfigError(
            "patient index out of range", expected=f"0..{cfg.patients - 1}", found=str(index)
        )
    return render_patient(cfg, index, class_plan(cfg)[index])


def _generate_one(args: tuple[SynthConfig, int, str, str]) -> list[dict[str, str]]:
    from lungcancer.synth.writer import write_sample

    cfg, index, requested_class, out_dir = args
    return [
        write_sample(s, Path(out_dir), previews=cfg.previews)
        for s in render_patient(cfg, index, requested_class)
    ]


def generate(
    cfg: SynthConfig,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SynthResult:
    """Generate a LungSim dataset into `out_dir`.

    Args:
        cfg: what to generate.
        out_dir: the dataset folder (created). It must be empty unless `overwrite`.
        overwrite: write into a folder that already holds files (same-named files are
            replaced; others are left as they are).
        progress: called with (patients done, patients total) as patients finish.

    Returns:
        Where the manifest is and how many samples each class got.
    """
    from lungcancer.config import save_configs
    from lungcancer.synth.writer import write_manifest

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise LungCancerError("the output path is a file", path=out, hint="give a folder for --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise LungCancerError(
            "the output folder is not empty",
            path=out,
            expected="a new or empty folder",
            found=f"{sum(1 for _ in out.iterdir())} entries",
            hint="choose another --out folder, or pass --overwrite to write into it",
        )
    out.mkdir(parents=True, exist_ok=True)
    plan = class_plan(cfg)
    jobs = [(cfg, i, plan[i], str(out)) for i in range(cfg.patients)]
    rows: list[list[dict[str, str]]] = []
    if cfg.workers == 1:
        for done, job in enumerate(jobs, start=1):
            rows.append(_generate_one(job))
            if progress:
                progress(done, len(jobs))
    else:
        with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
            # map keeps patient order, so the manifest is the same for any worker count.
            for done, result in enumerate(pool.map(_generate_one, jobs, chunksize=1), start=1):
                rows.append(result)
                if progress:
                    progress(done, len(jobs))
    flat = [row for patient_rows in rows for row in patient_rows]
    manifest = out / "manifest.csv"
    write_manifest(flat, manifest)
    save_configs(out / "synth_config.yaml", synth=cfg)
    return SynthResult(
        out_dir=out,
        manifest_path=manifest,
        samples=len(flat),
        patient_counts=dict(Counter(plan)),
        sample_counts=dict(Counter(row["label"] for row in flat)),
    )
