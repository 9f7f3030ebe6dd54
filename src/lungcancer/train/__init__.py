"""lungcancer.train."""
