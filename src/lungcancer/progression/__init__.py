"""lungcancer.progression: the progression GAN, the growth timeline and `simulate`.

from lungcancer.progression.training import train_gan        # -> GanTrainResult
from lungcancer.progression.fidelity import evaluate_gan     # -> GanEvalResult
from lungcancer.progression.simulate import simulate         # -> SimulationResult
from lungcancer.progression.timeline import growth_timeline  # months -> diameter -> stage
"""
