"""Model-randomisation sanity check for saliency maps (Adebayo et al., NeurIPS 2018).

A map that explains the model must change when the model's weights are destroyed. We
re-initialise the layers with parameters one group at a time, cascading from the output towards
the input, recompute the map after each step and compare it with the original map by Spearman
rank correlation and SSIM. Maps that stay similar (high correlation) after the top layers are
random reflect the input (edges, intensity) rather than what the network learnt.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from skimage.metrics import structural_similarity
from torch import nn

from lungcancer.explain.gradcam import grad_cam


@dataclass(frozen=True)
class RandomisationStep:
    """The map after re-initialising the top layers down to `layer`.

    Attributes:
        layer: name of the deepest (closest to the input) layer randomised so far.
        layers_randomised: how many parameterised layers are random at this step.
        rank_correlation: Spearman correlation with the original map (0 when either map is
            constant, since a constant map has no ordering to share).
        ssim: structural similarity with the original map (maps are in [0, 1]).
    """

    layer: str
    layers_randomised: int
    rank_correlation: float
    ssim: float


def _parameterised_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules owning parameters directly, in registration order (input to output, as built).

    The model itself counts (as "<model>") when it holds parameters of its own.
    """
    return [
        (name or "<model>", module)
        for name, module in model.named_modules()
        if list(module.parameters(recurse=False))
    ]


def _reinitialise(module: nn.Module, generator: torch.Generator) -> None:
    """Redraw the module's own parameters at random, at the scale each tensor had.

    Each tensor is replaced by Gaussian noise with its former mean and standard deviation (or
    its magnitude, for constant tensors such as a fresh BN scale), so what was learnt is gone
    while activations keep their size: re-drawing at a default init scale instead can shrink
    deep activations to constants, making every map flat for a reason unrelated to the test.
    Running statistics of normalisation layers are data statistics, not weights, and are kept.
    """
    with torch.no_grad():
        for param in module.parameters(recurse=False):
            mean = param.mean()
            spread = param.std() if param.numel() > 1 else torch.zeros(())
            if float(spread) == 0.0:
                spread = mean.abs().clamp_min(1e-2)
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.copy_(mean + spread * noise)


def _compare(original: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    if np.ptp(original) == 0 or np.ptp(other) == 0:
        rank = 0.0
    else:
        rank = float(stats.spearmanr(original.ravel(), other.ravel()).statistic)
    # SSIM needs windows that fit: 7 px by default, odd and no larger than the smallest side.
    side = min(original.shape)
    window = min(7, side if side % 2 == 1 else side - 1)
    similarity = float(structural_similarity(original, other, data_range=1.0, win_size=window))
    return rank, similarity


def randomisation_check(
    model: nn.Module,
    x: torch.Tensor,
    *,
    class_index: int | None = None,
    method: str = "gradcam",
    steps: int = 4,
    seed: int = 0,
) -> list[RandomisationStep]:
    """Cascading model randomisation: how much the map of one input changes.

    The model itself is not modified (a deep copy is randomised).

    Args:
        model: a classifier with a `gradcam_layer`.
        x: one input (1, C, *spatial).
        class_index: class to explain; None uses the original model's prediction, kept fixed
            for every step so only the weights change.
        method: "gradcam" or "gradcampp".
        steps: number of cascade steps; the parameterised layers are split into this many
            groups from the output down, so the last step randomises every layer.
        seed: seed of the random weights.

    Returns:
        One `RandomisationStep` per cascade step, top layers first.
    """
    reference = grad_cam(model, x, class_index=class_index, method=method)
    target = reference.class_indices[0]
    randomised = copy.deepcopy(model)
    layers = _parameterised_layers(randomised)[::-1]
    groups = [list(g) for g in np.array_split(np.arange(len(layers)), max(1, steps)) if len(g)]
    generator = torch.Generator().manual_seed(seed)
    results: list[RandomisationStep] = []
    done = 0
    for group in groups:
        for i in group:
            _reinitialise(layers[i][1], generator)
        done += len(group)
        cam = grad_cam(randomised, x, class_index=target, method=method).maps[0]
        rank, similarity = _compare(reference.maps[0], cam)
        results.append(
            RandomisationStep(
                layer=layers[group[-1]][0],
                layers_randomised=done,
                rank_correlation=rank,
                ssim=similarity,
            )
        )
    return results
