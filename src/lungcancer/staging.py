"""AJCC/UICC TNM 8th edition facts used by LungSim, `measure` and the progression model.

Pure tables and lookups, no I/O: the ground truth every other module labels against.
"""

from __future__ import annotations

from typing import Literal

from lungcancer.errors import LungCancerError

T_DESCRIPTORS = ("T1a", "T1b", "T1c", "T2a", "T2b", "T3", "T4")
N_DESCRIPTORS = ("N0", "N1", "N2", "N3")
M_DESCRIPTORS = ("M0", "M1a", "M1b", "M1c")
STAGE_GROUPS = (
    "IA1", "IA2", "IA3", "IB", "IIA", "IIB", "IIIA", "IIIB", "IIIC", "IVA", "IVB",
)  # fmt: skip

# Upper bounds (inclusive, cm) of greatest diameter per T descriptor; T4 is everything above 7 cm.
_T_UPPER_CM = (("T1a", 1.0), ("T1b", 2.0), ("T1c", 3.0), ("T2a", 4.0), ("T2b", 5.0), ("T3", 7.0))

# Stage group table for M0, rows T, columns N0..N3 (DESIGN.md, AJCC 8th).
_STAGE_M0: dict[str, tuple[str, str, str, str]] = {
    "T1a": ("IA1", "IIB", "IIIA", "IIIB"),
    "T1b": ("IA2", "IIB", "IIIA", "IIIB"),
    "T1c": ("IA3", "IIB", "IIIA", "IIIB"),
    "T2a": ("IB", "IIB", "IIIA", "IIIB"),
    "T2b": ("IIA", "IIB", "IIIA", "IIIB"),
    "T3": ("IIB", "IIIA", "IIIB", "IIIC"),
    "T4": ("IIIA", "IIIA", "IIIB", "IIIC"),
}

Invasion = Literal["none", "chest_wall", "mediastinum"]


def t_from_diameter(diameter_mm: float, invasion: Invasion = "none") -> str:
    """T descriptor from greatest diameter and invasion.

    Args:
        diameter_mm: greatest lesion diameter in millimetres (> 0).
        invasion: chest-wall invasion makes a tumour at least T3; mediastinal, heart, great
            vessel or tracheal invasion makes it T4.

    Returns:
        One of `T_DESCRIPTORS`.
    """
    if not diameter_mm > 0:
        raise LungCancerError(
            "a lesion diameter must be positive",
            expected="diameter_mm > 0",
            found=f"{diameter_mm}",
            hint="check the lesion mask: it is empty or the spacing is wrong",
        )
    if invasion == "mediastinum":
        return "T4"
    diameter_cm = diameter_mm / 10.0
    by_size = "T4"
    for name, upper_cm in _T_UPPER_CM:
        if diameter_cm <= upper_cm:
            by_size = name
            break
    if invasion == "chest_wall" and T_DESCRIPTORS.index(by_size) < T_DESCRIPTORS.index("T3"):
        return "T3"
    return by_size


def stage_group(t: str, n: str, m: str) -> str:
    """Stage group (IA1 ... IVB) from T, N and M descriptors, by the AJCC 8th table."""
    if t not in _STAGE_M0 or n not in N_DESCRIPTORS or m not in M_DESCRIPTORS:
        raise LungCancerError(
            "unknown TNM descriptor",
            expected=f"T in {T_DESCRIPTORS}, N in {N_DESCRIPTORS}, M in {M_DESCRIPTORS}",
            found=f"{t} {n} {m}",
        )
    if m in ("M1a", "M1b"):
        return "IVA"
    if m == "M1c":
        return "IVB"
    return _STAGE_M0[t][N_DESCRIPTORS.index(n)]


def coarse_stage(group: str) -> str:
    """Collapse a stage group to I, II, III or IV (the default LungSim class granularity)."""
    if group not in STAGE_GROUPS:
        raise LungCancerError("unknown stage group", expected=f"one of {STAGE_GROUPS}", found=group)
    for roman in ("IV", "III", "II", "I"):
        if group.startswith(roman):
            return roman
    raise AssertionError(group)  # unreachable: every group starts with a roman numeral


def lung_rads_size_band(diameter_mm: float) -> str:
    """Lung-RADS category of a solid nodule from its size alone (DESIGN.md bands)."""
    if diameter_mm < 6.0:
        return "2"
    if diameter_mm < 8.0:
        return "3"
    if diameter_mm < 15.0:
        return "4A"
    return "4B"
