"""lungcancer.explain."""
