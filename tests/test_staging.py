import pytest

from lungcancer.errors import LungCancerError
from lungcancer.staging import (
    N_DESCRIPTORS,
    T_DESCRIPTORS,
    coarse_stage,
    lung_rads_size_band,
    stage_group,
    t_from_diameter,
)

# The AJCC 8th table of DESIGN.md, written out independently of the implementation.
EXPECTED_M0 = {
    "T1a": "IA1 IIB IIIA IIIB",
    "T1b": "IA2 IIB IIIA IIIB",
    "T1c": "IA3 IIB IIIA IIIB",
    "T2a": "IB IIB IIIA IIIB",
    "T2b": "IIA IIB IIIA IIIB",
    "T3": "IIB IIIA IIIB IIIC",
    "T4": "IIIA IIIA IIIB IIIC",
}


@pytest.mark.parametrize("t", T_DESCRIPTORS)
@pytest.mark.parametrize("n_index", range(4))
@pytest.mark.parametrize("m", ["M0", "M1a", "M1b", "M1c"])
def test_stage_group_every_cell(t: str, n_index: int, m: str) -> None:
    n = N_DESCRIPTORS[n_index]
    expected = {"M1a": "IVA", "M1b": "IVA", "M1c": "IVB"}.get(m, EXPECTED_M0[t].split()[n_index])
    assert stage_group(t, n, m) == expected


@pytest.mark.parametrize(
    ("diameter_mm", "invasion", "expected"),
    [
        (5.0, "none", "T1a"),
        (10.0, "none", "T1a"),
        (10.01, "none", "T1b"),
        (20.0, "none", "T1b"),
        (25.0, "none", "T1c"),
        (30.5, "none", "T2a"),
        (45.0, "none", "T2b"),
        (50.0, "none", "T2b"),
        (60.0, "none", "T3"),
        (70.0, "none", "T3"),
        (71.0, "none", "T4"),
        (15.0, "chest_wall", "T3"),
        (80.0, "chest_wall", "T4"),
        (15.0, "mediastinum", "T4"),
    ],
)
def test_t_from_diameter(diameter_mm: float, invasion: str, expected: str) -> None:
    assert t_from_diameter(diameter_mm, invasion) == expected  # type: ignore[arg-type]


def test_t_from_diameter_rejects_empty_lesion() -> None:
    with pytest.raises(LungCancerError, match="positive"):
        t_from_diameter(0.0)


@pytest.mark.parametrize(
    ("group", "coarse"), [("IA1", "I"), ("IB", "I"), ("IIB", "II"), ("IIIC", "III"), ("IVB", "IV")]
)
def test_coarse_stage(group: str, coarse: str) -> None:
    assert coarse_stage(group) == coarse


@pytest.mark.parametrize(
    ("d", "band"), [(4.0, "2"), (5.99, "2"), (6.0, "3"), (7.9, "3"), (8.0, "4A"), (15.0, "4B")]
)
def test_lung_rads(d: float, band: str) -> None:
    assert lung_rads_size_band(d) == band
