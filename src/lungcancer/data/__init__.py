"""lungcancer.data."""
