"""The PyTorch side: a Dataset of preprocessed (optionally augmented) samples and their labels."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from lungcancer.config import DataConfig
from lungcancer.data.cache import SampleCache
from lungcancer.data.index import DatasetIndex, Sample
from lungcancer.data.layouts import read_sample
from lungcancer.data.transforms import Augmenter, preprocess, preprocess_mask
from lungcancer.io import Scan
from lungcancer.io.reader import read_mask


def _decoder(sample: Sample, cfg: DataConfig) -> Callable[[], np.ndarray]:
    def compute() -> np.ndarray:
        return preprocess(
            read_sample(sample),
            cfg,
            slice_index=sample.slice_index,
            center_zyx=sample.center_zyx,
        )

    return compute


def _read_with_mask(sample: Sample, cfg: DataConfig) -> tuple[Scan, np.ndarray]:
    """A sample's scan and its lesion mask on the input grid (`preprocess_mask`)."""
    scan = read_sample(sample)
    mask = read_mask(sample.mask_path, like=scan)
    z, centre = sample.slice_index, sample.center_zyx
    return scan, preprocess_mask(scan, mask, cfg, slice_index=z, center_zyx=centre)


def _decode_with_mask(sample: Sample, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """A sample's preprocessed array and its lesion mask on the input grid, from one read."""
    scan, mask = _read_with_mask(sample, cfg)
    array = preprocess(scan, cfg, slice_index=sample.slice_index, center_zyx=sample.center_zyx)
    return array, mask


def _mask_decoder(sample: Sample, cfg: DataConfig) -> Callable[[], np.ndarray]:
    def compute() -> np.ndarray:
        return _read_with_mask(sample, cfg)[1]

    return compute


def load_sample_array(
    sample: Sample, cfg: DataConfig, cache: SampleCache | None = None
) -> np.ndarray:
    """A sample's preprocessed array, from the cache when one is given (read-only then).

    Args:
        sample: which image and which part of it.
        cfg: preprocessing settings.
        cache: preprocessed-array cache; None decodes every time.

    Returns:
        float32 (C, H, W) or (C, D, H, W) in [0, 1].
    """
    compute = _decoder(sample, cfg)
    return compute() if cache is None else cache.load(sample, cfg, compute)


class ClassificationDataset(Dataset[tuple[torch.Tensor, int]]):
    """Samples of one split as (float32 tensor, class id) pairs.

    Augmentation (when `train` and `cfg.augment`) is seeded: in the main process from
    `cfg.seed`, in a DataLoader worker from the worker's seed, which PyTorch derives from the
    main process's generator, so a run seeded with `torch.manual_seed` repeats exactly.
    With a cache, every sample's cache key (which hashes its file's content) is computed here,
    once, in the main process: DataLoader workers then only open cached arrays.

    Args:
        index: the dataset.
        indices: positions of this split's samples in `index`.
        cfg: preprocessing and augmentation settings.
        train: augment (if `cfg.augment`); evaluation datasets never augment.
        cache: preprocessed-array cache shared by all epochs.
        masks: also serve lesion masks on the input grid (`item_with_mask`), for the mask
            auxiliary loss; their cache keys are computed here too.

    Attributes:
        samples: this split's samples, in `indices` order.
        labels: class id of each sample.
        patient_ids: patient key of each sample ("" when unknown).
        class_names: the class list (class id = position).
    """

    def __init__(
        self,
        index: DatasetIndex,
        indices: Sequence[int],
        cfg: DataConfig,
        *,
        train: bool,
        cache: SampleCache | None = None,
        masks: bool = False,
    ) -> None:
        lookup = {name: i for i, name in enumerate(index.class_names)}
        self.samples: list[Sample] = [index.samples[i] for i in indices]
        self.labels: list[int] = [lookup[s.label] for s in self.samples]
        self.patient_ids: list[str] = [s.patient_id for s in self.samples]
        self.class_names: tuple[str, ...] = index.class_names
        self.cfg = cfg
        self.cache = cache
        self.train = train
        self._augment = train and cfg.augment
        self._augmenter: Augmenter | None = None
        self._stream: tuple[int, ...] | None = None
        self._keys = [cache.key(s, cfg) for s in self.samples] if cache is not None else []
        self._mask_keys = (
            [cache.mask_key(s, cfg) if s.mask_path else "" for s in self.samples]
            if cache is not None and masks
            else []
        )

    def __len__(self) -> int:
        return len(self.samples)

    def without_augmentation(self) -> ClassificationDataset:
        """The same samples as validation sees them: no augmentation, this dataset's cache keys
        (shared, not recomputed), its own augmentation state untouched."""
        view = copy.copy(self)
        view.train = view._augment = False
        view._augmenter, view._stream = None, None
        return view

    def reseed(self, seed: int) -> None:
        """Restart this process's augmentation stream at `seed`.

        The trainer calls it at the start of every epoch, so an epoch augments the same way
        whether the run went straight through or was resumed just before it (an augmenter
        created lazily after a resume would otherwise start from `cfg.seed`).
        """
        if not self._augment:
            return
        if self._augmenter is None:
            self._augmenter = self._new_augmenter(seed)
        else:
            self._augmenter.reseed(seed)
        self._stream = (-1,)

    def _new_augmenter(self, seed: int) -> Augmenter:
        cfg = self.cfg
        return Augmenter(
            cfg.spatial_dims,
            seed,
            scale=cfg.augment_scale,
            elastic=cfg.augment_elastic,
            flip=cfg.augment_flip,
        )

    def _augmenter_here(self) -> Augmenter:
        info = get_worker_info()
        stream = (info.id, info.seed) if info is not None else (-1,)
        if self._augmenter is None:
            self._augmenter = self._new_augmenter(self.cfg.seed)
            self._stream = (-1,)
        if stream != self._stream:
            assert info is not None
            self._augmenter.reseed(info.seed)
            self._stream = stream
        return self._augmenter

    def _array(self, i: int) -> np.ndarray:
        compute = _decoder(self.samples[i], self.cfg)
        cache = self.cache
        return compute() if cache is None else cache.load_keyed(self._keys[i], compute)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        array = self._array(i)
        if self._augment:
            array = self._augmenter_here()(np.asarray(array))
        else:
            # Cached arrays are read-only memory maps; the network gets its own copy.
            array = np.array(array, dtype=np.float32)
        return torch.from_numpy(array), self.labels[i]

    def item_with_mask(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        """`self[i]` and the sample's lesion mask on the input grid, (1, S, S), moved by the
        same flips and affine as the image. A sample without a mask file gets NaN (unknown,
        not "no lesion"); the mask loss leaves it out. The image is preprocessed and augmented
        as `self[i]` would be (the same random draws)."""
        sample = self.samples[i]
        if not sample.mask_path:
            image, label = self[i]
            return image, label, torch.full((1, *image.shape[1:]), float("nan"))
        cache = self.cache
        if cache is not None and self._mask_keys:
            mask = cache.load_keyed(self._mask_keys[i], _mask_decoder(sample, self.cfg))
            array = self._array(i)
        else:
            # No cache: decode the scan once for both.
            array, mask = _decode_with_mask(sample, self.cfg)
        if self._augment:
            array, mask = self._augmenter_here().augment_pair(np.asarray(array), np.asarray(mask))
        else:
            array, mask = np.array(array, dtype=np.float32), np.array(mask, dtype=np.float32)
        return torch.from_numpy(array), self.labels[i], torch.from_numpy(mask)[None]
