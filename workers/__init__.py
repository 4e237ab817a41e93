"""Chain workers and the sampling engine: the only code that imports JAX and numpyro."""
