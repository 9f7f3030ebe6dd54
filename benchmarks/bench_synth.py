"""LungSim benchmark: speed, realism against real-CT figures, and a trivial-baseline check.

    .venv/bin/python benchmarks/bench_synth.py --out runs/bench_synth

Prints, from one run on this machine:
  * speed: 2D slices per second per core at 256x256 (CPU time, one process, setup included,
    and render-only), and the time of one 64-slice 256x256 volume;
  * realism: lung-field HU mean, histogram peak, share above -500 HU and high-frequency
    parenchyma noise (value minus its 5x5 mean), beside the real-CT figures of DESIGN.md;
    noise power spectrum (correlated, not flat); vessel density by lung zone (central,
    middle, peripheral third);
  * a logistic-regression baseline on lung-window intensity histograms with a patient-level
    split (macro ROC-AUC, macro-F1): a single pixel statistic must not solve the task.
Plots (HU histograms, NPS, vessel zones) and the figures as JSON go to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # "per core": one thread for numpy/scipy FFTs

import numpy as np
from scipy import ndimage

from lungcancer.synth import SynthConfig, render_patient
from lungcancer.synth.acquisition import add_noise, sample_acquisition

REAL_CT = {
    "lung_mean_hu": (-835.0, -800.0),
    "lung_peak_hu": (-890.0, -850.0),
    "lung_above_500_pct": (4.0, 6.0),
    "parenchyma_hf_noise_hu": (25.0, 35.0),
}
LUNG_WINDOW = (-1350.0, 150.0)


def lung_field(hu: np.ndarray) -> np.ndarray:
    """Lung-field mask of one axial HU slice, segmented as one would on a real scan.

    Air inside the body (< -400 HU) minus the airways, with holes (vessels, nodules inside
    the lung) filled: the field includes what lies within the lungs.
    """
    tissue = ndimage.binary_opening(hu > -400, iterations=2)
    labels, n = ndimage.label(tissue)
    if n == 0:
        return np.zeros_like(hu, dtype=bool)
    sizes = ndimage.sum(tissue, labels, range(1, n + 1))
    body = ndimage.binary_fill_holes(labels == (1 + int(np.argmax(sizes))))
    air = ndimage.binary_opening((hu < -400) & body, iterations=1)
    labels, n = ndimage.label(air)
    if n == 0:
        return air
    sizes = ndimage.sum(air, labels, range(1, n + 1))
    keep = [i + 1 for i, s in enumerate(sizes) if s >= 0.01 * hu.size]  # drop trachea, bronchi
    lungs = ndimage.binary_closing(np.isin(labels, keep), iterations=3)
    return np.asarray(ndimage.binary_fill_holes(lungs) & body)


def realism(slices: list[np.ndarray], pixel_mm: list[float]) -> dict[str, float]:
    """Lung-field figures pooled over slices (as measured on real CT)."""
    lung_values, hf_values, zone_hits = [], [], np.zeros((3, 2))
    for hu, px in zip(slices, pixel_mm, strict=True):
        field = lung_field(hu)
        if field.sum() < 500:
            continue
        values = hu[field]
        lung_values.append(values)
        # High-frequency noise: value minus its 5x5 mean, in parenchyma away from vessels.
        local = ndimage.uniform_filter(hu, 5)
        core = ndimage.binary_erosion(field, iterations=4) & (ndimage.maximum_filter(hu, 5) < -600)
        hf_values.append((hu - local)[core])
        # Vessel density by depth: subpleural (< 10 mm from the lung's edge), 10-25 mm, deeper.
        depth_mm = ndimage.distance_transform_edt(field) * px
        dense = hu > -500
        for z, (lo, hi) in enumerate(((0.0, 10.0), (10.0, 25.0), (25.0, 1e9))):
            zone = field & (depth_mm > lo) & (depth_mm <= hi)
            zone_hits[z] += (dense[zone].sum(), zone.sum())
    values = np.concatenate(lung_values)
    hist, edges = np.histogram(values, bins=np.arange(-1024, 201, 5))
    peak = edges[int(np.argmax(hist))] + 2.5
    return {
        "lung_mean_hu": float(values.mean()),
        "lung_peak_hu": float(peak),
        "lung_above_500_pct": float(100 * (values > -500).mean()),
        "parenchyma_hf_noise_hu": float(np.concatenate(hf_values).std()),
        "vessel_pct_subpleural": float(100 * zone_hits[0, 0] / zone_hits[0, 1]),
        "vessel_pct_10_25mm": float(100 * zone_hits[1, 0] / zone_hits[1, 1]),
        "vessel_pct_deep": float(100 * zone_hits[2, 0] / zone_hits[2, 1]),
    }


def noise_power_spectrum(size: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Radial NPS of the noise LungSim adds (64 realisations, a standard-dose patient)."""
    rng = np.random.default_rng(seed)
    acq = sample_acquisition(rng, 330.0, 1.0, 1.25)
    pixel = acq.fov_mm / size
    noise = add_noise(np.zeros((64, size, size), np.float32), pixel, acq, rng)
    power = np.mean(np.abs(np.fft.fftshift(np.fft.fft2(noise), axes=(-2, -1))) ** 2, axis=0)
    power *= pixel**2 / (size * size)
    f = np.fft.fftshift(np.fft.fftfreq(size, d=pixel))
    fr = np.hypot(*np.meshgrid(f, f))
    bins = np.linspace(0, fr.max(), 40)
    idx = np.digitize(fr.ravel(), bins)
    radial = np.array([power.ravel()[idx == i].mean() for i in range(1, len(bins))])
    return (bins[:-1] + bins[1:]) / 2, radial, float(noise.std())


def speed(n_patients: int, seed: int) -> dict[str, float]:
    cfg = SynthConfig(size=256, seed=seed)
    classes = cfg.class_names
    cpu0, wall0 = time.process_time(), time.perf_counter()
    slices = 0
    for i in range(n_patients):
        slices += len(render_patient(cfg, i, classes[i % len(classes)]))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    vol_cfg = SynthConfig(size=256, dims=3, depth=64, seed=seed)
    times = []
    for i in range(2):
        c0 = time.process_time()
        render_patient(vol_cfg, i, classes[2 + i])
        times.append(time.process_time() - c0)
    return {
        "slices_2d": slices,
        "slices_per_s_per_core_2d": slices / cpu,
        "slices_per_s_wall_2d": slices / wall,
        "volume_64x256x256_s": float(np.mean(times)),
    }


def render_only_speed(seed: int) -> float:
    """Slices per CPU second with the patient already built (visits of a longitudinal series)."""
    from lungcancer.synth.api import class_plan
    from lungcancer.synth.case import build_patient
    from lungcancer.synth.truth import sample_truth
    from lungcancer.synth.visit import render_visit

    cfg = SynthConfig(size=256, seed=seed, timepoints_months=(0.0, 3.0, 6.0, 12.0))
    settings = cfg.render_settings()
    rng = np.random.default_rng(seed)
    truth = sample_truth(class_plan(cfg)[0], cfg.classes, rng, cfg.difficulty())
    model = build_patient("bench", (seed, 0), truth, settings, cfg.timepoints_months)
    c0 = time.process_time()
    n = sum(
        len(render_visit(model, v, m, 0.0, settings)) for v, m in enumerate(cfg.timepoints_months)
    )
    return n / (time.process_time() - c0)


def histogram_features(hu: np.ndarray, bins: int = 64) -> np.ndarray:
    """Normalised lung-window intensity histogram of a whole slice."""
    h, _ = np.histogram(np.clip(hu, *LUNG_WINDOW), bins=bins, range=LUNG_WINDOW)
    return h / h.sum()


def lr_baseline(n_patients: int, size: int, seed: int) -> dict[str, float]:
    """Logistic regression on intensity histograms, 5-fold patient-grouped cross-validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cfg = SynthConfig(size=size, seed=seed + 1)
    from lungcancer.synth.api import class_plan

    plan = class_plan(SynthConfig(patients=n_patients, size=size, seed=seed + 1))
    feats, labels, groups = [], [], []
    for i in range(n_patients):
        for sample in render_patient(cfg, i, plan[i]):
            feats.append(histogram_features(sample.image.array[0]))
            labels.append(cfg.class_names.index(sample.label))
            groups.append(i)
    x, y, g = np.array(feats), np.array(labels), np.array(groups)
    aucs, f1s = [], []
    for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(x, y, g):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        model.fit(x[train], y[train])
        proba = model.predict_proba(x[test])
        aucs.append(roc_auc_score(y[test], proba, multi_class="ovr", average="macro",
                                  labels=np.arange(len(cfg.class_names))))  # fmt: skip
        f1s.append(f1_score(y[test], proba.argmax(1), average="macro"))
    return {
        "lr_samples": float(len(y)),
        "lr_macro_auc": float(np.mean(aucs)),
        "lr_macro_auc_std": float(np.std(aucs)),
        "lr_macro_f1": float(np.mean(f1s)),
        "lr_macro_f1_std": float(np.std(f1s)),
        "chance_macro_f1": 1.0 / len(cfg.class_names),
    }


def cnn_check(n_patients: int, size: int, seed: int, epochs: int) -> dict[str, float]:
    """Train a small CNN (the project's SmallCNN, widths 16-96) on lung-window slices and
    score it on held-out patients, beside the histogram LR on the same split: the visual cues
    must be learnable, not only the histogram's."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, roc_auc_score
    from sklearn.model_selection import GroupShuffleSplit

    from lungcancer.models.cnn import SmallCNN
    from lungcancer.synth.api import class_plan

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    cfg = SynthConfig(patients=n_patients, size=size, seed=seed + 3)
    plan = class_plan(cfg)
    images, labels, groups = [], [], []
    for i in range(n_patients):
        for sample in render_patient(cfg, i, plan[i]):
            hu = sample.image.array[0]
            images.append(np.clip((hu - LUNG_WINDOW[0]) / (LUNG_WINDOW[1] - LUNG_WINDOW[0]), 0, 1))
            labels.append(cfg.class_names.index(sample.label))
            groups.append(i)
    x = torch.tensor(np.array(images), dtype=torch.float32)[:, None]
    y, g = np.array(labels), np.array(groups)
    train, test = next(GroupShuffleSplit(1, test_size=0.25, random_state=seed).split(y, y, g))
    model = SmallCNN((16, 32, 64, 96), in_chans=1, num_classes=len(cfg.class_names),
                     spatial_dims=2, dropout=0.1)  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    yt = torch.tensor(y)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        model.train()
        for batch in np.array_split(rng.permutation(train), len(train) // 32 + 1):
            # Shifts, left-right flips and a little intensity jitter keep the network from
            # memorising each patient's anatomy instead of the findings.
            dy, dx = rng.integers(-10, 11, 2)
            xb = torch.roll(x[batch], shifts=(int(dy), int(dx)), dims=(2, 3))
            if rng.random() < 0.5:
                xb = torch.flip(xb, dims=(3,))
            xb = xb * float(rng.uniform(0.9, 1.1)) + float(rng.normal(0.0, 0.03))
            loss = torch.nn.functional.cross_entropy(model(xb), yt[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        proba = torch.softmax(model(x[test]), 1).numpy()
    classes = np.arange(len(cfg.class_names))
    feats = np.array([histogram_features(im * 1500 - 1350) for im in images])
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(feats[train], y[train])
    lr_proba = lr.predict_proba(feats[test])
    return {
        "cnn_test_slices": float(len(test)),
        "cnn_macro_auc": float(roc_auc_score(y[test], proba, multi_class="ovr", labels=classes)),
        "cnn_macro_f1": float(f1_score(y[test], proba.argmax(1), average="macro")),
        "cnn_split_lr_macro_auc": float(
            roc_auc_score(y[test], lr_proba, multi_class="ovr", labels=classes)
        ),
    }


def realism_slices(n_patients: int, size: int, seed: int) -> tuple[list[np.ndarray], list[float]]:
    cfg = SynthConfig(size=size, seed=seed + 2, off_centre_slices=0)
    classes = cfg.class_names
    slices, px = [], []
    for i in range(n_patients):
        sample = render_patient(cfg, i, classes[i % len(classes)])[0]
        slices.append(sample.image.array[0])
        px.append(float(sample.image.spacing_mm[1]))
    return slices, px


def plots(out: Path, slices: list[np.ndarray], nps: tuple[np.ndarray, np.ndarray, float],
          figures: dict[str, float]) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lung = np.concatenate([s[lung_field(s)] for s in slices])
    body = np.concatenate([s[s > -900].ravel() for s in slices])
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    axes[0].hist(lung, bins=np.arange(-1024, 201, 5), color="steelblue")
    axes[0].axvspan(*REAL_CT["lung_peak_hu"], color="orange", alpha=0.3, label="real CT peak")
    axes[0].set(title="lung field HU", xlabel="HU")
    axes[0].legend()
    axes[1].hist(body, bins=np.arange(-1000, 1501, 10), color="gray", log=True)
    axes[1].set(title="whole body HU (> -900)", xlabel="HU")
    f, radial, _ = nps
    axes[2].plot(f, radial)
    axes[2].set(title="noise power spectrum", xlabel="cycles/mm", ylabel="HU^2 mm^2")
    zones = ["subpleural", "10_25mm", "deep"]
    axes[3].bar(["< 10 mm", "10-25 mm", "> 25 mm"], [figures[f"vessel_pct_{z}"] for z in zones],
                color="firebrick")  # fmt: skip
    axes[3].set(title="lung pixels > -500 HU by depth from the pleura (%)")
    fig.tight_layout()
    fig.savefig(out / "lungsim_realism.png", dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_synth", help="folder for plots and JSON")
    parser.add_argument("--speed-patients", type=int, default=24)
    parser.add_argument("--realism-patients", type=int, default=24)
    parser.add_argument("--realism-size", type=int, default=512)
    parser.add_argument("--lr-patients", type=int, default=120)
    parser.add_argument("--lr-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cnn-patients", type=int, default=0, help="also train a small CNN (slow; 0 = skip)"
    )
    parser.add_argument("--cnn-epochs", type=int, default=25)
    parser.add_argument("--cnn-size", type=int, default=128)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, float] = {}

    figures.update(speed(args.speed_patients, args.seed))
    figures["render_only_slices_per_s_per_core"] = render_only_speed(args.seed)
    print("speed (one process, CPU time, 256x256):")
    wall = figures["slices_per_s_wall_2d"]
    print(f"  2D, setup included  {figures['slices_per_s_per_core_2d']:7.1f} slices/s/core "
          f"(target >= 20; {wall:.1f}/s wall clock on this machine)")  # fmt: skip
    print(
        f"  2D, render only     {figures['render_only_slices_per_s_per_core']:7.1f} slices/s/core"
    )
    print(f"  3D, 64 x 256 x 256  {figures['volume_64x256x256_s']:7.2f} s per volume (target <= 2)")

    slices, px = realism_slices(args.realism_patients, args.realism_size, args.seed)
    figures.update(realism(slices, px))
    low_slices, low_px = realism_slices(args.realism_patients, 256, args.seed)
    low = realism(low_slices, low_px)
    print(f"realism (lung field of {len(slices)} lesion-centred slices):")
    print(f"  {'figure':26s} {'real CT':>14s} {'LungSim ' + str(args.realism_size):>12s} "
          f"{'LungSim 256':>12s}")  # fmt: skip
    for key, (lo, hi) in REAL_CT.items():
        print(f"  {key:26s} {lo:6.0f} to {hi:<5.0f} {figures[key]:12.1f} {low[key]:12.1f}")
    zones = [figures[f"vessel_pct_{z}"] for z in ("subpleural", "10_25mm", "deep")]
    print("  vessel density (% > -500 HU) by depth from the pleura, < 10 / 10-25 / > 25 mm: "
          + " / ".join(f"{z:.1f}" for z in zones)
          + f"  (deep/subpleural ratio {zones[2] / max(zones[0], 1e-9):.1f})")  # fmt: skip

    nps = noise_power_spectrum(args.realism_size, args.seed)
    f, radial, _std = nps
    low_band = radial[(f > 0) & (f < 0.05)].mean()
    peak_f = float(f[int(np.argmax(radial))])
    figures.update(
        {"nps_peak_per_mm": peak_f, "nps_peak_to_low_ratio": float(radial.max() / low_band)}
    )
    ratio = radial.max() / low_band
    print(f"  noise power spectrum: peak at {peak_f:.2f} cycles/mm, "
          f"{ratio:.1f}x the power below 0.05 cycles/mm (white noise: 1x)")  # fmt: skip

    figures.update(lr_baseline(args.lr_patients, args.lr_size, args.seed))
    n_lr = int(figures["lr_samples"])
    print(f"baseline: logistic regression on lung-window histograms, {n_lr} slices of "
          f"{args.lr_patients} patients at {args.lr_size}px, 5-fold patient split:")  # fmt: skip
    print(f"  macro ROC-AUC {figures['lr_macro_auc']:.3f} +/- {figures['lr_macro_auc_std']:.3f}, "
          f"macro-F1 {figures['lr_macro_f1']:.3f} +/- {figures['lr_macro_f1_std']:.3f} "
          f"(chance F1 {figures['chance_macro_f1']:.3f})")  # fmt: skip

    if args.cnn_patients:
        figures.update(cnn_check(args.cnn_patients, args.cnn_size, args.seed, args.cnn_epochs))
        print(f"CNN check: SmallCNN(16-96) at {args.cnn_size}px, {args.cnn_epochs} epochs, "
              f"{args.cnn_patients} patients, "
              f"{int(figures['cnn_test_slices'])} held-out slices (25% of patients): "
              f"macro ROC-AUC {figures['cnn_macro_auc']:.3f}, macro-F1 "
              f"{figures['cnn_macro_f1']:.3f} (histogram LR on the same split: AUC "
              f"{figures['cnn_split_lr_macro_auc']:.3f})")  # fmt: skip

    plots(out, slices, nps, figures)
    (out / "bench_synth.json").write_text(json.dumps(figures, indent=1) + "\n")
    print(f"plots and figures: {out}")


if __name__ == "__main__":
    main()
