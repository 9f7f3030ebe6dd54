"""The growth timeline: months -> diameter (Gompertz, `synth.growth`) -> T -> stage.

The physical model decides *how big* the tumour is at each month; the GAN only decides how it
*looks* at that size and stage. N and M are held at their baseline values unless the caller
gives others, or a spread schedule (`apply_spread`: e.g. N2 from month 12, M1a from month 18)
that `progression.spread` then draws outside the lesion; every output says which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from lungcancer.errors import LungCancerError
from lungcancer.staging import (
    M_DESCRIPTORS,
    N_DESCRIPTORS,
    Invasion,
    coarse_stage,
    stage_group,
    t_from_diameter,
)
from lungcancer.synth.growth import HISTOLOGY_VDT_DAYS, diameter_at_months

COARSE_STAGES = ("I", "II", "III", "IV")

# CLI spellings -> growth-model keys.
HISTOLOGY_ALIASES: Mapping[str, str] = {
    "adeno": "adenocarcinoma",
    "adenocarcinoma": "adenocarcinoma",
    "squamous": "squamous",
    "large-cell": "large_cell",
    "large_cell": "large_cell",
    "ground-glass": "ground_glass",
    "ground_glass": "ground_glass",
}


class SimulationError(LungCancerError):
    """A progression simulation cannot run as asked (regression, missing lesion, bad size)."""


@dataclass(frozen=True)
class TimelineFrame:
    """One time point of a simulated progression.

    Attributes:
        months: time from baseline.
        diameter_mm: lesion diameter from the growth model.
        t: T descriptor from the diameter.
        n: N descriptor (baseline unless given).
        m: M descriptor (baseline unless given).
        stage_group: AJCC stage group (IA1 ... IVB).
        stage: coarse stage (I ... IV), what the GAN is conditioned on.
        probabilities: the classifier's class probabilities for the rendered frame (empty
            when no classifier scored it).
    """

    months: float
    diameter_mm: float
    t: str
    n: str
    m: str
    stage_group: str
    stage: str
    probabilities: dict[str, float] = field(default_factory=dict)

    def with_probabilities(self, probabilities: Mapping[str, float]) -> TimelineFrame:
        """A copy carrying the classifier's probabilities."""
        return replace(self, probabilities={k: float(v) for k, v in probabilities.items()})


def resolve_invasion(name: str) -> Invasion:
    """Check an invasion flag: none, chest_wall or mediastinum."""
    if name == "chest_wall":
        return "chest_wall"
    if name == "mediastinum":
        return "mediastinum"
    if name == "none":
        return "none"
    raise SimulationError(
        "unknown invasion", expected="none, chest_wall or mediastinum", found=name
    )


def resolve_histology(name: str) -> str:
    """Map a histology flag (adeno, squamous, large-cell, ...) to a growth-model key."""
    key = HISTOLOGY_ALIASES.get(name.lower())
    if key is None or key not in HISTOLOGY_VDT_DAYS:
        raise SimulationError(
            "unknown histology",
            expected="adeno, squamous, large-cell or ground-glass",
            found=name,
            hint="pass --histology with one of these, or give --vdt-days directly",
        )
    return key


def default_vdt_days(histology: str) -> float:
    """The median volume-doubling time of a histology (deterministic; no random draw)."""
    return HISTOLOGY_VDT_DAYS[resolve_histology(histology)].median_days


def growth_timeline(
    d0_mm: float,
    months: Sequence[float],
    vdt_days: float,
    n: str = "N0",
    m: str = "M0",
    invasion: Invasion = "none",
) -> list[TimelineFrame]:
    """Diameter, T and stage at each month, from a baseline diameter and a doubling time.

    Args:
        d0_mm: lesion diameter at month 0.
        months: time points (negative values run the growth curve backward).
        vdt_days: initial volume-doubling time.
        n: N descriptor held over the timeline.
        m: M descriptor held over the timeline.
        invasion: chest-wall or mediastinal invasion (T3 / T4 whatever the size), held.

    Returns:
        One frame per month, in the given order.
    """
    if not months:
        raise SimulationError("no time points", expected="--months like 0,3,6,12", found="none")
    if not d0_mm > 0:
        raise SimulationError(
            "the baseline lesion diameter must be positive",
            expected="diameter_mm > 0",
            found=f"{d0_mm}",
            hint="check --diameter-mm or the lesion mask",
        )
    diameters = diameter_at_months(float(d0_mm), np.asarray(months, np.float64), float(vdt_days))
    frames = []
    for month, diameter in zip(months, diameters.tolist(), strict=True):
        t = t_from_diameter(diameter, invasion)
        group = stage_group(t, n, m)
        frames.append(
            TimelineFrame(
                months=float(month),
                diameter_mm=float(diameter),
                t=t,
                n=n,
                m=m,
                stage_group=group,
                stage=coarse_stage(group),
            )
        )
    return frames


def check_no_regression(
    timeline: Sequence[TimelineFrame], current_stage: str, allow_regression: bool
) -> None:
    """Refuse frames whose stage is earlier than the current one, unless allowed.

    Raises:
        SimulationError: a frame would regress and `allow_regression` is False.
    """
    if allow_regression or current_stage not in COARSE_STAGES:
        return
    now = COARSE_STAGES.index(current_stage)
    earlier = [
        f for f in timeline if f.stage in COARSE_STAGES and COARSE_STAGES.index(f.stage) < now
    ]
    if earlier:
        first = earlier[0]
        raise SimulationError(
            "a target stage is earlier than the lesion's current stage",
            expected=f"stages at or after {current_stage}",
            found=f"stage {first.stage} at month {first.months:g} ({first.diameter_mm:.1f} mm)",
            hint="simulate forward in time (non-negative --months); if the current stage comes "
            "from nodes, metastases or invasion, give --n/--m/--invasion so the timeline keeps "
            "them; or pass --allow-regression to render a shrinking tumour",
        )


def apply_spread(
    timeline: Sequence[TimelineFrame], schedule: Sequence[tuple[float, str]]
) -> list[TimelineFrame]:
    """Raise N and M from the months a schedule gives, and restage each frame.

    Args:
        timeline: frames from `growth_timeline`.
        schedule: (month, descriptor) pairs such as (12, "N2"), (18, "M1a"); a descriptor is in
            force from its month on. Spread never recedes: a lower N or M than the frame's
            own is an error.

    Returns:
        The frames with their N, M, stage group and stage updated.
    """
    for month, value in schedule:
        if value not in N_DESCRIPTORS + M_DESCRIPTORS:
            raise SimulationError(
                "unknown spread descriptor",
                expected=f"one of {', '.join(N_DESCRIPTORS + M_DESCRIPTORS)}",
                found=f"{value} at month {month:g}",
                hint="write --spread like 12:N2,18:M1a",
            )
    out = []
    for frame in timeline:
        n, m = frame.n, frame.m
        for month, value in schedule:
            if frame.months < month:
                continue
            known, current = (N_DESCRIPTORS, n) if value.startswith("N") else (M_DESCRIPTORS, m)
            if known.index(value) < known.index(current):
                raise SimulationError(
                    "the spread schedule lowers N or M",
                    expected=f"{value[0]} at or above {current} (spread does not recede)",
                    found=f"{value} at month {month:g}",
                    hint="give --n/--m as the baseline and only later, higher descriptors",
                )
            if value.startswith("N"):
                n = value
            else:
                m = value
        group = stage_group(frame.t, n, m)
        out.append(replace(frame, n=n, m=m, stage_group=group, stage=coarse_stage(group)))
    return out
