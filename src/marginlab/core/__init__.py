"""Numerics with no I/O: losses, labels and margins, margin statistics, homogeneity."""
