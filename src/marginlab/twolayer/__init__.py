"""Wei, Lee, Liu & Ma: two-layer networks, their margins and the convex ℓ1 problem."""
