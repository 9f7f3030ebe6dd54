"""Where the model looked: Grad-CAM / Grad-CAM++, localisation scores, a randomisation check."""

from lungcancer.explain.gradcam import CamResult, grad_cam
from lungcancer.explain.run import Explanation, explain_file, explain_scan, localisation_scores
from lungcancer.explain.sanity import RandomisationStep, randomisation_check
from lungcancer.explain.scores import energy_share, pointing_game_hit

__all__ = [
    "CamResult",
    "Explanation",
    "RandomisationStep",
    "energy_share",
    "explain_file",
    "explain_scan",
    "grad_cam",
    "localisation_scores",
    "pointing_game_hit",
    "randomisation_check",
]
