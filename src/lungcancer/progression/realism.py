"""Realism of rendered frames: FID and KID on the judge classifier's features, with a paired
patient bootstrap of each method's FID difference from geometric growth.

FID on a few dozen frames in a 1024-wide feature space is dominated by sampling noise: the
same generator can win on one split and lose on the next. So beside each point estimate the
evaluation reports the 95% interval of "FID(method) - FID(geometric growth)", resampling
patients: every method's frame of a patient and that patient's true scan move together, which
removes the patient-to-patient variation both methods share. An interval below zero means the
method is closer to the real scans than geometric growth on this evaluation set, not by chance
of which patients were drawn.

Features come from the judge's scoring pass (fp32 classifier, float64 features, the same pass
that gives stage fidelity). torchmetrics computes the reported FID and KID from them, and the
bootstrap uses `frechet_distance`, the same quantity computed in the n x n sample space (fast
for n << feature width).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

BASELINE = "geometric_growth"  # the method every other one is compared with (issue 5)
LESION_ONLY = "_lesion_only"  # suffix of the frames scored without the drawn spread
N_BOOT = 1000


class _Precomputed(nn.Module):
    """A torchmetrics `feature` module for features computed beforehand (identity, float64)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double()


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between two feature sets, (n, d) each, in float64.

    tr sqrt(C_r C_f) is the nuclear norm of A_r A_f^T, where C = A^T A and A are the centred
    features over sqrt(n - 1): an n_r x n_f problem instead of a d x d matrix square root.
    """
    real = np.asarray(real, np.float64)
    fake = np.asarray(fake, np.float64)
    a_r = (real - real.mean(0)) / np.sqrt(len(real) - 1)
    a_f = (fake - fake.mean(0)) / np.sqrt(len(fake) - 1)
    cross = np.linalg.svd(a_r @ a_f.T, compute_uv=False).sum()
    mean_term = float(np.sum((real.mean(0) - fake.mean(0)) ** 2))
    return mean_term + float(np.sum(a_r**2) + np.sum(a_f**2) - 2.0 * cross)


def paired_fid_difference(
    real: np.ndarray,
    method: np.ndarray,
    baseline: np.ndarray,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> tuple[float, float]:
    """95% percentile interval of FID(method) - FID(baseline), resampling patients (rows).

    Row i of the three arrays belongs to the same patient; a resample draws rows with
    replacement and applies the same draw to all three.
    """
    rng = np.random.default_rng(seed)
    n = len(real)
    diffs = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        diffs[b] = frechet_distance(real[idx], method[idx]) - frechet_distance(
            real[idx], baseline[idx]
        )
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def baseline_for(method: str, methods: Iterable[str]) -> str | None:
    """The geometric-growth frames `method` is compared with: like with like.

    A "<method>_lesion_only" row (frames without the drawn nodal and pleural spread) is
    compared with geometric growth's lesion-only frames, the others with geometric growth as
    the simulator draws it. Both methods get the same spread, so comparing a lesion-only row
    with a spread row would measure the spread, not the lesion. None for a baseline itself.
    """
    names = set(methods)
    if method.endswith(LESION_ONLY) and BASELINE + LESION_ONLY in names:
        baseline = BASELINE + LESION_ONLY
    else:
        baseline = BASELINE
    return None if method in (baseline, BASELINE) else baseline


def score_realism(
    real_f: np.ndarray,
    method_f: dict[str, np.ndarray],
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """FID and KID of each method against the real frames, the paired bootstrap against
    geometric growth, and the real-versus-real floor.

    Args:
        real_f: the judge's features of the true future slices, (N, d), one row per patient
            (`scoring.FrameScorer.score`).
        method_f: each method's features, rows in the same patient order.
        n_boot: bootstrap resamples (0: no interval).
        seed: bootstrap seed.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    n = len(real_f)
    module = _Precomputed(real_f.shape[1])
    fid = FrechetInceptionDistance(feature=module, reset_real_features=False)
    with warnings.catch_warnings():
        # "KID keeps all features in memory": a few hundred vectors here.
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(
            feature=module,
            subsets=50,
            subset_size=max(2, min(50, n // 2)),
            reset_real_features=False,
        )
    fid.update(torch.from_numpy(real_f), real=True)
    kid.update(torch.from_numpy(real_f), real=True)
    out: dict[str, dict[str, Any]] = {}
    for method, feats in method_f.items():
        fid.update(torch.from_numpy(feats), real=False)
        kid.update(torch.from_numpy(feats), real=False)
        kid_mean, kid_std = kid.compute()
        out[method] = {
            "fid": float(fid.compute()),
            "kid": float(kid_mean),
            "kid_std": float(kid_std),
        }
        fid.reset()
        kid.reset()
    if BASELINE in method_f and n_boot > 0:
        for method, feats in method_f.items():
            baseline = baseline_for(method, method_f)
            if baseline is None:
                continue
            low, high = paired_fid_difference(
                real_f, feats, method_f[baseline], n_boot=n_boot, seed=seed
            )
            out[method]["fid_minus_geometric"] = out[method]["fid"] - out[baseline]["fid"]
            out[method]["fid_minus_geometric_ci95"] = [low, high]
            out[method]["fid_baseline"] = baseline
    # The floor: two disjoint halves of the real frames (patients are already one pair each).
    half = n // 2
    out["real_vs_real_floor"] = {
        "fid": frechet_distance(real_f[:half], real_f[half : 2 * half]),
        "n_per_half": float(half),
    }
    out["bootstrap"] = {"n_boot": n_boot, "seed": seed, "resampled": "patients, paired"}
    return out
