"""`make demo`: the whole toolkit end to end on LungSim, ending with one HTML report.

Generate a LungSim set, show what the data layer understood (inspect, measure), train the
custom CNN and DenseNet121 on one patient-level split, evaluate both with patient-bootstrap
CIs, compare them, and write `OUT/report.html`. Every step calls the same API as the
matching CLI command, so the demo is also a worked example of the Python API.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lungcancer.config import (
    DataConfig,
    ModelConfig,
    TrainConfig,
    from_dict,
    load_yaml,
    override,
    save_configs,
    to_dict,
)


@dataclass(frozen=True)
class DemoModel:
    """One model the demo trains, with its own schedule."""

    name: str = "cnn"
    epochs: int = 10
    lr: float = 2e-3
    batch_size: int = 32
    max_minutes: float = 0.0


@dataclass(frozen=True)
class DemoConfig:
    """The demo's own knobs (YAML section `demo:`); data/model/train sections are shared."""

    patients: int = 240
    synth_size: int = 128
    synth_seed: int = 7
    workers: int = 2
    models: tuple[DemoModel, ...] = (DemoModel("cnn", 12, 3e-3), DemoModel("densenet121", 6, 1e-3))
    n_boot: int = 1000
    report_title: str = "lungcancer demo on LungSim"
    gan_patients: int = 60
    gan_timepoints_months: tuple[float, ...] = (0.0, 6.0, 12.0)
    gan_steps: int = 400
    gan_max_minutes: float = 3.0
    simulate_months: tuple[float, ...] = (0.0, 3.0, 6.0, 12.0, 18.0, 24.0)


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its outputs."""

    out_dir: Path
    report_path: Path
    data_dir: Path
    runs: dict[str, Path]
    seconds: dict[str, float]


Log = Callable[[str], None]


@contextmanager
def _step(name: str, seconds: dict[str, float], log: Log) -> Iterator[None]:
    log(f"[{name}] ...")
    start = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - start
    log(f"[{name}] done in {seconds[name]:.1f} s")


def load_demo_configs(
    path: str | Path | None,
) -> tuple[DemoConfig, DataConfig, ModelConfig, TrainConfig]:
    """The four configs of a demo YAML file (defaults for missing sections)."""
    sections = load_yaml(path) if path is not None else {}
    return (
        from_dict(DemoConfig, sections.get("demo") or {}, prefix="demo."),
        from_dict(DataConfig, sections.get("data") or {}, prefix="data."),
        from_dict(ModelConfig, sections.get("model") or {}, prefix="model."),
        from_dict(TrainConfig, sections.get("train") or {}, prefix="train."),
    )


def _dataset(synth_cfg: Any, data_dir: Path, log: Log) -> Path:
    """Generate LungSim once; a folder from an identical earlier call is reused."""
    import shutil

    from lungcancer.synth import generate

    stamp = data_dir / "synth_config.json"
    wanted = json.dumps(to_dict(synth_cfg), sort_keys=True)
    manifest = data_dir / "manifest.csv"
    if manifest.exists() and stamp.exists() and stamp.read_text() == wanted:
        log(f"reusing LungSim data in {data_dir}")
        return manifest
    if data_dir.exists():
        shutil.rmtree(data_dir)
    result = generate(synth_cfg, data_dir)
    stamp.write_text(wanted)
    log(f"LungSim: {result.samples} samples, {synth_cfg.patients} patients -> {data_dir}")
    return result.manifest_path


def _data_section(manifest: Path, log: Log) -> tuple[str, str]:
    """Inspect the dataset and measure one lesion, as `data inspect` and `measure` do."""
    import csv
    import html

    from lungcancer.data import inspect_dataset, measure_file

    summary = inspect_dataset(manifest)
    with manifest.open(newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["label"].startswith("stage_"))
    lesion = measure_file(
        str(manifest.parent / row["path"]), str(manifest.parent / row["mask_path"])
    )[0]
    log(
        f"data: {summary.n_samples} samples, {summary.n_patients} patients, "
        f"classes {', '.join(summary.class_names)}"
    )
    log(
        f"measure: lesion {lesion.diameter_mm:.1f} mm ({lesion.t_descriptor} by size, "
        f"Lung-RADS {lesion.lung_rads_band}); LungSim record says {row['diameter_mm']} mm"
    )
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td class='num'>{sum(splits.values())}</td></tr>"
        for name, splits in summary.counts.items()
    )
    body = (
        f"<p>{summary.n_samples} lesion-centred slices from {summary.n_patients} synthetic "
        f"patients (layout {html.escape(summary.layout)}; {summary.files_read} files decoded "
        f"for the intensity summary, {html.escape(summary.intensity)}).</p>"
        f"<table><tr><th>class</th><th>samples</th></tr>{rows}</table>"
        f"<p>`lungcancer measure` on one stage {html.escape(row['stage'])} lesion mask: greatest "
        f"diameter {lesion.diameter_mm:.1f} mm (LungSim ground truth {row['diameter_mm']} mm), "
        f"volume {lesion.volume_ml:.2f} ml, {lesion.t_descriptor} by size, Lung-RADS "
        f"{lesion.lung_rads_band}.</p>"
    )
    return ("Data", body)


def _progression(
    demo: DemoConfig,
    data_cfg: DataConfig,
    out: Path,
    classifier: Path,
    seconds: dict[str, float],
    log: Log,
) -> list[Any]:
    """Train a short GAN on longitudinal LungSim, measure it, simulate one case per stage."""
    import csv
    import html

    from lungcancer.config import GanConfig
    from lungcancer.io import patient_key
    from lungcancer.progression.fidelity import evaluate_gan
    from lungcancer.progression.simulate import simulate
    from lungcancer.progression.timeline import SimulationError
    from lungcancer.progression.training import patient_splits, train_gan
    from lungcancer.synth import SynthConfig

    data_dir = out / "data_longitudinal"
    with _step("synth longitudinal", seconds, log):
        manifest = _dataset(
            SynthConfig(
                patients=demo.gan_patients,
                size=demo.synth_size,
                seed=demo.synth_seed + 1,
                workers=demo.workers,
                timepoints_months=demo.gan_timepoints_months,
                off_centre_slices=0,
            ),
            data_dir,
            log,
        )
    split_cfg = replace(data_cfg, source=str(manifest), split_file="", classes=())
    gan_dir = out / "gan"
    if gan_dir.exists():
        import shutil

        shutil.rmtree(gan_dir)
    gan_cfg = GanConfig(
        data=str(manifest),
        out_dir=str(gan_dir),
        steps=demo.gan_steps,
        max_minutes=demo.gan_max_minutes,
        sample_every=demo.gan_steps,
        checkpoint_every=demo.gan_steps,
    )
    with _step("gan train", seconds, log):
        trained = train_gan(gan_cfg, split_cfg, progress=False)
    with _step("gan evaluate", seconds, log):
        fidelity = evaluate_gan(
            trained.checkpoint,
            manifest,
            classifier=classifier,
            months=max(demo.gan_timepoints_months),
            data_cfg=split_cfg,
            out_dir=gan_dir / "eval",
        )
    log(f"GAN fidelity on {fidelity.n_pairs} held-out pairs:\n{fidelity.table}")
    sections: list[Any] = [
        (
            "Progression GAN: fidelity against the true future scans",
            f"<p>{fidelity.n_pairs} held-out (month 0, month "
            f"{max(demo.gan_timepoints_months):g}) pairs of LungSim patients the GAN never saw, "
            f"after {trained.steps} training steps ({trained.minutes:.1f} min). The demo's GAN "
            "is trained briefly; see the README for the full-length figures.</p>"
            f"<pre>{html.escape(fidelity.table)}</pre>",
        )
    ]
    test_patients = set(patient_splits(manifest, split_cfg).get("test", ()))
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    baselines = [r for r in rows if float(r["time_point"]) == 0.0]
    # Held-out patients first; a training patient only when no held-out one has that stage.
    # The data layer keys patients by a salted hash of the manifest's id (never the id itself),
    # so the split's members are compared with the same key.
    held_out = {r["patient_id"] for r in baselines if patient_key(r["patient_id"]) in test_patients}
    # Among those, patients whose nodes or effusion appear later first: their simulation then
    # shows the drawn spread beside the growth.
    baselines.sort(key=lambda r: (r["patient_id"] not in held_out, not _true_spread(rows, r)))
    with _step("simulate", seconds, log):
        for stage in ("I", "II", "III"):
            row = next((r for r in baselines if r["stage"] == stage), None)
            if row is None:
                log(f"simulate: no stage {stage} patient at baseline; skipped")
                continue
            who = "held-out" if row["patient_id"] in held_out else "training"
            spread = _true_spread(rows, row)
            kwargs: dict[str, Any] = {
                "mask": manifest.parent / row["mask_path"],
                "classifier": classifier,
                "months": demo.simulate_months,
                "n": row["n"],
                "m": row["m"],
                "invasion": row.get("invasion") or "none",
                "current_stage": stage,
                "out_dir": out / "simulate" / f"stage_{stage}",
            }
            try:
                result = simulate(
                    trained.checkpoint, manifest.parent / row["path"], spread=spread, **kwargs
                )
            except SimulationError as exc:
                if not spread:
                    raise
                # A slice where the spread cannot be placed still gets its lesion simulated.
                log(f"simulate stage {stage}: spread not drawn: {exc}")
                spread = []
                result = simulate(trained.checkpoint, manifest.parent / row["path"], **kwargs)
            final = result.timeline[-1]
            log(
                f"simulate stage {stage}: {row['diameter_mm']} mm -> "
                f"{final.diameter_mm:.1f} mm ({final.t}, stage {final.stage}) at "
                f"{demo.simulate_months[-1]:g} months -> {result.files['gif']}"
            )
            told = ", ".join(f"{v} from month {t:g}" for t, v in spread)
            truth = f"nodal/pleural spread as LungSim's truth for this patient: {told}. "
            caption = (
                f"A {who} stage {stage} patient ({row['histology']}, {row['diameter_mm']} mm), "
                f"Gompertz growth with a {result.vdt_days:.0f}-day doubling time; "
                + (truth if told else "")
                + "; ".join(result.notes)
            )
            sections += [
                (f"Simulated progression from stage {stage}", result.files["strip"], caption),
                (f"Stage {stage}: animation", result.files["gif"]),
                (
                    f"Stage {stage}: size and the classifier's belief over time",
                    result.files["plot"],
                ),
            ]
    return sections


def _true_spread(rows: list[dict[str, str]], baseline: dict[str, str]) -> list[tuple[float, str]]:
    """The (month, N or M) rises LungSim drew for this patient's later visits: the spread
    schedule that makes the simulation comparable with the patient's true future."""
    schedule, n, m = [], baseline["n"], baseline["m"]
    later = sorted(
        (r for r in rows if r["patient_id"] == baseline["patient_id"] and r.get("n")),
        key=lambda r: float(r["time_point"]),
    )
    for r in later:
        month = float(r["time_point"])
        if r["n"] != n:
            schedule.append((month, r["n"]))
            n = r["n"]
        if r["m"] != m:
            schedule.append((month, r["m"]))
            m = r["m"]
    return schedule


def run_demo(
    out_dir: str | Path, *, config_path: str | Path | None = None, log: Log = print
) -> DemoResult:
    """Run the demo and write `out_dir/report.html`.

    Args:
        out_dir: the demo folder (data, runs, comparison and report go inside).
        config_path: a YAML file with `demo`, `data`, `model` and `train` sections
            (configs/quick.yaml); defaults when None.
        log: where progress lines go.

    Returns:
        The report path, the run folders and the seconds each step took.
    """
    from lungcancer.evaluate import compare_runs, evaluate_run
    from lungcancer.evaluate.compare import comparison_section
    from lungcancer.evaluate.report import model_section, write_report
    from lungcancer.train import train

    demo, data_cfg, model_cfg, train_cfg = load_demo_configs(config_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    data_dir = out / "data"
    from lungcancer.synth import SynthConfig

    with _step("synth", seconds, log):
        manifest = _dataset(
            SynthConfig(
                patients=demo.patients,
                size=demo.synth_size,
                seed=demo.synth_seed,
                workers=demo.workers,
            ),
            data_dir,
            log,
        )
    with _step("inspect+measure", seconds, log):
        data_block = _data_section(manifest, log)

    data_cfg = replace(data_cfg, source=str(manifest))
    runs: dict[str, Path] = {}
    sections: list[Any] = [data_block]
    for spec in demo.models:
        run_dir = out / "runs" / spec.name
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        m_cfg = replace(model_cfg, name=spec.name)
        t_cfg = override(
            train_cfg,
            out_dir=str(run_dir),
            epochs=spec.epochs,
            lr=spec.lr,
            batch_size=spec.batch_size,
            max_minutes=spec.max_minutes,
        )
        with _step(f"train {spec.name}", seconds, log):
            result = train(data_cfg, m_cfg, t_cfg)
        # Every later model reuses the first model's split: a comparison needs the same test set.
        data_cfg = replace(data_cfg, split_file=str(result.run_dir / "splits.json"))
        with _step(f"evaluate {spec.name}", seconds, log):
            evaluation = evaluate_run(run_dir, n_boot=demo.n_boot)
        runs[spec.name] = run_dir
        headline = evaluation.metrics["headline"]
        log(
            f"{spec.name}: test macro ROC-AUC {headline['macro_roc_auc']:.3f}, "
            f"macro F1 {headline['macro_f1']:.3f}, accuracy {headline['accuracy']:.3f} "
            f"-> {evaluation.report_path}"
        )
        sections.append(
            model_section(
                spec.name,
                evaluation.metrics,
                evaluation.plots,
                {"model": spec.name, "run": str(run_dir), "epochs": result.best_epoch},
            )
        )
    with _step("compare", seconds, log):
        comparison = compare_runs(list(runs.values()), out_dir=out / "compare")
    sections.insert(1, comparison_section(comparison))
    # The classifier that scores the simulated frames: the better model on the test split.
    best = max(comparison.rows, key=lambda row: row["metrics"]["macro_roc_auc"]["value"] or 0.0)
    classifier = Path(best["run_dir"]) / "best.pt"
    sections += _progression(demo, data_cfg, out, classifier, seconds, log)

    save_configs(
        out / "demo_config.yaml", demo=demo, data=data_cfg, model=model_cfg, train=train_cfg
    )
    timing = "".join(
        f"<tr><td>{name}</td><td class='num'>{value:.1f}</td></tr>"
        for name, value in seconds.items()
    )
    sections.append(("Timing", f"<table><tr><th>step</th><th>seconds</th></tr>{timing}</table>"))
    report = write_report(
        out / "report.html",
        title=demo.report_title,
        metrics=None,
        plots={},
        run_info={"data": str(data_dir), "config": str(config_path or "defaults")},
        sections=sections,
    )
    log(f"report: {report}")
    return DemoResult(out, report, data_dir, runs, seconds)
