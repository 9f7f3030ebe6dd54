"""The baselines' building blocks: mask dilation."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from lungcancer.progression.baselines import dilate


@pytest.mark.parametrize("shape", [(3, 1, 17, 21), (2, 1, 9, 11, 10)])
@pytest.mark.parametrize("pixels", [0, 1, 2, 3])
def test_dilate_equals_one_square_or_cubic_max_pool(shape: tuple[int, ...], pixels: int) -> None:
    torch.manual_seed(pixels)
    mask = torch.rand(shape) > 0.93  # scattered points: every one must grow to a full cube
    out = dilate(mask, pixels)
    assert out.dtype == torch.float32
    if pixels == 0:
        assert torch.equal(out, mask.float())
        return
    pool = F.max_pool2d if len(shape) == 4 else F.max_pool3d
    expected = pool(mask.float(), kernel_size=2 * pixels + 1, stride=1, padding=pixels)
    assert torch.equal(out, expected)
    assert float(out.sum()) > float(mask.sum())
