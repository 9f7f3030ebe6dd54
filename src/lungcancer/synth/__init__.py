"""lungcancer.synth."""
