"""Training (Algorithm 1 of the MetaNet paper), evaluation and Gatys optimisation."""
