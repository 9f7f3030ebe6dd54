"""Preprocessing (windowing, slice/patch choice, spacing, lung crop, resize) and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_builders import chest_slice_hu

from lungcancer.config import DataConfig, WindowConfig
from lungcancer.data.transforms import (
    Augmenter,
    affine_sample,
    input_channels,
    lung_box,
    preprocess,
    preprocess_fields,
    preprocess_mask,
    slab_indices,
    window,
)
from lungcancer.errors import ConfigError
from lungcancer.io import Scan


def _volume(depth: int = 6, size: int = 64, spacing=(2.5, 0.7, 0.7)) -> Scan:
    stack = np.stack([chest_slice_hu(size) + z for z in range(depth)]).astype(np.float32)
    return Scan(array=stack, spacing_mm=spacing)


@pytest.mark.parametrize(
    ("cfg", "kwargs", "expected_shape"),
    [
        (DataConfig(image_size=32), {}, (1, 32, 32)),
        (DataConfig(image_size=48, lung_crop=True), {"slice_index": 2}, (1, 48, 48)),
        (DataConfig(image_size=32, spacing_mm=(1.5, 1.5)), {}, (1, 32, 32)),
        (
            DataConfig(image_size=16, windows=(WindowConfig(), WindowConfig(40.0, 400.0))),
            {},
            (2, 16, 16),
        ),
        (DataConfig(spatial_dims=3, patch_size_3d=16), {}, (1, 16, 16, 16)),
        (
            DataConfig(spatial_dims=3, patch_size_3d=8),
            {"center_zyx": (1.0, 5.0, 60.0)},
            (1, 8, 8, 8),
        ),
    ],
)
def test_output_shapes(cfg: DataConfig, kwargs: dict, expected_shape: tuple[int, ...]) -> None:
    out = preprocess(_volume(), cfg, **kwargs)
    assert out.shape == expected_shape
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_lung_window_maps_hu_to_unit_range() -> None:
    hu = np.array([-1350.0, -600.0, 150.0, 3000.0], dtype=np.float32)
    np.testing.assert_allclose(window(hu, "HU", (WindowConfig(),))[0], [0.0, 0.5, 1.0, 1.0])


def test_unit_images_pass_through_once_per_window() -> None:
    unit = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    out = window(unit, "unit", (WindowConfig(), WindowConfig(40.0, 400.0)))
    assert out.shape == (2, 4, 4)
    np.testing.assert_allclose(out[0], unit)
    np.testing.assert_allclose(out[1], unit)


def test_slice_choice_follows_index_then_centre_then_middle() -> None:
    scan = _volume(depth=5)
    scan.array[:, 0, 0] = np.arange(5) * 100 - 1000  # a per-slice marker in the corner
    cfg = DataConfig(image_size=64, windows=(WindowConfig(-500.0, 1000.0),))
    marker = [
        preprocess(scan, cfg, **kw)[0, 0, 0]
        for kw in (
            {"slice_index": 1},
            {"center_zyx": (3.2, 0.0, 0.0)},
            {},
        )
    ]
    assert marker == pytest.approx([0.1, 0.3, 0.2], abs=0.02)


def test_target_spacing_keeps_physical_size() -> None:
    # The same 20 mm disk scanned at two pixel sizes fills the same share of the output.
    shares = []
    for pixel_mm in (0.5, 1.0):
        size = round(64 / pixel_mm)
        yy, xx = np.mgrid[0:size, 0:size] * pixel_mm
        disk = ((yy - 32) ** 2 + (xx - 32) ** 2 <= 10**2).astype(np.float32)
        scan = Scan(array=(disk * 1000 - 1000)[None], spacing_mm=(1.0, pixel_mm, pixel_mm))
        out = preprocess(scan, DataConfig(image_size=32, spacing_mm=(2.0, 2.0)))
        shares.append(float((out[0] > 0.5).mean()))
    assert shares[0] == pytest.approx(shares[1], abs=0.01)
    assert shares[0] == pytest.approx(np.pi * 10**2 / 64**2, abs=0.02)


def test_spacing_is_not_applied_to_rasters_without_one() -> None:
    scan = Scan(
        array=np.ones((1, 20, 20), dtype=np.float32) * 0.5,
        spacing_mm=(1.0, 1.0, 1.0),
        intensity="unit",
        meta={"spacing_from": "none in file; 1 mm assumed"},
    )
    notes: list[str] = []
    preprocess(scan, DataConfig(image_size=8, spacing_mm=(0.5, 0.5)), notes=notes)
    assert any("spacing_mm was not applied" in n for n in notes)


def test_lung_crop_finds_the_lungs_and_falls_back_with_a_note() -> None:
    box = lung_box(chest_slice_hu(64), "HU")
    assert box is not None
    y0, y1, x0, x1 = box
    assert 6 < y0 < 20 and 44 < y1 < 58 and 6 < x0 < 20 and 44 < x1 < 58
    no_lungs = Scan(
        array=chest_slice_hu(64, lungs=False)[None].astype(np.float32), spacing_mm=(1.0, 1.0, 1.0)
    )
    notes: list[str] = []
    cropped = preprocess(no_lungs, DataConfig(image_size=64, lung_crop=True), notes=notes)
    full = preprocess(no_lungs, DataConfig(image_size=64))
    assert notes == ["no lung field found; the whole image was used"]
    np.testing.assert_allclose(cropped, full)


def test_lung_crop_zooms_in_on_the_lungs() -> None:
    scan = Scan(array=chest_slice_hu(64)[None].astype(np.float32), spacing_mm=(1.0, 1.0, 1.0))
    full = preprocess(scan, DataConfig(image_size=64))
    cropped = preprocess(scan, DataConfig(image_size=64, lung_crop=True))

    # Lung parenchyma (-850 HU) sits at 0.33 in the lung window, outside air at 0.22.
    def lung_share(image: np.ndarray) -> float:
        return float(((image > 0.3) & (image < 0.37)).mean())

    assert lung_share(cropped) > lung_share(full) * 1.3


def test_preprocess_is_deterministic() -> None:
    cfg = DataConfig(image_size=32, lung_crop=True, spacing_mm=(1.0, 1.0))
    np.testing.assert_array_equal(preprocess(_volume(), cfg), preprocess(_volume(), cfg))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_augmentation_is_seeded_and_changes_images(spatial_dims: int) -> None:
    shape = (1, 32, 32) if spatial_dims == 2 else (1, 16, 16, 16)
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    first = [Augmenter(spatial_dims, seed=3)(image) for _ in range(1)]
    again = Augmenter(spatial_dims, seed=3)
    outputs = [again(image) for _ in range(4)]
    np.testing.assert_array_equal(first[0], outputs[0])
    assert any(not np.array_equal(out, image) for out in outputs)
    assert all(out.shape == shape and out.min() >= 0 and out.max() <= 1 for out in outputs)
    other = Augmenter(spatial_dims, seed=4)
    assert any(not np.array_equal(other(image), out) for out in outputs[:1])


def _disc_image(size: int = 64, radius: float = 10.0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    return ((yy**2 + xx**2) <= radius**2).astype(np.float32)[np.newaxis] * 0.8 + 0.1


def _disc_area(image: np.ndarray) -> float:
    return float((image[0] > 0.5).sum())


def test_default_augmentation_keeps_a_lesion_s_size() -> None:
    # The T descriptor is a size: without zoom or warping, rotations and shifts keep a disc's
    # area to within resampling error, whatever the draw.
    image = _disc_image()
    area = _disc_area(image)
    augment = Augmenter(2, seed=0)
    areas = [_disc_area(augment(image)) for _ in range(30)]
    assert max(abs(a - area) for a in areas) <= 0.06 * area


def test_zoom_augmentation_changes_a_lesion_s_size_when_asked() -> None:
    image = _disc_image()
    area = _disc_area(image)
    augment = Augmenter(2, seed=0, scale=0.3, elastic=True)
    areas = [_disc_area(augment(image)) for _ in range(30)]
    assert max(abs(a - area) for a in areas) > 0.15 * area


def _point_image(shape: tuple[int, ...], at: tuple[int, ...]) -> torch.Tensor:
    image = torch.zeros((1, *shape))
    image[(0, *at)] = 1.0
    return image


def _peak(image: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(image[0].argmax()), image.shape[1:]))


@pytest.mark.parametrize("dims", [2, 3])
def test_the_affine_moves_turns_and_zooms_content_as_asked(dims: int) -> None:
    shape = (17,) * dims
    eye, ones = np.eye(dims), np.ones(dims)
    point = _point_image(shape, (8,) * (dims - 2) + (5, 8))
    # A shift moves content by that many pixels along each array axis.
    shift = np.zeros(dims)
    shift[-2:] = (3, -2)
    assert _peak(affine_sample(point, eye, ones, shift)) == (8,) * (dims - 2) + (8, 6)
    # A quarter turn in the (y, x) plane by R sends the point to R^-1 (p - centre) + centre.
    quarter = np.eye(dims)
    quarter[-2:, -2:] = [[0.0, -1.0], [1.0, 0.0]]
    offset = np.array((0,) * (dims - 2) + (5 - 8, 0))
    expected = tuple(int(v) for v in np.round(quarter.T @ offset + 8))
    assert _peak(affine_sample(point, quarter, ones, np.zeros(dims))) == expected
    # A zoom of 2 along one axis doubles a centred square's side along it, and only there.
    square = torch.zeros((1, *shape))
    square[(0, *[slice(6, 11)] * dims)] = 1.0
    zoom = np.ones(dims)
    zoom[-1] = 2.0
    zoomed = affine_sample(square, eye, zoom, np.zeros(dims))[0] > 0.5
    centre = (8,) * (dims - 1)
    assert int(zoomed[centre].sum()) in (9, 10, 11)  # 5 px -> 10 px along x
    assert int(zoomed[..., 8].sum()) == 5 ** (dims - 1)  # unchanged across x


def test_augmentation_draws_every_kind_of_change() -> None:
    # Over many draws the flip, the affine, the noise and the intensity jitter all occur, and
    # each output stays a valid [0, 1] image: the draws follow the documented probabilities.
    image = np.tile(np.linspace(0.2, 0.8, 32, dtype=np.float32), (1, 32, 1))
    augment = Augmenter(2, seed=0)
    outputs = [augment(image) for _ in range(200)]
    flipped = sum(bool(np.allclose(o[0, 16, ::-1], image[0, 16], atol=0.05)) for o in outputs)
    unchanged = sum(bool(np.array_equal(o, image)) for o in outputs)
    noisy = sum(bool(np.std(np.diff(o[0, 16, 8:24])) > 0.004) for o in outputs)
    assert 40 < flipped < 140  # flip p=0.5 (some flipped ones were also turned or shifted)
    assert 5 < unchanged < 60  # nothing drawn: 0.5 * 0.5 * 0.7^3 = 8.6% of draws
    assert 20 < noisy < 120  # noise p=0.3
    assert all(o.dtype == np.float32 and o.min() >= 0.0 and o.max() <= 1.0 for o in outputs)


def _marked_volume(depth: int, spacing_z_mm: float) -> Scan:
    """A volume whose slice z carries the marker -1000 + 100 z in a body pixel (unit: 0.1 z
    in the window W1000/L-500), so each channel's source slice can be read back."""
    scan = _volume(depth=depth, spacing=(spacing_z_mm, 0.7, 0.7))
    scan.array[:, 32, 32] = np.arange(depth) * 100.0 - 1000.0
    return scan


def test_slab_indices_put_the_own_slice_first_then_nearest_pairs_clamped() -> None:
    assert slab_indices(4, 10, 3, 0.0, 1.0) == [4, 3, 5]
    assert slab_indices(4, 10, 5, 0.0, 1.0) == [4, 3, 5, 2, 6]
    # 3 mm apart on 1.5 mm slices: two slices per step; clamped at the volume's ends.
    assert slab_indices(1, 6, 3, 3.0, 1.5) == [1, 0, 3]
    assert slab_indices(0, 1, 3, 3.0, 1.0) == [0, 0, 0]


def test_slab_input_stacks_the_neighbours_beside_each_window() -> None:
    scan = _marked_volume(depth=9, spacing_z_mm=1.0)
    windows = (WindowConfig(-500.0, 1000.0), WindowConfig(-500.0, 2000.0))
    cfg = DataConfig(image_size=64, windows=windows, slab_slices=3, slab_spacing_mm=2.0)
    assert input_channels(cfg) == 6
    out = preprocess(scan, cfg, slice_index=4)
    assert out.shape == (6, 64, 64)
    # Window-major: window 0 gives slices 4, 2, 6 (own first), then window 1 the same slices.
    first = [(-1000.0 + 100.0 * z + 1000.0) / 1000.0 for z in (4, 2, 6)]
    second = [(-1000.0 + 100.0 * z + 1500.0) / 2000.0 for z in (4, 2, 6)]
    np.testing.assert_allclose(out[:, 32, 32], first + second, atol=0.02)
    # Channel 0 is what the single-slice input would be.
    single = preprocess(scan, DataConfig(image_size=64, windows=windows), slice_index=4)
    np.testing.assert_allclose(out[0], single[0])
    np.testing.assert_allclose(out[3], single[1])


def test_a_slab_from_a_single_slice_repeats_it_and_says_so() -> None:
    scan = _marked_volume(depth=1, spacing_z_mm=1.0)
    notes: list[str] = []
    cfg = DataConfig(image_size=32, slab_slices=3)
    out = preprocess(scan, cfg, notes=notes)
    np.testing.assert_allclose(out[1], out[0])
    np.testing.assert_allclose(out[2], out[0])
    assert any("missing neighbours repeat" in n for n in notes)


def test_an_even_slab_is_refused() -> None:
    with pytest.raises(ConfigError, match="slab_slices must be odd"):
        preprocess(_volume(), DataConfig(image_size=32, slab_slices=2))


def test_the_cache_key_changes_with_a_slab_and_only_then() -> None:
    plain = preprocess_fields(DataConfig())
    assert "slab" not in plain  # caches written before slabs existed stay valid
    assert preprocess_fields(DataConfig(slab_slices=1, slab_spacing_mm=3.0)) == plain
    assert preprocess_fields(DataConfig(slab_slices=3, slab_spacing_mm=3.0))["slab"] == [3, 3.0]
    assert preprocess_fields(DataConfig(slab_slices=3)) != preprocess_fields(
        DataConfig(slab_slices=3, slab_spacing_mm=3.0)
    )


def test_flips_can_be_turned_off_and_the_other_draws_stay_the_same() -> None:
    # Left half bright, right half dark: a left-right flip swaps them, nothing else does.
    image = np.zeros((1, 32, 32), np.float32)
    image[:, :, :16] = 0.8
    sides = {}
    for flip in (True, False):
        aug = Augmenter(2, seed=3, flip=flip)
        out = [aug(image) for _ in range(40)]
        sides[flip] = [float(o[0, :, :12].mean() - o[0, :, 20:].mean()) for o in out]
    assert min(sides[False]) > 0.3  # never mirrored
    assert sum(s < -0.3 for s in sides[True]) >= 10  # about half mirrored
    # Where the flipping run did not flip, both runs drew exactly the same augmentation.
    unflipped = [i for i, s in enumerate(sides[True]) if s > 0]
    assert unflipped and all(sides[True][i] == sides[False][i] for i in unflipped)


def _chest_with_nodule(size: int = 96) -> tuple[Scan, np.ndarray]:
    """A chest slice with a 400 HU nodule in the right lung, and the nodule's mask."""
    image = chest_slice_hu(size)
    yy, xx = np.mgrid[:size, :size]
    mask = ((yy - 0.42 * size) ** 2 + (xx - 0.3 * size) ** 2) <= (0.05 * size) ** 2
    image[mask] = 400.0
    return Scan(array=image[None].astype(np.float32), spacing_mm=(1.0, 1.5, 1.5)), mask[None]


# A window that shows only the nodule (400 HU -> 1; lung, body and air -> 0).
_NODULE_ONLY = (WindowConfig(center_hu=300.0, width_hu=200.0),)


@pytest.mark.parametrize(
    "cfg",
    [
        DataConfig(image_size=48, lung_crop=True, spacing_mm=(2.0, 2.0), windows=_NODULE_ONLY),
        DataConfig(image_size=48, lung_crop=True, windows=_NODULE_ONLY),
        DataConfig(image_size=64, windows=_NODULE_ONLY),
    ],
)
def test_a_mask_lands_on_its_lesion_in_the_network_input(cfg: DataConfig) -> None:
    scan, mask = _chest_with_nodule()
    image = preprocess(scan, cfg)[0]
    on_grid = preprocess_mask(scan, mask, cfg)
    assert on_grid.shape == image.shape and on_grid.min() >= 0.0 and on_grid.max() <= 1.0
    # The image shows the nodule alone, so the mask on the input grid must cover what it shows.
    seen, masked = image > 0.1, on_grid >= 0.5
    assert masked.sum() > 4
    assert (seen & masked).sum() / (seen | masked).sum() > 0.7
    np.testing.assert_allclose(np.argwhere(masked).mean(0), np.argwhere(seen).mean(0), atol=0.5)


def test_a_mask_moves_with_its_image_and_leaves_the_image_s_draws_alone() -> None:
    image = np.full((2, 48, 48), 0.2, np.float32)
    mask = np.zeros((48, 48), np.float32)
    image[:, 10:18, 26:34] = 0.9  # a bright square off centre...
    mask[10:18, 26:34] = 1.0  # ...and its mask
    alone, paired = Augmenter(2, seed=5, scale=0.1), Augmenter(2, seed=5, scale=0.1)
    for _ in range(12):
        expected = alone(image)
        out, moved = paired.augment_pair(image, mask)
        # Same draws for the image as without a mask: a mask loss changes no training image.
        np.testing.assert_array_equal(out, expected)
        assert moved.shape == (48, 48)
        # Noise and intensity jitter never reach the mask; flips and the affine do.
        lesion = moved >= 0.5
        assert lesion.sum() > 20
        assert out[0][lesion].mean() > out[0][~lesion].mean() + 0.4
        # Only the square's resampled border is fractional: no noise or jitter on the mask.
        assert ((moved > 0) & (moved < 1)).sum() < 100 and moved.min() >= 0.0
