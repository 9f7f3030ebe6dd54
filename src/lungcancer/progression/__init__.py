"""lungcancer.progression."""
