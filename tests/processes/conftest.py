"""Every test under ``tests/processes`` runs in float64 (kernels are compared with closed
forms to 1e-8); the previous setting is restored after each module, so other test files
in the same worker keep JAX's default."""

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def float64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
