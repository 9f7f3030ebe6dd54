"""Classifiers: one registry (`create_model`, `list_models`) and the built-in networks.

Importing this package registers `resnet50`, `densenet121` and `cnn`.
"""

from lungcancer.models import cnn, densenet, resnet
from lungcancer.models.registry import Classifier, create_model, list_models, register_model

__all__ = [
    "Classifier",
    "cnn",
    "create_model",
    "densenet",
    "list_models",
    "register_model",
    "resnet",
]
