"""Code shared by the API and the workers. Never imports JAX or numpyro."""
