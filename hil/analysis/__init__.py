"""Analyses around the learning loop: coercivity and convergence, nudge-size bias, sweeps, the report."""
