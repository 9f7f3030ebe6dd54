"""lungcancer.evaluate."""
