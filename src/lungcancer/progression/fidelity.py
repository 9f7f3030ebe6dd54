"""`evaluate_gan`: held-out LungSim patients, rendered at month k, scored against the true scan.

For every held-out patient with a scan at month 0 and at month k, three methods render the
month-k patch from the month-0 patch: the GAN (EMA generator), "no change" and "geometric
growth". Each is scored against the true month-k scan with `metrics.score_patch`, and the true
scan itself is scored the same way (the "true future" row: how close the segmentation ruler
gets to LungSim's truth, the ceiling for every method). With a classifier, the rendered patch
is pasted into the full slice and the classifier gives stage fidelity (accuracy against the
true month-k stage) and realism: FID and KID on its pooled features against the true month-k
slices, beside the real-versus-real FID of two halves of the held-out patients (the floor a
perfect generator would reach at that sample size), with a paired patient bootstrap of each
method's FID minus geometric growth's (`progression.realism`). The ruler is also run on each
unchanged input (`ruler_check`): what it reads beyond the input's recorded diameter is its own
overshoot, and each method's diameter less that overshoot is its calibrated diameter error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lungcancer.config import DataConfig
from lungcancer.errors import CheckpointError, ConfigError, DatasetError
from lungcancer.io.atomic import atomic_write_text
from lungcancer.progression.baselines import geometric_growth, grow_lesion, no_change
from lungcancer.progression.checkpoint import LoadedGan, load_gan
from lungcancer.progression.metrics import LesionScores, ruler_on_inputs, score_patch
from lungcancer.progression.pairs import LesionView, PatchSet, make_patch_set, view_grid
from lungcancer.progression.realism import BASELINE, LESION_ONLY, N_BOOT, score_realism

METHODS = ("gan", "no_change", "geometric_growth")
SPLITS = ("test", "val", "all")
# Targets at 12 months (issue 5); "min" targets must be reached or exceeded, "max" not exceeded.
TARGETS = {
    "dice": ("min", 0.8),
    "diameter_mae_mm": ("max", 2.0),
    "stage_fidelity": ("min", 0.8),
    "identity_ssim": ("min", 0.95),
}


@dataclass(frozen=True)
class GanEvalResult:
    """What `evaluate_gan` measured.

    Attributes:
        metrics: the metrics.json document (per-method means, targets, comparisons).
        table: the same numbers as a Markdown table.
        n_pairs: held-out (month 0, month k) pairs scored.
        files: written outputs by kind.
    """

    metrics: dict[str, Any]
    table: str
    n_pairs: int
    files: dict[str, Path] = field(default_factory=dict)


def heldout_pairs(
    views: Sequence[LesionView], patients: Sequence[str], months: float
) -> list[tuple[LesionView, LesionView]]:
    """(month 0, month `months`) view pairs of the given patients."""
    chosen = set(patients)
    by_patient: dict[str, dict[float, LesionView]] = {}
    for v in views:
        if v.patient_id in chosen:
            by_patient.setdefault(v.patient_id, {})[v.months] = v
    pairs = []
    for patient in sorted(by_patient):
        series = by_patient[patient]
        if 0.0 in series and months in series:
            pairs.append((series[0.0], series[months]))
    return pairs


def render_gan(gan: LoadedGan, patches: PatchSet) -> np.ndarray:
    """G_ema outputs toward each example's target stage and size, (N, 1, *patch)."""
    device = next(gan.generator.parameters()).device
    outs = []
    with torch.no_grad():
        for start in range(0, len(patches), 32):
            part = patches.subset(range(start, min(start + 32, len(patches))))
            source = torch.from_numpy(part.source).to(device)
            prior, _ = grow_lesion(
                source,
                torch.from_numpy(part.source_mask).to(device),
                torch.from_numpy(part.target_size / part.source_size).to(device),
            )
            out = gan.generator(
                source,
                prior,
                torch.from_numpy(part.target_stage).to(device),
                torch.from_numpy(part.target_size).to(device),
                torch.from_numpy(part.source_size).to(device),
                torch.from_numpy(part.spacing_mm).to(device),
            )
            outs.append(out.float().cpu().numpy())
    return np.concatenate(outs)


def render_baseline(method: str, patches: PatchSet) -> np.ndarray:
    """A baseline's outputs, (N, 1, *patch)."""
    out = np.empty_like(patches.source)
    for i in range(len(patches)):
        if method == "no_change":
            out[i, 0] = no_change(patches.source[i, 0])
        else:
            scale = float(patches.target_size[i] / patches.source_size[i])
            out[i, 0] = geometric_growth(patches.source[i, 0], patches.source_mask[i, 0], scale)
    return out


def paired_lesion_gains(
    gan: Sequence[LesionScores],
    baseline: Sequence[LesionScores],
    n_boot: int = N_BOOT,
    seed: int = 0,
    excess: np.ndarray | None = None,
) -> dict[str, Any]:
    """The GAN's Dice gain and diameter-error reduction over a baseline, pair by pair, with a
    paired bootstrap 95% interval (the same pairs drawn for both, as for FID): against the
    recorded diameter, and against the true future scan read by the same ruler. With `excess`
    (`ruler_excess`), the reduction of the calibrated diameter error too.

    Positive is better for the GAN in all. With tens of pairs a lead in the means can be
    noise; the interval says whether it is.
    """
    pairs = list(zip(gan, baseline, strict=True))
    dice = np.array([g.dice - b.dice for g, b in pairs])
    error = np.array([b.diameter_error_mm - g.diameter_error_mm for g, b in pairs])
    same_ruler = np.array(
        [b.diameter_error_same_ruler_mm - g.diameter_error_same_ruler_mm for g, b in pairs]
    )
    measures = [
        ("dice_gain", dice),
        ("diameter_error_reduction_mm", error),
        ("same_ruler_diameter_error_reduction_mm", same_ruler),
    ]
    if excess is not None:
        g_bias, b_bias = (
            np.array([x.diameter_bias_mm for x in m]) - excess for m in (gan, baseline)
        )
        measures.append(("calibrated_diameter_error_reduction_mm", np.abs(b_bias) - np.abs(g_bias)))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(dice), (n_boot, len(dice))) if n_boot > 0 and len(dice) else None
    out: dict[str, Any] = {"n_pairs": len(dice), "n_boot": n_boot, "seed": seed}
    for name, gains in measures:
        out[name] = float(gains.mean()) if len(gains) else None
        out[name + "_better_worse_pairs"] = [int((gains > 1e-9).sum()), int((gains < -1e-9).sum())]
        if draws is not None:
            means = gains[draws].mean(axis=1)
            out[name + "_ci95"] = [float(v) for v in np.percentile(means, [2.5, 97.5])]
    return out


def truth_kind(data: str | Path) -> dict[str, Any]:
    """What the true future scans are, from the LungSim dataset's `synth_config.yaml`.

    A follow-up in its own pose is a rescan: the patient lies differently, so whatever reads
    the true future scan (the same-ruler measures, FID) also reads its changed anatomy. In the
    baseline pose (`lungcancer synth --followup-pose baseline`) only the disease and the noise
    change, and with the spread held (`--no-followup-spread`) only the lesion: there the
    same-ruler diameter is the fair test of the drawn size.
    """
    from lungcancer.config import load_section
    from lungcancer.synth import SynthConfig

    root = Path(data)
    saved = (root if root.is_dir() else root.parent) / "synth_config.yaml"
    if not saved.is_file():
        return {"followup_pose": "unknown", "followup_spread": "unknown"}
    cfg = load_section(saved, "synth", SynthConfig)
    return {"followup_pose": cfg.followup_pose, "followup_spread": cfg.followup_spread}


def ruler_excess(
    pairs: Sequence[tuple[LesionView, LesionView]], on_inputs: Sequence[LesionScores]
) -> np.ndarray:
    """Per pair, the ruler's reading of the unchanged input (`metrics.ruler_on_inputs`) minus
    its recorded diameter (mm): the ruler's own overshoot on that lesion."""
    return np.array(
        [s.diameter_mm - src.diameter_mm for s, (src, _) in zip(on_inputs, pairs, strict=True)]
    )


def ruler_check(on_inputs: Sequence[LesionScores], excess: np.ndarray) -> dict[str, Any]:
    """How closely the ruler reads lesions nothing has changed: Dice against their masks and
    the diameter overshoot against their recorded diameters (see `metrics.ruler_on_inputs`).
    The GAN's size terms read its output through the same threshold, so it can read on target
    while drawing a lesion smaller than a real one of that size looks. `excess` is
    `ruler_excess` of the same inputs."""
    return {
        "what": "the ruler on the unchanged month-0 inputs, against their own recorded "
        "diameters and masks",
        "dice": float(np.mean([s.dice for s in on_inputs])),
        "diameter_mae_mm": float(np.abs(excess).mean()),
        "diameter_bias_mm": float(excess.mean()),
        # The ruler's errors are heavy-tailed (a vessel root joined to a lesion adds
        # centimetres): the median says what it reads of a typical lesion.
        "diameter_bias_median_mm": float(np.median(excess)) if len(excess) else float("nan"),
        "calibrated": "diameter_*_calibrated_mm of each method: its ruler reading less the "
        "ruler's overshoot on the pair's unchanged input, against the recorded diameter",
    }


def _mean_scores(scores: Sequence[LesionScores], excess: np.ndarray) -> dict[str, float]:
    calibrated = np.array([s.diameter_bias_mm for s in scores]) - excess
    return {
        "ssim": float(np.mean([s.ssim for s in scores])),
        "psnr_db": float(np.mean([s.psnr_db for s in scores])),
        "dice": float(np.mean([s.dice for s in scores])),
        "diameter_mae_mm": float(np.mean([s.diameter_error_mm for s in scores])),
        "diameter_bias_mm": float(np.mean([s.diameter_bias_mm for s in scores])),
        "diameter_bias_median_mm": float(np.median([s.diameter_bias_mm for s in scores])),
        "dice_same_ruler": float(np.mean([s.dice_same_ruler for s in scores])),
        "diameter_error_same_ruler_mm": float(
            np.mean([s.diameter_error_same_ruler_mm for s in scores])
        ),
        "diameter_error_same_ruler_median_mm": float(
            np.median([s.diameter_error_same_ruler_mm for s in scores])
        ),
        "identity_ssim": float(np.mean([s.identity_ssim for s in scores])),
        # The ruler's reading less its overshoot on the pair's unchanged input (`ruler_excess`).
        "diameter_mae_calibrated_mm": float(np.abs(calibrated).mean()),
        "diameter_bias_calibrated_mm": float(calibrated.mean()),
    }


def evaluate_gan(
    gan: str | Path | LoadedGan,
    data: str | Path,
    *,
    classifier: str | Path | None = None,
    months: float = 12.0,
    data_cfg: DataConfig | None = None,
    out_dir: str | Path | None = None,
    split: str = "test",
    spread: bool = True,
) -> GanEvalResult:
    """Score the GAN and both baselines on held-out patients against their true future scans.

    Args:
        gan: GAN checkpoint (or a loaded one).
        data: LungSim dataset (folder or manifest) with longitudinal series.
        classifier: classifier checkpoint for stage fidelity and FID/KID (skipped without).
        months: the time point to render (pairs are month 0 -> month `months`).
        data_cfg: split settings; must match training so held-out patients stay held out.
        out_dir: where metrics.json, metrics.md and examples.png go (None: write nothing).
        split: "test" (the held-out patients, for reporting), "val" (the validation
            patients, for choosing settings without looking at the test patients) or "all"
            (every patient of `data`: an external set the GAN never saw, e.g. `lungcancer synth
            --seed 1 --id-prefix ext`; patients the GAN trained on are refused by id).
        spread: draw the true future's new nodes and M1a findings outside the lesion on the
            frames the classifier scores (`progression.spread`; for a 3D GAN, on the scored
            slice through the lesion), as `simulate --spread` does. The lesion metrics never
            see them.

    Returns:
        The metrics, the table and the written files.
    """
    from lungcancer.progression.pairs import lesion_views_from_index
    from lungcancer.progression.training import patient_splits

    if split not in SPLITS:
        raise ConfigError("unknown evaluation split", expected=" | ".join(SPLITS), found=split)
    loaded = gan if isinstance(gan, LoadedGan) else load_gan(gan)
    splits = patient_splits(data, data_cfg or DataConfig())
    if split == "all":
        test_patients: Sequence[str] = sorted({p for ids in splits.values() for p in ids})
    else:
        test_patients = splits.get(split, ())
    leaked = sorted(set(test_patients) & set(loaded.train_patients))
    if leaked:
        raise DatasetError(
            "the evaluation patients include patients the GAN was trained on",
            path=data,
            expected="held-out patients only",
            found=f"{len(leaked)} training patients in the {split} split (e.g. {leaked[0]})",
            hint="evaluate with the same dataset and split settings (seed, fractions) as training"
            + (
                "; an external set needs its own patient ids (lungcancer synth --id-prefix ext)"
                if split == "all"
                else ""
            ),
        )
    views = lesion_views_from_index(data, loaded.stages, loaded.config.spatial_dims)
    if not views:
        raise CheckpointError(
            "the GAN checkpoint was trained on another stage (class) set than this dataset's",
            path=loaded.path,
            expected=f"lesions with stages {', '.join(loaded.stages)}",
            found="no lesion in the dataset has one of these stages",
            hint="evaluate on a dataset labelled like the GAN's training data",
        )
    pairs = heldout_pairs(views, test_patients, months)
    if not pairs:
        available = sorted({v.months for v in views})
        raise DatasetError(
            f"no {split} patient has scans at month 0 and month {months:g}",
            path=data,
            expected=f"months 0 and {months:g} among {available}",
            found=f"{len(test_patients)} {split} patients",
            hint="pick --months from the dataset's time points",
        )
    patches = make_patch_set(pairs, loaded.stages, loaded.geometry, loaded.window)
    rendered = {"gan": render_gan(loaded, patches)}
    for method in METHODS[1:]:
        rendered[method] = render_baseline(method, patches)
    rendered_true = patches.target
    window = loaded.window
    per_method: dict[str, dict[str, float]] = {}
    per_pair: dict[str, list[LesionScores]] = {}
    on_inputs = ruler_on_inputs(
        patches.source,
        patches.source_mask,
        np.array([src.diameter_mm for src, _ in pairs]),
        np.array([tgt.diameter_mm for _, tgt in pairs]),
        patches.spacing_mm,
        (window.low_hu, window.high_hu),
    )
    excess = ruler_excess(pairs, on_inputs)
    for method, outs in {**rendered, "true_future": rendered_true}.items():
        scores = [
            score_patch(
                outs[i, 0],
                patches.source[i, 0],
                patches.target[i, 0],
                patches.target_mask[i, 0],
                patches.source_mask[i, 0],
                source_diameter_mm=pairs[i][0].diameter_mm,
                target_diameter_mm=pairs[i][1].diameter_mm,
                patch_spacing_mm=float(patches.spacing_mm[i]),
                window_low_hu=window.low_hu,
                window_high_hu=window.high_hu,
            )
            for i in range(len(pairs))
        ]
        per_method[method] = _mean_scores(scores, excess)
        per_pair[method] = scores
    document: dict[str, Any] = {
        "gan": loaded.path,
        "data": str(data),
        "months": months,
        "split": split,
        "n_pairs": len(pairs),
        "heldout_patients": len(test_patients),
        "segmentation": "HU above half-way between the input lesion's median and the lung "
        "around it (clipped -750..-300), inside a disc of radius 0.75 x max(input, target "
        "diameter) + 3 mm, minus tissue already dense in the input outside its lesion, "
        "component at the centre; diameter = greatest (data.measure)",
        "truth": truth_kind(data),
        "methods": per_method,
        "ruler_check": ruler_check(on_inputs, excess),
        "gan_vs_geometric_growth": paired_lesion_gains(
            per_pair["gan"], per_pair[BASELINE], excess=excess
        ),
    }
    if classifier is not None:
        document["classifier"] = str(classifier)
        document.update(_classifier_metrics(loaded, classifier, pairs, patches, rendered, spread))
    document["targets"] = _targets(document)
    table = metrics_table(document)
    files: dict[str, Path] = {}
    if out_dir is not None:
        from lungcancer.progression.render import save_sample_grid

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {
            "metrics": out / "metrics.json",
            "table": out / "metrics.md",
            "examples": out / "examples.png",
        }
        atomic_write_text(files["metrics"], json.dumps(document, indent=1) + "\n")
        atomic_write_text(files["table"], table)
        shown = patches.subset(range(min(8, len(patches))))
        columns = np.concatenate([rendered[m][: len(shown)] for m in METHODS], axis=-1)
        source_row = np.concatenate([shown.source] * len(METHODS), axis=-1)
        target_row = np.concatenate([shown.target] * len(METHODS), axis=-1)
        grid = PatchSet(**{**shown.__dict__, "source": source_row, "target": target_row})
        save_sample_grid(files["examples"], grid, columns, paired=True)
    return GanEvalResult(metrics=document, table=table, n_pairs=len(pairs), files=files)


def lesion_slice(view: LesionView, frame_hu: np.ndarray) -> np.ndarray:
    """The 2D frame the classifier scores: a 3D frame's axial slice through the view's lesion
    centre (as `simulate` shows a 3D GAN's frames), a 2D frame as it is."""
    if frame_hu.ndim == 2:
        return frame_hu
    return frame_hu[round(view.center[0])]


def _spread_frames(
    pairs: Sequence[tuple[LesionView, LesionView]], frames: dict[str, list[np.ndarray]]
) -> tuple[dict[str, list[np.ndarray]], int, int]:
    """Each method's frames with the nodes and M1a findings the true future adds (`spread`).

    The target N and M are the future scan's, as the target stage and diameter are for the
    lesion: the evaluation asks whether the frames show what the real future shows. Nothing is
    drawn over the tumour grown to the future's diameter (`tumour_guard`). Pairs
    without N/M in the dataset, or whose N and M do not rise, keep their frame. One plan and
    one guard per pair serve every method, so they all get the same findings.

    Returns:
        The frames by method, the pairs with something drawn, the pairs without two lungs.
    """
    from lungcancer.progression.spread import M1A_KINDS, draw_spread, plan_spread, tumour_guard
    from lungcancer.progression.timeline import SimulationError

    out: dict[str, list[np.ndarray]] = {method: list(f) for method, f in frames.items()}
    drawn, unplaced = 0, 0
    for i, (src, tgt) in enumerate(pairs):
        if not (src.n and src.m and tgt.n and tgt.m) or (src.n, src.m) == (tgt.n, tgt.m):
            continue
        # The frames are the slices the classifier scores (a volume's through the lesion),
        # so the findings are drawn there, as `simulate` draws them on that slice of a volume.
        spacing = (src.spacing_mm[-2], src.spacing_mm[-1])
        center = (src.center[-2], src.center[-1])
        try:
            plan = plan_spread(lesion_slice(src, src.image_hu), spacing, center, i)
        except SimulationError:
            unplaced += 1
            continue
        scale = tgt.diameter_mm / src.diameter_mm
        protect = lesion_slice(src, tumour_guard(src.mask, src.center, scale, src.spacing_mm))
        kind = tgt.m1a_findings if tgt.m1a_findings in M1A_KINDS else "effusion"
        what: list[str] = []
        for method in out:
            out[method][i], what = draw_spread(
                frames[method][i],
                plan,
                baseline=(src.n, src.m),
                target=(tgt.n, tgt.m),
                m1a_kind=kind,
                protect=protect,
            )
        drawn += bool(what)
    return out, drawn, unplaced


def _classifier_metrics(
    gan: LoadedGan,
    classifier: str | Path,
    pairs: Sequence[tuple[LesionView, LesionView]],
    patches: PatchSet,
    rendered: dict[str, np.ndarray],
    spread: bool,
) -> dict[str, Any]:
    """Stage fidelity and FID/KID: rendered patches pasted into the month-0 slice.

    A 3D GAN's patches are pasted into the month-0 volume, and the classifier (2D) scores the
    axial slice through the lesion centre of each frame and of the true future (`lesion_slice`).

    With `spread`, the GAN's and geometric growth's frames also get the nodes and M1a findings
    of the true future drawn beside the tumour (`progression.spread`); their lesion-only
    frames are scored too, as "<method>_lesion_only". "No change" stays the copied input.
    """
    from lungcancer.progression.scoring import FrameScorer, class_for_stage
    from lungcancer.progression.timeline import COARSE_STAGES

    scorer = FrameScorer(classifier)
    spacing = [(float(s.spacing_mm[-2]), float(s.spacing_mm[-1])) for s, _ in pairs]
    source_hu = [gan.window.to_hu(patches.source[i, 0]) for i in range(len(pairs))]
    frames: dict[str, list[np.ndarray]] = {}
    for method, outs in rendered.items():
        frames[method] = [
            lesion_slice(
                src,
                view_grid(src, gan.patch_size, float(patches.spacing_mm[i])).paste_residual(
                    src.image_hu, gan.window.to_hu(outs[i, 0]) - source_hu[i]
                ),
            )
            for i, (src, _) in enumerate(pairs)
        ]
    spread_info: dict[str, Any] = {"drawn": False}
    if spread:
        with_spread, drawn, unplaced = _spread_frames(
            pairs, {m: frames[m] for m in ("gan", "geometric_growth")}
        )
        for method, method_frames in with_spread.items():
            frames[method + LESION_ONLY] = frames[method]
            frames[method] = method_frames
        spread_info = {
            "drawn": True,
            "pairs_with_spread": drawn,
            "pairs_without_two_lungs": unplaced,
            "how": "nodes (N1-N3) and M1a findings the true future adds, drawn everywhere but "
            "on the tumour grown to the future's diameter (progression.spread; a 3D GAN's "
            "on the scored slice through the lesion); "
            "'<method>_lesion_only' rows are the same frames without",
        }
    real = [lesion_slice(tgt, tgt.image_hu) for _, tgt in pairs]
    targets = []
    for _, tgt in pairs:
        name = class_for_stage(tgt.stage, scorer.class_names)
        if name is None:
            raise CheckpointError(
                "the classifier has no class for a target stage",
                path=classifier,
                expected=f"a class for stage {tgt.stage} (e.g. 'stage_{tgt.stage}')",
                found=", ".join(scorer.class_names),
                hint="pass a classifier trained on stage labels (LungSim --classes stage)",
            )
        targets.append(name)
    # Beside the top class over all classes (the target), the top class among the stage
    # classes only: how often the stage reads right when a frame is taken as malignant, which
    # separates rendering the wrong stage from the classifier calling a tumour benign.
    stage_columns = [
        k
        for k, c in enumerate(scorer.class_names)
        if any(class_for_stage(s, [c]) for s in COARSE_STAGES)
    ]
    fidelity: dict[str, float] = {}
    among_stages: dict[str, float] = {}
    features: dict[str, np.ndarray] = {}
    for method, method_frames in {**frames, "true_future": real}.items():
        probs, features[method] = scorer.score(method_frames, spacing)
        predicted = [scorer.class_names[int(k)] for k in probs.argmax(axis=1)]
        fidelity[method] = float(np.mean([p == t for p, t in zip(predicted, targets, strict=True)]))
        top_stage = probs[:, stage_columns].argmax(axis=1)
        staged = [scorer.class_names[stage_columns[int(k)]] for k in top_stage]
        among_stages[method] = float(
            np.mean([p == t for p, t in zip(staged, targets, strict=True)])
        )
    real_f = features.pop("true_future")
    realism = score_realism(real_f, features) if len(pairs) >= 4 else {}
    return {
        "stage_fidelity": fidelity,
        "stage_fidelity_among_stages": among_stages,
        "realism": realism,
        "spread": spread_info,
    }


def _targets(document: dict[str, Any]) -> dict[str, Any]:
    """Each target with the GAN's value, pass/miss and the size of a miss; baseline checks."""
    gan = dict(document["methods"]["gan"])
    if "stage_fidelity" in document:
        gan["stage_fidelity"] = document["stage_fidelity"]["gan"]
    out: dict[str, Any] = {}
    for name, (kind, bound) in TARGETS.items():
        if name not in gan:
            out[name] = {"target": f"{'>=' if kind == 'min' else '<='} {bound}", "measured": None}
            continue
        value = gan[name]
        ok = value >= bound if kind == "min" else value <= bound
        out[name] = {
            "target": f"{'>=' if kind == 'min' else '<='} {bound}",
            "measured": round(value, 4),
            "met": bool(ok),
            "miss_by": 0.0 if ok else round(abs(value - bound), 4),
        }
    methods = document["methods"]
    for baseline in METHODS[1:]:
        out[f"dice_beats_{baseline}"] = bool(methods["gan"]["dice"] > methods[baseline]["dice"])
        out[f"diameter_beats_{baseline}"] = bool(
            methods["gan"]["diameter_mae_mm"] < methods[baseline]["diameter_mae_mm"]
        )
    gains = document.get("gan_vs_geometric_growth") or {}
    for name, gain in (
        ("dice", "dice_gain"),
        ("diameter", "diameter_error_reduction_mm"),
        ("same_ruler_diameter", "same_ruler_diameter_error_reduction_mm"),
        ("calibrated_diameter", "calibrated_diameter_error_reduction_mm"),
    ):
        interval = gains.get(gain + "_ci95")
        if interval is not None:
            # Beyond sampling noise: the whole 95% interval of the paired gain above 0.
            out[f"{name}_beats_{BASELINE}_ci95"] = bool(interval[0] > 0)
    realism = document.get("realism") or {}
    # The simulator's frames (spread drawn where the stage needs it), and the same frames
    # without the spread: the GAN's lesion against geometric growth's lesion, the spread
    # being the same drawing on both.
    for suffix in ("", LESION_ONLY):
        gan_row, base_row = realism.get("gan" + suffix), realism.get(BASELINE + suffix)
        if gan_row is None or base_row is None:
            continue
        out[f"fid_beats_{BASELINE}{suffix}"] = bool(gan_row["fid"] < base_row["fid"])
        interval = gan_row.get("fid_minus_geometric_ci95")
        if interval is not None:
            # Beaten beyond sampling noise: the whole 95% interval of the difference below 0.
            out[f"fid_beats_{BASELINE}{suffix}_ci95"] = bool(interval[1] < 0)
    return out


def metrics_table(document: dict[str, Any]) -> str:
    """A Markdown table of the per-method numbers (one row per method)."""
    realism = document.get("realism") or {}
    fidelity = document.get("stage_fidelity") or {}
    among = document.get("stage_fidelity_among_stages") or {}
    header = (
        "| method | Dice | diameter MAE (mm) | Dice, same ruler | diameter MAE, same ruler "
        "| SSIM | PSNR (dB) | identity SSIM | stage fidelity | stage fidelity, stages only | FID "
        "| KID |"
    )
    lines = [
        f"Held-out pairs ({document.get('split', 'test')} split): {document['n_pairs']} "
        f"(month 0 -> month {document['months']:g})",
        _truth_line(document.get("truth") or {}),
        "",
        header,
        "|" + " --- |" * 12,
    ]
    for method, m in document["methods"].items():
        r = realism.get(method, {})
        lines.append(
            f"| {method} | {m['dice']:.3f} | {m['diameter_mae_mm']:.2f} | "
            f"{m['dice_same_ruler']:.3f} | {m['diameter_error_same_ruler_mm']:.2f} | "
            f"{m['ssim']:.3f} | "
            f"{m['psnr_db']:.1f} | {m['identity_ssim']:.3f} | "
            f"{_fmt(fidelity.get(method))} | {_fmt(among.get(method))} | "
            f"{_fmt(r.get('fid'), 2)} | {_fmt(r.get('kid'), 4)} |"
        )
    for method in (k for k in fidelity if k not in document["methods"]):
        r = realism.get(method, {})
        lines.append(
            f"| {method} |"
            + " |" * 7
            + f" {_fmt(fidelity[method])} | {_fmt(among.get(method))} |"
            + f" {_fmt(r.get('fid'), 2)} | {_fmt(r.get('kid'), 4)} |"
        )
    if "real_vs_real_floor" in realism:
        floor = realism["real_vs_real_floor"]
        lines.append(
            f"| real vs real (floor, {int(floor['n_per_half'])} per half) | | | | | | | | | | "
            f"{floor['fid']:.2f} | |"
        )
    check = document.get("ruler_check")
    if check:
        lines += [
            "",
            f"Ruler check, {check['what']}: Dice {check['dice']:.3f}, diameter MAE "
            f"{check['diameter_mae_mm']:.2f} mm, bias {check['diameter_bias_mm']:+.2f} mm "
            f"(median {check.get('diameter_bias_median_mm', float('nan')):+.2f}). Median bias "
            "against the record: "
            + _per_method(document, "{diameter_bias_median_mm:+.2f}")
            + " mm; median error against the true future, same ruler: "
            + _per_method(document, "{diameter_error_same_ruler_median_mm:.2f}")
            + " mm. "
            "Calibrated diameter (the ruler's reading less its overshoot on each pair's input), "
            "MAE / bias in mm: "
            + _per_method(
                document, "{diameter_mae_calibrated_mm:.2f} / {diameter_bias_calibrated_mm:+.2f}"
            ),
        ]
    gains = document.get("gan_vs_geometric_growth") or {}
    if "dice_gain_ci95" in gains:
        lines += [
            "",
            f"GAN minus geometric growth, lesion measures, {gains['n_boot']} paired patient "
            "resamples (above 0: the GAN better):",
        ]
        for label, key, digits in (
            ("Dice gain", "dice_gain", 4),
            ("diameter error reduction (mm)", "diameter_error_reduction_mm", 2),
            (
                "diameter error reduction, same ruler as the true future (mm)",
                "same_ruler_diameter_error_reduction_mm",
                2,
            ),
            (
                "calibrated diameter error reduction (mm)",
                "calibrated_diameter_error_reduction_mm",
                2,
            ),
        ):
            if key + "_ci95" not in gains:
                continue
            low, high = gains[key + "_ci95"]
            better, worse = gains[key + "_better_worse_pairs"]
            lines.append(
                f"- {label}: {gains[key]:+.{digits}f} (95% CI {low:+.{digits}f} to "
                f"{high:+.{digits}f}); better on {better} pairs, worse on {worse}"
            )
    differences = [
        f"- {method}: {r['fid_minus_geometric']:+.2f} (95% CI {low:+.2f} to {high:+.2f}), "
        f"against {r.get('fid_baseline', BASELINE)}"
        for method, r in realism.items()
        if "fid_minus_geometric_ci95" in r
        for low, high in [r["fid_minus_geometric_ci95"]]
    ]
    if differences:
        boot = realism.get("bootstrap", {})
        lines += [
            "",
            f"FID minus geometric growth's FID (below 0: closer to the real scans), "
            f"{boot.get('n_boot')} paired patient resamples:",
            *differences,
        ]
    return "\n".join(lines) + "\n"


def _per_method(document: dict[str, Any], template: str) -> str:
    """`template` filled from each method's metrics, as "method value; ..." (a method whose
    metrics lack a field the template names, e.g. in an older metrics.json, is left out)."""
    parts = []
    for method, metrics in document["methods"].items():
        try:
            parts.append(f"{method} {template.format(**metrics)}")
        except KeyError:
            continue
    return "; ".join(parts)


def _truth_line(truth: dict[str, Any]) -> str:
    pose = truth.get("followup_pose", "unknown")
    if pose == "baseline":
        what = "the same slice later, in the baseline pose (free of pose)"
        if truth.get("followup_spread") is False:
            what += ", with the baseline's nodes and M1a findings (the lesion alone)"
        return f"True future: {what}."
    if pose == "own":
        return (
            "True future: a rescan in its own pose (the same-ruler and FID measures also read "
            "its changed anatomy; `lungcancer synth --followup-pose baseline` gives a truth "
            "free of pose)."
        )
    return "True future: not a LungSim dataset with a saved synth_config.yaml."


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
