import numpy as np
import pytest

from lungcancer.io.record import Scan


def test_world_voxel_round_trip_with_oblique_direction() -> None:
    angle = np.deg2rad(30)
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    scan = Scan(
        array=np.zeros((4, 5, 6), np.float32),
        spacing_mm=(2.5, 0.7, 0.8),
        origin_xyz_mm=(-100.0, 50.0, 10.0),
        direction_xyz=tuple(rot.ravel()),
    )
    zyx = (1.5, 3.0, 4.25)
    assert np.allclose(scan.world_to_voxel(scan.voxel_to_world(zyx)), zyx)
    # Voxel (0, 0, 1) is one x-spacing along the first direction column.
    x, y, z = scan.voxel_to_world((0, 0, 1))
    assert np.allclose((x + 100, y - 50, z - 10), 0.8 * rot[:, 0])


def test_scan_rejects_wrong_dtype_and_rank() -> None:
    with pytest.raises(ValueError, match="float32"):
        Scan(array=np.zeros((1, 2, 2)), spacing_mm=(1, 1, 1))
    with pytest.raises(ValueError, match="z-y-x"):
        Scan(array=np.zeros((2, 2), np.float32), spacing_mm=(1, 1, 1))
