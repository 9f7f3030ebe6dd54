"""lungcancer.app."""
