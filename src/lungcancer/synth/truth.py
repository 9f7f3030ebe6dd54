"""Ground truth of a LungSim case: which class it is asked to be, and a consistent tumour.

Classes are sampled first (balanced, or by the user's weights), then a tumour, nodes and
metastases that produce that class under the AJCC 8th rules. The label written with a sample is
never taken from here: it is recomputed by `lungcancer.staging` from what was drawn (the
measured diameter, the invasion seen, the nodes and M1a findings in force), so labels and
images agree even when a tumour lands on a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungcancer.errors import ConfigError
from lungcancer.staging import coarse_stage, stage_group
from lungcancer.synth.growth import m_from_draw, n_from_draw

CLASS_SETS: dict[str, tuple[str, ...]] = {
    "stage": ("normal", "benign", "stage_I", "stage_II", "stage_III", "stage_IV"),
    "t": ("normal", "benign", "T1", "T2", "T3", "T4"),
    # Binary asks "is this nodule malignant?": every binary case has a nodule, so no normal
    # scans are generated (a normal scan would make "benign" mean two different things).
    "binary": ("benign", "malignant"),
}
# Greatest-diameter bands (mm) per T descriptor; T1a starts at 5 mm (smaller is not staged on
# CT in practice) and T4 stops at 85 mm (larger does not fit a lung's cross-section).
T_BANDS_MM: dict[str, tuple[float, float]] = {
    "T1a": (5.0, 10.0),
    "T1b": (10.0, 20.0),
    "T1c": (20.0, 30.0),
    "T2a": (30.0, 40.0),
    "T2b": (40.0, 50.0),
    "T3": (50.0, 70.0),
    "T4": (70.0, 85.0),
}


@dataclass(frozen=True)
class CaseTruth:
    """What a case is asked to show at its first time point.

    Attributes:
        category: "normal", "benign" or "malignant".
        requested_class: the class name it was sampled for.
        diameter_mm: target greatest diameter (0 for normal).
        invasion: "none", "chest_wall" or "mediastinum".
        n: "N0".."N3" ("" unless malignant).
        m: "M0" or "M1a" ("" unless malignant).
        m_kind: "effusion", "nodule", "both" or "" (how M1a shows).
        nodule_type: "solid", "part_solid", "ground_glass" or "".
        margin: "smooth", "lobulated", "spiculated" or "".
        histology: "adenocarcinoma", "squamous", "large_cell", "granuloma", "hamartoma",
            "benign_nodule" or "".
        calcification: "none", "central", "diffuse", "popcorn" or "laminated".
        vdt_key: key of `growth.HISTOLOGY_VDT_DAYS` for this lesion ("" for normal).
    """

    category: str
    requested_class: str
    diameter_mm: float = 0.0
    invasion: str = "none"
    n: str = ""
    m: str = ""
    m_kind: str = ""
    nodule_type: str = ""
    margin: str = ""
    histology: str = ""
    calcification: str = "none"
    vdt_key: str = ""


@dataclass(frozen=True)
class Difficulty:
    """Knobs that make a dataset harder.

    Attributes:
        near_threshold_fraction: share of malignant tumours whose diameter is drawn within
            `threshold_band_mm` of a T threshold (where stage I and II meet at 4 cm, etc.).
        threshold_band_mm: how close "near a threshold" is.
    """

    near_threshold_fraction: float = 0.2
    threshold_band_mm: float = 3.0


def class_counts(
    classes: tuple[str, ...], patients: int, weights: tuple[float, ...] = ()
) -> dict[str, int]:
    """How many patients each class gets: equal by default, else by weight (largest remainder).

    Args:
        classes: the class names.
        patients: total number of patients.
        weights: one non-negative weight per class, or () for equal.

    Returns:
        Counts that sum to `patients`.
    """
    if weights and len(weights) != len(classes):
        raise ConfigError(
            "class weights must give one weight per class",
            expected=f"{len(classes)} weights for {', '.join(classes)}",
            found=f"{len(weights)} weights",
            hint="pass e.g. --class-weights " + ",".join("1" for _ in classes),
        )
    w = np.asarray(weights or (1.0,) * len(classes), dtype=np.float64)
    if np.any(w < 0) or w.sum() <= 0:
        raise ConfigError(
            "class weights must be non-negative and not all zero", found=str(tuple(weights))
        )
    exact = patients * w / w.sum()
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: patients - counts.sum()]] += 1
    return {c: int(k) for c, k in zip(classes, counts, strict=True)}


def class_of(classes: str, stage: str, t: str) -> str:
    """The class name of a labelled case.

    Args:
        classes: "stage", "t" or "binary".
        stage: "normal", "benign" or a coarse stage "I".."IV".
        t: the T descriptor ("T1a".."T4"), "" unless malignant.

    Returns:
        A name from `CLASS_SETS[classes]` ("normal" maps to "benign" in binary).
    """
    if stage in ("normal", "benign"):
        return "benign" if classes == "binary" else stage
    if classes == "stage":
        return f"stage_{stage}"
    if classes == "t":
        return t[:2]
    return "malignant"


def labels_for(
    classes: str, category: str, t: str = "", n: str = "", m: str = ""
) -> dict[str, str]:
    """T, N, M, stage group, coarse stage and class name of a case, by the AJCC 8th rules.

    Args:
        classes: "stage", "t" or "binary".
        category: "normal", "benign" or "malignant".
        t, n, m: the descriptors in force (malignant only).

    Returns:
        {"t", "n", "m", "stage_group", "stage", "label"}; empty descriptors unless malignant.
    """
    if category != "malignant":
        return {"t": "", "n": "", "m": "", "stage_group": "", "stage": category,
                "label": class_of(classes, category, "")}  # fmt: skip
    group = stage_group(t, n, m)
    stage = coarse_stage(group)
    return {"t": t, "n": n, "m": m, "stage_group": group, "stage": stage,
            "label": class_of(classes, stage, t)}  # fmt: skip


def _pick(rng: np.random.Generator, options: list[tuple[float, object]]) -> object:
    p = np.array([w for w, _ in options], dtype=np.float64)
    return options[int(rng.choice(len(options), p=p / p.sum()))][1]


def _diameter_in(t: str, rng: np.random.Generator, diff: Difficulty) -> float:
    lo, hi = T_BANDS_MM[t]
    band = min(diff.threshold_band_mm, (hi - lo) / 2)
    if rng.random() < diff.near_threshold_fraction:
        # Just inside one of the band's edges: the hard cases a reader must measure.
        return (
            float(lo + rng.uniform(0.15, band))
            if rng.random() < 0.5
            else float(hi - rng.uniform(0.15, band))
        )
    return float(rng.uniform(lo + 0.15, hi - 0.15))


def _tumour_for(t: str, rng: np.random.Generator, diff: Difficulty) -> tuple[float, str]:
    """Diameter and invasion that give descriptor t (T3/T4 by size or by invasion)."""
    if t == "T3" and rng.random() < 0.35:
        return float(rng.uniform(18.0, 48.0)), "chest_wall"
    if t == "T4" and rng.random() < 0.5:
        return float(rng.uniform(22.0, 65.0)), "mediastinum"
    return _diameter_in(t, rng, diff), "none"


def _malignant_look(diameter_mm: float, rng: np.random.Generator) -> tuple[str, str, str, str]:
    """(nodule_type, margin, histology, vdt_key) of a malignant tumour."""
    if diameter_mm <= 30.0:
        nodule_type = str(_pick(rng, [(0.7, "solid"), (0.2, "part_solid"), (0.1, "ground_glass")]))
    else:
        nodule_type = str(_pick(rng, [(0.9, "solid"), (0.1, "part_solid")]))
    margin = str(_pick(rng, [(0.45, "spiculated"), (0.4, "lobulated"), (0.15, "smooth")]))
    if nodule_type == "solid":
        histology = str(
            _pick(rng, [(0.5, "adenocarcinoma"), (0.35, "squamous"), (0.15, "large_cell")])
        )
    else:
        histology = "adenocarcinoma"
    vdt_key = "ground_glass" if nodule_type == "ground_glass" else histology
    return nodule_type, margin, histology, vdt_key


_STAGE_RECIPES: dict[str, list[tuple[float, tuple[tuple[str, ...], tuple[str, ...]]]]] = {
    # weight, (T options, N options)
    "stage_I": [(1.0, (("T1a", "T1b", "T1b", "T1c", "T1c", "T1c", "T2a", "T2a", "T2a"), ("N0",)))],
    "stage_II": [
        (0.3, (("T2b",), ("N0",))),
        (0.4, (("T1a", "T1b", "T1c", "T2a", "T2b"), ("N1",))),
        (0.3, (("T3",), ("N0",))),
    ],
    "stage_III": [
        (0.3, (("T1b", "T1c", "T2a", "T2b"), ("N2",))),
        (0.15, (("T3",), ("N1",))),
        (0.15, (("T4",), ("N0", "N1"))),
        (0.12, (("T1b", "T1c", "T2a", "T2b"), ("N3",))),
        (0.14, (("T3", "T4"), ("N2",))),
        (0.14, (("T3", "T4"), ("N3",))),
    ],
    "stage_IV": [
        (1.0, (("T1b", "T1c", "T2a", "T2b", "T3", "T4"), ("N0", "N0", "N1", "N2", "N2", "N3")))
    ],
}


def sample_truth(
    requested_class: str, classes: str, rng: np.random.Generator, diff: Difficulty
) -> CaseTruth:
    """A case of the requested class with a consistent tumour, N and M.

    Args:
        requested_class: a name from `CLASS_SETS[classes]`.
        classes: "stage", "t" or "binary".
        rng: the patient's generator.
        diff: difficulty knobs.

    Returns:
        The case's truth at its first time point.
    """
    if requested_class == "normal":
        return CaseTruth(category="normal", requested_class="normal")
    if requested_class == "benign":
        return _benign(rng)
    if classes == "binary":
        stage_class = str(rng.choice(CLASS_SETS["stage"][2:]))
        return _malignant_stage(stage_class, rng, diff, requested_class)
    if classes == "stage":
        return _malignant_stage(requested_class, rng, diff, requested_class)
    t_desc = {"T1": ("T1a", "T1b", "T1c"), "T2": ("T2a", "T2b")}.get(
        requested_class, (requested_class,)
    )
    t = str(rng.choice(t_desc))
    diameter, invasion = _tumour_for(t, rng, diff)
    n = n_from_draw(diameter, float(rng.random()))
    m = m_from_draw(diameter, float(rng.random()))
    return _malignant(requested_class, diameter, invasion, n, m, rng)


def _benign(rng: np.random.Generator) -> CaseTruth:
    calcification = str(
        _pick(
            rng,
            [
                (0.3, "none"),
                (0.25, "central"),
                (0.2, "diffuse"),
                (0.15, "popcorn"),
                (0.1, "laminated"),
            ],
        )
    )
    histology = {"popcorn": "hamartoma", "none": "benign_nodule"}.get(calcification, "granuloma")
    ggo = calcification == "none" and rng.random() < 0.2
    return CaseTruth(
        category="benign",
        requested_class="benign",
        diameter_mm=float(5.0 + 19.0 * rng.beta(1.8, 2.6)),
        nodule_type="ground_glass" if ggo else "solid",
        margin="lobulated" if rng.random() < 0.25 else "smooth",
        histology=histology,
        calcification=calcification,
        vdt_key="benign",
    )


def _malignant_stage(
    stage_class: str, rng: np.random.Generator, diff: Difficulty, requested: str
) -> CaseTruth:
    recipes = _STAGE_RECIPES[stage_class]
    weights = np.array([w for w, _ in recipes])
    t_opts, n_opts = recipes[int(rng.choice(len(recipes), p=weights / weights.sum()))][1]
    t = str(rng.choice(t_opts))
    n = str(rng.choice(n_opts))
    if stage_class == "stage_I" or (stage_class == "stage_II" and n == "N1"):
        # These rows need a tumour that stays T1-T2: no invasion.
        diameter, invasion = _diameter_in(t, rng, diff), "none"
    else:
        diameter, invasion = _tumour_for(t, rng, diff)
    m = "M1a" if stage_class == "stage_IV" else "M0"
    return _malignant(requested, diameter, invasion, n, m, rng)


def _malignant(
    requested: str, diameter: float, invasion: str, n: str, m: str, rng: np.random.Generator
) -> CaseTruth:
    nodule_type, margin, histology, vdt_key = _malignant_look(diameter, rng)
    if invasion != "none":
        # A tumour invading the chest wall or mediastinum is solid.
        nodule_type, vdt_key = "solid", histology
    m_kind = str(_pick(rng, [(0.65, "effusion"), (0.2, "nodule"), (0.15, "both")]))
    return CaseTruth(
        category="malignant",
        requested_class=requested,
        diameter_mm=diameter,
        invasion=invasion,
        n=n,
        m=m,
        m_kind=m_kind,
        nodule_type=nodule_type,
        margin=margin,
        histology=histology,
        vdt_key=vdt_key,
    )
