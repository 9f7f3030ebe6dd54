"""The trained classifier as a judge of rendered frames: class probabilities and features.

Frames are full slices in HU; they go through the classifier's own preprocessing (its saved
DataConfig: window, crop, resize), so a generated frame is scored exactly like a real scan.
The classifier runs in fp32 here: FID subtracts large, nearly equal numbers, and bf16 features
would add noise of the size of the differences being measured. Features for FID/KID are the
classifier's pooled pre-logit features in float64, from the same pass as the probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lungcancer.errors import CheckpointError
from lungcancer.io.record import Scan
from lungcancer.models.registry import Classifier


def class_for_stage(stage: str, class_names: Sequence[str]) -> str | None:
    """The classifier class that means `stage` ("II" matches "II", "stage_II", "Stage II")."""
    wanted = stage.lower()
    for name in class_names:
        plain = name.lower().replace("stage", "").strip(" _-")
        if plain == wanted:
            return name
    return None


class FrameScorer:
    """A loaded classifier that scores 2D slices in HU.

    Args:
        checkpoint: classifier checkpoint written by `lungcancer train`.
        device: where it runs.
    """

    def __init__(self, checkpoint: str | Path, device: str = "cpu") -> None:
        from lungcancer.train.inference import load_classifier

        loaded = load_classifier(checkpoint, device, precision="fp32")
        self.path = str(checkpoint)
        self.model: Classifier = loaded.model
        self.model.eval()
        self.class_names: tuple[str, ...] = tuple(loaded.class_names)
        self.data_config = loaded.data_config
        self.device = loaded.policy.device
        if self.data_config.spatial_dims != 2:
            raise CheckpointError(
                "the classifier is 3D; progression frames are 2D slices",
                path=checkpoint,
                expected="a 2D classifier (spatial_dims 2)",
                found=f"spatial_dims {self.data_config.spatial_dims}",
                hint="pass a classifier trained on slices",
            )

    def inputs(
        self, slices_hu: Sequence[np.ndarray], spacing_yx_mm: Sequence[tuple[float, float]]
    ) -> torch.Tensor:
        """Preprocess slices the way the classifier was trained: (N, C, S, S) float32."""
        from lungcancer.data.transforms import preprocess

        arrays = []
        for image, (sy, sx) in zip(slices_hu, spacing_yx_mm, strict=True):
            scan = Scan(
                array=np.asarray(image, np.float32)[None],
                spacing_mm=(1.0, float(sy), float(sx)),
                modality="CT",
                intensity="HU",
            )
            arrays.append(preprocess(scan, self.data_config))
        return torch.from_numpy(np.stack(arrays)).to(self.device)

    @torch.no_grad()
    def probabilities(
        self, slices_hu: Sequence[np.ndarray], spacing_yx_mm: Sequence[tuple[float, float]]
    ) -> np.ndarray:
        """Softmax class probabilities, (N, num_classes), in `class_names` order."""
        return self.score(slices_hu, spacing_yx_mm)[0]

    @torch.no_grad()
    def score(
        self, slices_hu: Sequence[np.ndarray], spacing_yx_mm: Sequence[tuple[float, float]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (N, num_classes) and pooled pre-logit features (N, d) in float64, from
        one preprocessing and one forward pass: stage fidelity and FID/KID read the same run."""
        probs, feats = [], []
        x = self.inputs(slices_hu, spacing_yx_mm)
        model = self.model
        for start in range(0, x.shape[0], 32):
            maps = model.forward_features(x[start : start + 32])
            logits = torch.as_tensor(model.forward_head(maps)).float()
            pooled = torch.as_tensor(model.forward_head(maps, pre_logits=True))
            probs.append(torch.softmax(logits, dim=1).cpu().numpy())
            feats.append(pooled.double().cpu().numpy())
        return np.concatenate(probs), np.concatenate(feats)
