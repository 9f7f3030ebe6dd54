"""How a scan is acquired: field of view, pixel spacing, slice thickness, dose, blur and noise.

CT noise is not white: filtered back-projection shapes it with the reconstruction kernel, so its
power spectrum rises from zero at low frequency (the ramp filter) and falls off at high
frequency (the apodising window). LungSim draws white noise and filters it with exactly that
shape, in physical frequency (cycles/mm), so the texture does not change with the output
matrix; its level scales with 1 / sqrt(dose) and with the patient's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

NATIVE_MATRIX = 512  # clinical reconstructions are 512 x 512; the FOV is 512 x native spacing
THICKNESSES_MM = (1.0, 1.25, 2.0, 2.5, 3.0, 5.0)
_THICKNESS_P = (0.15, 0.2, 0.15, 0.15, 0.1, 0.25)
# Standard-dose noise in soft tissue at native resolution; calibrated so lung parenchyma's
# high-frequency noise (value minus its 5x5 mean) is ~30 HU, as on real standard-dose CT.
_BASE_NOISE_HU = 26.0


@dataclass(frozen=True)
class Acquisition:
    """Scanner settings of one patient's scans (kept across time points, as follow-up
    protocols are).

    Attributes:
        native_spacing_mm: in-plane pixel spacing of the 512 reconstruction (0.6-0.9 mm).
        thickness_mm: slice thickness (1-5 mm); 3D volumes are contiguous slices of it.
        dose: relative dose (1 = standard); noise scales with 1 / sqrt(dose).
        noise_hu: soft-tissue noise standard deviation at native resolution and this dose.
        kernel_cutoff_per_mm: where the noise spectrum's window falls off (cycles/mm).
        psf_sigma_mm: in-plane blur of the reconstruction (Gaussian sigma).
    """

    native_spacing_mm: float
    thickness_mm: float
    dose: float
    noise_hu: float
    kernel_cutoff_per_mm: float
    psf_sigma_mm: float

    @property
    def fov_mm(self) -> float:
        return NATIVE_MATRIX * self.native_spacing_mm


def sample_acquisition(
    rng: np.random.Generator,
    body_width_mm: float,
    dose: float,
    thickness_mm: float | None = None,
    min_fov_mm: float = 0.0,
) -> Acquisition:
    """Draw scanner settings for a patient whose body is `body_width_mm` wide.

    Args:
        rng: the patient's generator.
        body_width_mm: the patient's width (larger patients get more noise at the same dose).
        dose: the dataset's relative dose; each patient varies around it by +/- 25%.
        thickness_mm: a fixed slice thickness, or None to draw one of `THICKNESSES_MM`.
        min_fov_mm: the smallest field of view (diameter of the reconstruction circle) that
            holds the whole body, as a technologist would choose.

    Returns:
        The acquisition.
    """
    min_spacing = max(0.6, body_width_mm * 1.12 / NATIVE_MATRIX, min_fov_mm / NATIVE_MATRIX)
    spacing = float(rng.uniform(min_spacing, max(min_spacing, 0.9)))
    if thickness_mm is None:
        thickness_mm = float(rng.choice(THICKNESSES_MM, p=_THICKNESS_P))
    patient_dose = dose * float(rng.uniform(0.75, 1.25))
    # Larger patients attenuate more, so the same dose gives more noise.
    size_factor = float(np.exp((body_width_mm - 330.0) / 160.0))
    noise = _BASE_NOISE_HU * size_factor / np.sqrt(patient_dose)
    return Acquisition(
        native_spacing_mm=spacing,
        thickness_mm=float(thickness_mm),
        dose=patient_dose,
        noise_hu=float(noise),
        kernel_cutoff_per_mm=float(rng.uniform(0.38, 0.5)),
        psf_sigma_mm=float(rng.uniform(0.45, 0.7)),
    )


@dataclass(frozen=True)
class Pose:
    """How the patient lies on the table at one visit.

    Attributes:
        shift_mm: table/patient shift (x, y, z).
        scale: breathing (inspiration depth) as an isotropic scale about the carina.
    """

    shift_mm: tuple[float, float, float]
    scale: float


def sample_pose(rng: np.random.Generator) -> Pose:
    """A few millimetres of shift and +/- ~1.5% breathing between visits."""
    shift = rng.normal(0.0, (2.5, 2.0, 3.0))
    return Pose(
        (float(shift[0]), float(shift[1]), float(shift[2])), float(1 + rng.normal(0, 0.012))
    )


def noise_filter(shape: tuple[int, int], pixel_mm: float, acq: Acquisition) -> np.ndarray:
    """Amplitude filter (rfft2 layout) turning unit white noise into CT noise of `noise_hu`.

    The spectrum is f * exp(-(f / cutoff)^2) (ramp times window); the filter is normalised so
    the noise standard deviation at the native spacing equals `acq.noise_hu`. On a coarser grid
    the high frequencies it cannot hold are gone, so the per-pixel noise is lower, exactly as
    when a real scan is resampled.
    """
    fy = np.fft.fftfreq(shape[0], d=pixel_mm)[:, None]
    fx = np.fft.rfftfreq(shape[1], d=pixel_mm)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    nps = f * np.exp(-((f / acq.kernel_cutoff_per_mm) ** 2))
    # Variance of that spectrum over the native band, integrated numerically once.
    native_nyquist = 0.5 / acq.native_spacing_mm
    fr = np.linspace(0.0, native_nyquist, 512)
    native_var = np.trapezoid(
        2 * np.pi * fr * fr * np.exp(-((fr / acq.kernel_cutoff_per_mm) ** 2)), fr
    )
    # Discrete white noise of unit variance has flat density 1 * pixel_area over the band.
    amplitude = np.sqrt(nps / native_var / pixel_mm**2) * acq.noise_hu
    return amplitude.astype(np.float32)


def add_noise(
    images: np.ndarray, pixel_mm: float, acq: Acquisition, rng: np.random.Generator
) -> np.ndarray:
    """Correlated CT noise added to a stack of slices (..., H, W); slices are independent."""
    white = rng.standard_normal(images.shape, dtype=np.float32)
    filt = noise_filter(images.shape[-2:], pixel_mm, acq)
    # scipy.fft keeps float32 (complex64) end to end: half the work of numpy's float64 FFT.
    noise = sp_fft.irfft2(sp_fft.rfft2(white) * filt, s=images.shape[-2:])
    return np.asarray(images + noise.astype(np.float32))


def blur(images: np.ndarray, pixel_mm: float, acq: Acquisition) -> np.ndarray:
    """In-plane partial-volume blur: the reconstruction's PSF plus resampling to `pixel_mm`."""
    sigma_px = float(np.hypot(acq.psf_sigma_mm / pixel_mm, 0.35))
    sigma = (0.0,) * (images.ndim - 2) + (sigma_px, sigma_px)
    return np.asarray(ndimage.gaussian_filter(images, sigma, truncate=3.0))
