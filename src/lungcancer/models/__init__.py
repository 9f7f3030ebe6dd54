"""lungcancer.models."""
