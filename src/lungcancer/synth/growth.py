"""Tumour growth in time: Gompertz volume growth, volume-doubling times, nodal and pleural spread.

Pure numpy, no I/O. The progression model and LungSim's longitudinal series share these
functions, so "how big is this tumour after 6 months" has one answer in the whole toolkit.

Growth: a Gompertz curve V(t) = Vmax * exp(ln(V0 / Vmax) * exp(-alpha t)), calibrated so the
*initial* doubling time equals the volume-doubling time (VDT) that radiologists measure on two
scans; growth then slows as the tumour approaches Vmax, as real tumours do.

Spread: the probability that a tumour has reached the nodes (N1, N2, N3) or the pleura (M1a)
rises with its greatest diameter. A patient carries one uniform draw per pathway; the pathway
is involved at the sizes where its probability exceeds the draw, so in a growing tumour spread
is monotone (once involved, always involved), and across patients the frequencies follow the
probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import overload

import numpy as np

from lungcancer.errors import LungCancerError

DAYS_PER_MONTH = 365.25 / 12.0
# A tumour cannot outgrow a hemithorax; ~1 litre is a sphere of ~12 cm.
DEFAULT_VMAX_ML = 1000.0


@dataclass(frozen=True)
class VdtPrior:
    """Log-normal prior of volume-doubling time for one histology.

    Attributes:
        median_days: median VDT (the log-normal's exp(mu)).
        log_sigma: standard deviation of ln(VDT).
        min_days: draws are clipped below at this plausible bound.
        max_days: draws are clipped above at this plausible bound.
    """

    median_days: float
    log_sigma: float
    min_days: float
    max_days: float


# Medians from volumetric screening studies (DESIGN.md: malignant nodules roughly 30-400 days,
# squamous ~130 d faster than adenocarcinoma ~260 d, ground-glass ~850 d). Benign nodules are
# stable or nearly so; their prior keeps them from visibly growing within two years.
HISTOLOGY_VDT_DAYS: Mapping[str, VdtPrior] = MappingProxyType(
    {
        "adenocarcinoma": VdtPrior(260.0, 0.45, 60.0, 900.0),
        "squamous": VdtPrior(130.0, 0.40, 30.0, 500.0),
        "large_cell": VdtPrior(100.0, 0.40, 30.0, 400.0),
        "ground_glass": VdtPrior(850.0, 0.40, 300.0, 2500.0),
        "benign": VdtPrior(3000.0, 0.50, 1200.0, 20000.0),
    }
)


def sample_vdt_days(histology: str, rng: np.random.Generator) -> float:
    """Draw one volume-doubling time for a histology.

    Args:
        histology: a key of `HISTOLOGY_VDT_DAYS`.
        rng: the random generator (one per patient keeps a series reproducible).

    Returns:
        VDT in days, log-normal around the histology's median, clipped to its plausible range.
    """
    prior = HISTOLOGY_VDT_DAYS.get(histology)
    if prior is None:
        raise LungCancerError(
            "unknown histology for the growth model",
            expected=f"one of {', '.join(HISTOLOGY_VDT_DAYS)}",
            found=histology,
        )
    draw = prior.median_days * float(np.exp(prior.log_sigma * rng.standard_normal()))
    return float(np.clip(draw, prior.min_days, prior.max_days))


def volume_ml_from_diameter(diameter_mm: float | np.ndarray) -> float | np.ndarray:
    """Volume of a sphere of the given diameter, in millilitres (1 ml = 1000 mm^3)."""
    if isinstance(diameter_mm, np.ndarray):
        return np.pi / 6.0 * diameter_mm.astype(np.float64) ** 3 / 1000.0
    return float(np.pi / 6.0 * float(diameter_mm) ** 3 / 1000.0)


def diameter_mm_from_volume(volume_ml: float | np.ndarray) -> float | np.ndarray:
    """Diameter of the sphere of the given volume (the inverse of `volume_ml_from_diameter`)."""
    if isinstance(volume_ml, np.ndarray):
        return np.cbrt(6.0 * volume_ml * 1000.0 / np.pi)
    return float(np.cbrt(6.0 * volume_ml * 1000.0 / np.pi))


def _check_growth_args(v0_ml: float, vdt_days: float, vmax_ml: float) -> None:
    if not (v0_ml > 0 and vdt_days > 0 and vmax_ml > v0_ml):
        raise LungCancerError(
            "invalid growth-model parameters",
            expected="v0_ml > 0, vdt_days > 0 and vmax_ml > v0_ml",
            found=f"v0_ml={v0_ml}, vdt_days={vdt_days}, vmax_ml={vmax_ml}",
            hint="start from a tumour smaller than the maximum volume",
        )


@overload
def gompertz_volume_ml(
    v0_ml: float, months: float, vdt_days: float, vmax_ml: float = ...
) -> float: ...
@overload
def gompertz_volume_ml(
    v0_ml: float, months: np.ndarray, vdt_days: float, vmax_ml: float = ...
) -> np.ndarray: ...
def gompertz_volume_ml(
    v0_ml: float,
    months: float | np.ndarray,
    vdt_days: float,
    vmax_ml: float = DEFAULT_VMAX_ML,
) -> float | np.ndarray:
    """Tumour volume after `months` of Gompertz growth.

    The rate constant is chosen so the initial specific growth rate is ln 2 / VDT: at t = 0 the
    curve doubles in exactly `vdt_days`, then slows toward `vmax_ml`. Negative months run the
    curve backward (a smaller tumour in the past).

    Args:
        v0_ml: volume at month 0.
        months: elapsed time (scalar or array).
        vdt_days: initial volume-doubling time.
        vmax_ml: plateau volume.

    Returns:
        Volume in ml, a float for a scalar `months`, else an array of its shape.
    """
    _check_growth_args(v0_ml, vdt_days, vmax_ml)
    log_ratio = np.log(v0_ml / vmax_ml)  # < 0
    # dV/dt / V at t=0 equals alpha * ln(Vmax/V0); setting it to ln2/VDT fixes alpha.
    alpha_per_day = np.log(2.0) / (vdt_days * -log_ratio)
    days = np.asarray(months, dtype=np.float64) * DAYS_PER_MONTH
    volume = vmax_ml * np.exp(log_ratio * np.exp(-alpha_per_day * days))
    if isinstance(months, np.ndarray):
        return volume
    return float(volume)


@overload
def diameter_at_months(
    d0_mm: float, months: float, vdt_days: float, vmax_ml: float = ...
) -> float: ...
@overload
def diameter_at_months(
    d0_mm: float, months: np.ndarray, vdt_days: float, vmax_ml: float = ...
) -> np.ndarray: ...
def diameter_at_months(
    d0_mm: float,
    months: float | np.ndarray,
    vdt_days: float,
    vmax_ml: float = DEFAULT_VMAX_ML,
) -> float | np.ndarray:
    """Greatest diameter after `months`, growing the volume by `gompertz_volume_ml`.

    The tumour keeps its shape, so diameter scales with the cube root of volume whatever the
    shape; the sphere formulas are only the bookkeeping.

    Args:
        d0_mm: diameter at month 0.
        months: elapsed time (scalar or array).
        vdt_days: initial volume-doubling time.
        vmax_ml: plateau volume of the equivalent sphere.

    Returns:
        Diameter in mm, a float for a scalar `months`, else an array of its shape.
    """
    v0_ml = float(volume_ml_from_diameter(d0_mm))
    if isinstance(months, np.ndarray):
        return np.asarray(
            diameter_mm_from_volume(gompertz_volume_ml(v0_ml, months, vdt_days, vmax_ml))
        )
    return float(
        diameter_mm_from_volume(gompertz_volume_ml(v0_ml, float(months), vdt_days, vmax_ml))
    )


def _logistic(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


@dataclass(frozen=True)
class SpreadProbabilities:
    """Probabilities of spread for a tumour of one size (nested: n3 <= n2_plus <= n1_plus).

    Attributes:
        n1_plus: nodes involved at all (N1 or worse).
        n2_plus: mediastinal or worse (N2 or N3).
        n3: contralateral or supraclavicular nodes.
        m1a: pleural effusion or contralateral lung nodule.
    """

    n1_plus: float
    n2_plus: float
    n3: float
    m1a: float


# Logistic curves in diameter (midpoint mm, scale mm), shaped on surgical series: nodal disease
# in ~7% of 1 cm tumours, ~20% at 2.5 cm, about half at 5 cm; M1a is rarer and later (~12% at
# 5 cm, ~1/3 at 7 cm).
_N1_MID_MM, _N1_SCALE_MM = 48.0, 15.0
_N2_MID_MM, _N2_SCALE_MM = 62.0, 15.0
_N3_MID_MM, _N3_SCALE_MM = 85.0, 15.0
_M1A_MID_MM, _M1A_SCALE_MM = 80.0, 15.0


def spread_probabilities(diameter_mm: float) -> SpreadProbabilities:
    """Size-dependent probabilities of nodal (N1->N3) and pleural/contralateral (M1a) spread.

    Args:
        diameter_mm: greatest diameter of the primary tumour.

    Returns:
        Nested probabilities for a malignant tumour of that size.
    """
    n1 = _logistic((diameter_mm - _N1_MID_MM) / _N1_SCALE_MM)
    n2 = min(n1, _logistic((diameter_mm - _N2_MID_MM) / _N2_SCALE_MM))
    n3 = min(n2, _logistic((diameter_mm - _N3_MID_MM) / _N3_SCALE_MM))
    m1a = _logistic((diameter_mm - _M1A_MID_MM) / _M1A_SCALE_MM)
    return SpreadProbabilities(n1_plus=n1, n2_plus=n2, n3=n3, m1a=m1a)


def n_from_draw(diameter_mm: float, draw: float) -> str:
    """N descriptor of a tumour of this size for a patient's uniform draw in [0, 1).

    The same draw at a larger size never gives a lower N, so a growing tumour's N only rises.
    """
    p = spread_probabilities(diameter_mm)
    if draw < p.n3:
        return "N3"
    if draw < p.n2_plus:
        return "N2"
    if draw < p.n1_plus:
        return "N1"
    return "N0"


def m_from_draw(diameter_mm: float, draw: float) -> str:
    """M descriptor ("M0" or "M1a") of a tumour of this size for a patient's uniform draw."""
    return "M1a" if draw < spread_probabilities(diameter_mm).m1a else "M0"


def draw_consistent_with(
    current: str, diameter_mm: float, rng: np.random.Generator, pathway: str
) -> float:
    """A uniform draw that reproduces an N or M descriptor already fixed at this size.

    LungSim picks a patient's baseline N and M to balance classes; later time points must
    start from that state and only rise. The draw is uniform on the interval of draws that give
    at most `current` at `diameter_mm`, so larger sizes may raise it by the usual probabilities.

    Args:
        current: the baseline descriptor ("N0".."N3" for pathway "n", "M0"/"M1a" for "m").
        diameter_mm: the baseline diameter.
        rng: the patient's random generator.
        pathway: "n" or "m".

    Returns:
        A draw in [0, 1); at a later size the descriptor is the higher of `current` and
        `n_from_draw` / `m_from_draw` with this draw.
    """
    p = spread_probabilities(diameter_mm)
    if pathway == "n":
        thresholds = {"N0": p.n1_plus, "N1": p.n2_plus, "N2": p.n3, "N3": 0.0}
    elif pathway == "m":
        thresholds = {"M0": p.m1a, "M1a": 0.0}
    else:
        raise LungCancerError("unknown spread pathway", expected="'n' or 'm'", found=pathway)
    if current not in thresholds:
        raise LungCancerError(
            "unknown descriptor for this spread pathway",
            expected=", ".join(thresholds),
            found=current,
        )
    low = thresholds[current]
    # Draws below `low` would already give a higher descriptor at this size.
    return float(low + (1.0 - low) * rng.random())
