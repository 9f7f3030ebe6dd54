"""The trained classifier as a judge of rendered frames: class probabilities and features.

Frames are full slices in HU; they go through the classifier's own preprocessing (its saved
DataConfig: window, crop, resize), so a generated frame is scored exactly like a real scan.
The classifier runs in fp32 here: FID subtracts large, nearly equal numbers, and bf16 features
would add noise of the size of the differences being measured. Features for FID/KID are the
classifier's pooled pre-logit features, handed to torchmetrics in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lungcancer.errors import CheckpointError
from lungcancer.io.record import Scan


def class_for_stage(stage: str, class_names: Sequence[str]) -> str | None:
    """The classifier class that means `stage` ("II" matches "II", "stage_II", "Stage II")."""
    wanted = stage.lower()
    for name in class_names:
        plain = name.lower().replace("stage", "").strip(" _-")
        if plain == wanted:
            return name
    return None


class ClassifierFeatures(nn.Module):
    """Pooled pre-logit features of a classifier, float64 (a torchmetrics `feature` module).

    Args:
        model: a registered classifier (`forward_features` + `forward_head(pre_logits=True)`).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # The pooled width (twice the channels with "avgmax" pooling).
        self.num_features = int(getattr(model, "head_features", getattr(model, "num_features", 0)))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.model.forward_head(self.model.forward_features(x), pre_logits=True)  # type: ignore[operator]
        return torch.as_tensor(feats).double()


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
        self.model: nn.Module = loaded.model.eval()
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
        self.features = ClassifierFeatures(self.model)

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
        out = []
        x = self.inputs(slices_hu, spacing_yx_mm)
        for start in range(0, x.shape[0], 32):
            logits = self.model(x[start : start + 32]).float()
            out.append(torch.softmax(logits, dim=1).cpu().numpy())
        return np.concatenate(out)
