"""LungSim: synthetic chest CT with TNM-staged tumours, nodes, effusions and growth over time.

Public API:
    SynthConfig, SynthResult, generate(cfg, out_dir) -> SynthResult
    render_case(cfg, index) / render_patient(cfg, index, class) -> list[SimSample] (in memory)
    contact_sheet(cfg, out_png, per_class=4)
    growth: Gompertz growth and spread model shared with the progression GAN.
"""

from lungcancer.synth.api import (
    SynthConfig,
    SynthResult,
    class_plan,
    generate,
    patient_id,
    render_case,
    render_patient,
)
from lungcancer.synth.case import SimSample
from lungcancer.synth.preview import contact_sheet
from lungcancer.synth.truth import CLASS_SETS

__all__ = [
    "CLASS_SETS",
    "SimSample",
    "SynthConfig",
    "SynthResult",
    "class_plan",
    "contact_sheet",
    "generate",
    "patient_id",
    "render_case",
    "render_patient",
]
