"""The demo end to end at toy size: every step runs and the report holds every section."""

import csv
from pathlib import Path

import pytest

from lungcancer.config import DataConfig
from lungcancer.demo import _true_spread, run_demo
from lungcancer.io import patient_key
from lungcancer.progression.training import patient_splits

TINY = """
demo:
  patients: 12
  synth_size: 64
  n_boot: 20
  gan_patients: 12
  gan_timepoints_months: [0, 12]
  gan_steps: 4
  gan_max_minutes: 1.0
  simulate_months: [0, 12, 24]
  models:
    - {name: cnn, epochs: 1, lr: 0.003, batch_size: 8}
data:
  image_size: 32
  lung_crop: true
  spacing_mm: [11.0, 11.0]
  windows:
    - {center_hu: -600, width_hu: 1500}
    - {center_hu: 40, width_hu: 400}
  classes: [normal, benign, stage_I, stage_II, stage_III, stage_IV]
model:
  in_chans: 2
train:
  aux_targets: [diameter_mm, t, n, m, invasion]
"""


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_demo_writes_one_report_with_every_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LUNGCANCER_PHI_SALT", "demo-test")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("image_size: 32", f"image_size: 32\n  cache_dir: {tmp_path}/c"))
    lines: list[str] = []
    result = run_demo(tmp_path / "demo", config_path=config, log=lines.append)

    html = result.report_path.read_text()
    for title in ("Data", "Model comparison", "cnn", "Progression GAN", "Timing"):
        assert title in html, title
    assert "not a diagnostic device" in html.lower() or "not a medical device" in html.lower()
    assert (result.runs["cnn"] / "eval" / "metrics.json").is_file()
    assert (tmp_path / "demo" / "gan" / "eval" / "metrics.json").is_file()
    assert any(line.startswith("report:") for line in lines)
    # Simulations start from held-out patients where the split has one of that stage, and the
    # caption says so; the split holds salted patient keys, not the manifest's ids.
    manifest = tmp_path / "demo" / "data_longitudinal" / "manifest.csv"
    test_keys = set(patient_splits(manifest, DataConfig(source=str(manifest)))["test"])
    with manifest.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if float(r["time_point"]) == 0.0]
    held_out_stages = {r["stage"] for r in rows if patient_key(r["patient_id"]) in test_keys}
    simulated = [s for s in ("I", "II", "III") if any(r["stage"] == s for r in rows)]
    assert simulated
    for stage in simulated:
        who = "held-out" if stage in held_out_stages else "training"
        assert f"A {who} stage {stage} patient" in html, stage
    # A second run reuses the generated data instead of drawing it again.
    lines.clear()
    run_demo(tmp_path / "demo", config_path=config, log=lines.append)
    assert any("reusing LungSim data" in line for line in lines)


def test_true_spread_lists_each_rise_of_n_and_m_once_in_time_order() -> None:
    def row(patient: str, month: float, n: str, m: str) -> dict[str, str]:
        return {"patient_id": patient, "time_point": str(month), "n": n, "m": m}

    rows = [
        row("sim-1", 12.0, "N2", "M1a"),
        row("sim-1", 0.0, "N0", "M0"),
        row("sim-1", 6.0, "N1", "M0"),
        row("sim-1", 6.0, "N1", "M0"),  # an off-centre slice of the same visit
        row("sim-2", 6.0, "N3", "M1a"),  # another patient
    ]
    assert _true_spread(rows, rows[1]) == [(6.0, "N1"), (12.0, "N2"), (12.0, "M1a")]
    assert _true_spread(rows[:1], rows[0]) == []
