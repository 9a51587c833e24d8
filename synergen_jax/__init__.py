"""synergen_jax: unified discrete-token image understanding and generation in JAX/Flax."""

__version__ = "0.1.0"
