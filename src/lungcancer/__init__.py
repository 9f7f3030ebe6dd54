"""lungcancer: lung cancer classification and progression simulation on CT."""

from lungcancer.errors import LungCancerError
from lungcancer.io.record import Scan

__version__ = "0.1.0"

__all__ = ["LungCancerError", "Scan", "__version__"]
