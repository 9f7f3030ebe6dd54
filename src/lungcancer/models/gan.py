"""Networks of the progression GAN: a conditional residual U-Net generator and a PatchGAN critic.

The generator sees a lesion-centred patch (HU windowed to [-1, 1]) and renders the same patch at
a target stage and target diameter. Besides the patch it gets a geometric prior: the same patch
with its lesion magnified to the target diameter (`progression.baselines.grow_lesion`). It
predicts a residual on the prior and a soft gate, `out = prior + roi * g * r`, with both heads
zero-initialised: an untrained generator returns the prior, which equals the input away from
the lesion. `roi` is the lesion ROI (`lesion_roi`, known from the sizes), so anatomy outside it
is the input's exactly and is never re-synthesised.

Size is geometry, so the generator also gets a radial-distance channel (distance from the patch
centre as a fraction of the patch width, CoordConv) and the target diameter in the same unit
(diameter / patch field of view). A FiLM layer in every decoder block can then turn "diameter d"
into "grow out to radius d/2" without having to infer where the centre is. The patch's pixel
size (mm) is a condition too: patches of large tumours are coarser, and texture such as noise
and vessel calibre must keep its physical scale.

The discriminator is MONAI's `PatchDiscriminator` without batch norm (batch statistics break
the R1 penalty), with spectral norm on every convolution, projection conditioning on the target
stage (Miyato & Koyama 2018) and, for unpaired training, an auxiliary stage-classifier head
(StarGAN). Both networks work on 2D slices and 3D patches (`spatial_dims`).

Nothing here is registered in the classifier registry: these are not classifiers.
"""

from __future__ import annotations

import torch
from monai.networks.nets import PatchDiscriminator
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

ROI_FEATHER_MM = 4.0  # the generator's residual fades to zero over this rim of the lesion ROI
# The lesion ROI's radius is this fraction of the larger (input, target) diameter plus a margin;
# the generator's residual and the fidelity ruler (`progression.metrics`) use the same disc.
ROI_DIAMETER_FRACTION = 0.75
ROI_MARGIN_MM = 3.0


def _conv(
    spatial_dims: int, cin: int, cout: int, kernel: int = 3, stride: int = 1
) -> nn.Conv2d | nn.Conv3d:
    conv_cls = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    return conv_cls(cin, cout, kernel, stride=stride, padding=kernel // 2)


def _groups(channels: int) -> int:
    for groups in (8, 4, 2):
        if channels % groups == 0:
            return groups
    return 1


def radial_grid(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Distance of every pixel/voxel centre from the patch centre, as a fraction of patch width.

    Args:
        shape: spatial shape of the patch (y, x) or (z, y, x); cubic/square patches.
        device: where the grid lives.
        dtype: grid dtype.

    Returns:
        Tensor of `shape`; 0 at the centre, 0.5 at the middle of an edge.
    """
    axes = [(torch.arange(n, device=device, dtype=dtype) + 0.5 - n / 2) / n for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.sqrt(sum(m * m for m in mesh))  # type: ignore[arg-type]


def lesion_roi(
    radial: torch.Tensor,
    source_size: torch.Tensor,
    target_size: torch.Tensor,
    spacing_mm: torch.Tensor,
    feather_mm: float = 0.0,
) -> torch.Tensor:
    """The lesion ROI: a disc of 0.75 x the larger diameter + 3 mm around the patch centre.

    Args:
        radial: `radial_grid` of the patch (fractions of the patch width).
        source_size: (B,) current lesion diameter / patch field of view.
        target_size: (B,) target lesion diameter / patch field of view.
        spacing_mm: (B,) patch pixel size.
        feather_mm: > 0: the disc's edge falls linearly from 1 to 0 over this distance.

    Returns:
        (B, 1, *spatial) weights in [0, 1] (0/1 without feathering).
    """
    fov_mm = radial.shape[-1] * spacing_mm.float()
    view = (-1, 1) + (1,) * radial.ndim
    larger = torch.maximum(source_size.float(), target_size.float())
    radius = (ROI_DIAMETER_FRACTION * larger + ROI_MARGIN_MM / fov_mm).reshape(view)
    grid = radial.float().expand(1, 1, *radial.shape)
    if feather_mm <= 0:
        return (grid <= radius).float()
    feather = (feather_mm / fov_mm).reshape(view)
    return ((radius + feather - grid) / feather).clamp(0.0, 1.0)


class FiLM(nn.Module):
    """Feature-wise affine modulation from a condition vector; identity at initialisation."""

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(cond).chunk(2, dim=1)
        view = (h.shape[0], h.shape[1]) + (1,) * (h.ndim - 2)
        return h * (1 + gamma.reshape(view)) + beta.reshape(view)


class _EncBlock(nn.Module):
    def __init__(self, spatial_dims: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv(spatial_dims, cin, cout, 3, stride)
        self.norm1 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = _conv(spatial_dims, cout, cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.norm1(self.conv1(x)), 0.2)
        return F.leaky_relu(self.norm2(self.conv2(h)), 0.2)


class _DecBlock(nn.Module):
    """Upsample, join the skip, two convolutions each followed by norm + FiLM + activation."""

    def __init__(self, spatial_dims: int, cin: int, cskip: int, cout: int, cond_dim: int) -> None:
        super().__init__()
        self.conv1 = _conv(spatial_dims, cin + cskip, cout)
        self.norm1 = nn.GroupNorm(_groups(cout), cout, affine=False)
        self.film1 = FiLM(cond_dim, cout)
        self.conv2 = _conv(spatial_dims, cout, cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout, affine=False)
        self.film2 = FiLM(cond_dim, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
        h = self.conv1(torch.cat([x, skip], dim=1))
        h = F.leaky_relu(self.film1(self.norm1(h), cond), 0.2)
        h = self.conv2(h)
        return F.leaky_relu(self.film2(self.norm2(h), cond), 0.2)


class ProgressionGenerator(nn.Module):
    """Conditional residual U-Net: (patch, target stage, target size) -> patch at that stage.

    Args:
        spatial_dims: 2 for slices, 3 for cubic patches.
        num_stages: number of stage classes the embedding knows.
        base_channels: channels of the first level; doubled per level, capped at 8x.
        levels: number of resolution levels (the patch side must be divisible by 2**(levels-1)).
        cond_dim: width of the condition vector fed to every FiLM layer.
        soft_gate: predict a sigmoid gate that confines the residual (True) or add it directly.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        num_stages: int = 4,
        base_channels: int = 32,
        levels: int = 4,
        cond_dim: int = 64,
        soft_gate: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spatial_dims = spatial_dims
        self.num_stages = num_stages
        self.levels = levels
        self.soft_gate = soft_gate
        widths = [base_channels * min(2**i, 8) for i in range(levels)]
        self.stage_embed = nn.Embedding(num_stages, cond_dim)
        self.size_mlp = nn.Sequential(
            nn.Linear(3, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim)
        )
        self.cond_mlp = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, cond_dim), nn.SiLU())
        # Input: the image, the geometric prior and the radial-distance channel.
        self.encoders = nn.ModuleList(
            _EncBlock(spatial_dims, 3 if i == 0 else widths[i - 1], widths[i], 1 if i == 0 else 2)
            for i in range(levels)
        )
        self.decoders = nn.ModuleList(
            _DecBlock(spatial_dims, widths[i + 1], widths[i], widths[i], cond_dim)
            for i in reversed(range(levels - 1))
        )
        self.head = _conv(spatial_dims, widths[0], 2 if soft_gate else 1, kernel=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)  # type: ignore[arg-type]

    def condition(
        self,
        stage: torch.Tensor,
        target_size: torch.Tensor,
        source_size: torch.Tensor,
        spacing_mm: torch.Tensor,
    ) -> torch.Tensor:
        """The condition vector from stage ids, sizes (diameter / field of view) and spacing."""
        sizes = torch.stack([target_size, source_size, torch.log(spacing_mm)], dim=1)
        sizes = sizes.to(self.stage_embed.weight.dtype)
        return self.cond_mlp(self.stage_embed(stage) + self.size_mlp(sizes))

    def forward(
        self,
        x: torch.Tensor,
        prior: torch.Tensor,
        stage: torch.Tensor,
        target_size: torch.Tensor,
        source_size: torch.Tensor,
        spacing_mm: torch.Tensor,
    ) -> torch.Tensor:
        """Render the patch at the target stage and size.

        Args:
            x: (B, 1, *spatial) patches, HU windowed to [-1, 1].
            prior: (B, 1, *spatial) the patches with the lesion grown geometrically to the
                target size (equal to `x` when the size does not change).
            stage: (B,) target stage ids.
            target_size: (B,) target lesion diameter / patch field of view.
            source_size: (B,) current lesion diameter / patch field of view.
            spacing_mm: (B,) patch pixel size in millimetres.

        Returns:
            (B, 1, *spatial) rendered patches in the same [-1, 1] scale.
        """
        cond = self.condition(stage, target_size, source_size, spacing_mm)
        radial = radial_grid(tuple(x.shape[2:]), x.device, x.dtype)
        h = torch.cat([x, prior, radial.expand(x.shape[0], 1, *x.shape[2:])], dim=1)
        skips = []
        for encoder in self.encoders:
            h = encoder(h)
            skips.append(h)
        h = skips.pop()
        for decoder in self.decoders:
            h = decoder(h, skips.pop(), cond)
        out = self.head(h)
        # The residual lives in the lesion ROI (feathered over 4 mm) and is exactly zero
        # outside it: anatomy away from the lesion is the input's, by construction, and the
        # network does not spend its capacity on learning to leave it alone.
        roi = lesion_roi(radial, source_size, target_size, spacing_mm, ROI_FEATHER_MM)
        roi = roi.to(out.dtype)
        if self.soft_gate:
            residual, gate_logit = out[:, :1], out[:, 1:]
            # tanh keeps the change inside the window; the gate shapes it within the ROI.
            return prior + roi * torch.sigmoid(gate_logit) * 2.0 * torch.tanh(residual)
        return prior + roi * out


class ProgressionDiscriminator(nn.Module):
    """MONAI PatchGAN with spectral norm, stage projection and an optional stage-classifier head.

    Args:
        spatial_dims: 2 or 3.
        in_channels: 2 in paired mode (source and candidate, pix2pix-style), 1 in unpaired mode.
        num_stages: number of stage classes.
        channels: filters of the first layer (doubled per layer).
        num_layers: strided layers after the first (MONAI's `num_layers_d`).
        aux_classifier: add a head that predicts the stage of the image it sees (unpaired mode).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 2,
        num_stages: int = 4,
        channels: int = 32,
        num_layers: int = 3,
        aux_classifier: bool = False,
    ) -> None:
        super().__init__()
        self.num_stages = num_stages
        self.patchgan = PatchDiscriminator(
            spatial_dims=spatial_dims,
            channels=channels,
            in_channels=in_channels,
            out_channels=1,
            num_layers_d=num_layers,
            norm=None,  # type: ignore[arg-type]
            bias=True,
        )
        for module in self.patchgan.modules():
            if isinstance(module, nn.Conv2d | nn.Conv3d):
                spectral_norm(module)
        feat_channels = channels * 2**num_layers
        self.embed = spectral_norm(nn.Embedding(num_stages, feat_channels))
        self.aux: nn.Module | None = None
        if aux_classifier:
            self.aux = spectral_norm(nn.Linear(feat_channels, num_stages))

    def forward(
        self, x: torch.Tensor, stage: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Patch realism logits conditioned on `stage`, and stage logits when the head exists.

        Args:
            x: (B, C, *spatial) images in [-1, 1] (C = `in_channels`).
            stage: (B,) stage ids the image claims to show.

        Returns:
            (B, 1, *patches) realism logits; (B, num_stages) stage logits or None.
        """
        outputs = self.patchgan(x)
        features, logits = outputs[-2], outputs[-1]
        emb = self.embed(stage).reshape(features.shape[0], features.shape[1], *([1] * (x.ndim - 2)))
        # The projection term is sampled at the logit map's resolution (same size: stride 1).
        projection = (features * emb).sum(dim=1, keepdim=True) / features.shape[1] ** 0.5
        projection = F.interpolate(projection, size=logits.shape[2:], mode="nearest")
        stage_logits = None
        if self.aux is not None:
            stage_logits = self.aux(features.flatten(2).mean(dim=2))
        return logits + projection, stage_logits


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
