"""vi.backend: the XLA:CPU workarounds are taken on CPU only, and match the plain path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vi
from vi import backend


@pytest.mark.slow
def test_the_cpu_path_is_taken_on_cpu_and_generic_turns_it_off():
    assert backend.cpu_path() == (jax.default_backend() == "cpu")
    with backend.generic():
        assert not backend.cpu_path()
        assert not backend.fuses(16, jnp.float32)  # one-pass sums: a CPU workaround
        assert backend.block_length(250, 4) == 250  # one scan, no blocks
    assert backend.cpu_path() == (jax.default_backend() == "cpu")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU path")
def test_blocks_of_steps_keep_their_values_in_512_bytes():
    assert backend.block_length(250, 4) == 125  # float32 values: 500 bytes
    assert backend.block_length(250, 8) == 50  # float64: a divisor between 32 and 64 values
    assert backend.block_length(100, 4) == 100
    assert backend.block_length(250, 4 * 16) == 5  # 16 members: a divisor of 250 up to 8


@pytest.mark.parametrize("shape", [(8, 3), (70, 35), (64, 64)])
@pytest.mark.slow
def test_orthonormal_columns_match_numpys_qr_on_both_paths(x64, shape):
    y = jax.random.normal(jax.random.key(0), shape, jnp.float64)
    want, r = np.linalg.qr(np.asarray(y))
    want = want * np.sign(np.diag(r))
    np.testing.assert_allclose(backend.orthonormal_columns(y), want, atol=1e-10)
    with backend.generic():
        np.testing.assert_allclose(backend.orthonormal_columns(y), want, atol=1e-10)


def test_the_cpu_paths_gram_schmidt_makes_no_lapack_call():
    y = jnp.ones((8, 3)) + jnp.eye(8, 3)
    jaxpr = jax.make_jaxpr(backend.orthonormal_columns)(y).jaxpr
    assert backend.uses_lapack(jaxpr) == (not backend.cpu_path())
    with backend.generic():
        jaxpr = jax.make_jaxpr(backend.orthonormal_columns)(y).jaxpr
        assert backend.uses_lapack(jaxpr)


@pytest.mark.slow
def test_discrete_kl_is_the_same_on_both_paths():
    p = jax.random.dirichlet(jax.random.key(1), jnp.ones(1024), (4,))
    q = jax.random.dirichlet(jax.random.key(2), jnp.ones(1024), (4,))
    fast = vi.kl_divergence(p, q)
    with backend.generic():
        plain = vi.kl_divergence(p, q)
    np.testing.assert_allclose(fast, plain, rtol=1e-5)


def test_top_k_is_jax_top_k_and_keeps_xla_s_kernel_on_cpu():
    """Inside a fusion: the same values and indices as ``lax.top_k``, and on the CPU path
    a TopK kernel in the compiled program instead of a sort of all N."""
    x = jax.random.normal(jax.random.key(0), (1000,))
    fused = jax.jit(lambda x: backend.top_k(x, 31)[0][::-1] - 1.0)
    np.testing.assert_array_equal(fused(x), jax.lax.top_k(x, 31)[0][::-1] - 1.0)
    values, indices = jax.jit(lambda x: backend.top_k(x, 31))(x)
    expected_values, expected_indices = jax.lax.top_k(x, 31)
    np.testing.assert_array_equal(values, expected_values)
    np.testing.assert_array_equal(indices, expected_indices)
    hlo = fused.lower(x).compile().as_text()
    assert "TopK" in hlo and "f32[1000]{0} sort(" not in hlo
