"""The host transform (bayesgmm._transform) against plain float64 NumPy references.

The one-pass tiled moments and the tiled, in-place copy into the working layout must agree with
the textbook two-pass float64 formulas over the whole float64 range, with zero weights, constant
columns and tiles that do not divide the row count.
"""

import numpy as np
import pytest

from bayesgmm import _transform as tr
from bayesgmm.scoring import _FAR, bucket, rows_for_scoring

N = 3 * tr._TILE + 123  # several tiles and a partial one


def _reference(X, w, p):
    """Two-pass weighted mean and standard deviations of X, computed on X / p (p a power of
    two near the spread, so that no square under- or overflows; dividing by it is exact)."""
    x = np.asarray(X, np.float64) / p
    mean = np.average(x, axis=0, weights=w)
    std = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w))
    return p * mean, p * std


@pytest.mark.parametrize(
    ("offset", "spread"),
    [(0.0, 1.0), (1e8, 1.0), (-1e8, 1e-6), (3.0, 1e6), (0.0, 1e-200), (1e150, 1e140), (0.0, 1e150)],
)
@pytest.mark.parametrize("weighted", [False, True])
def test_fit_transform_matches_two_pass_float64(offset, spread, weighted):
    rng = np.random.default_rng(0)
    # Per-column spreads 1, 3, 0.3 times ``spread``: the scale is their geometric mean (0.96),
    # a power of two away from any rounding boundary of log2.
    X = offset + spread * rng.standard_normal((N, 3)) * np.array([1.0, 3.0, 0.3])
    w = rng.uniform(0.0, 2.0, N) if weighted else np.ones(N)
    if weighted:
        w[: tr._TILE + 7] = 0.0  # a whole tile of zero weights, and the first row
    mean, std = _reference(X, w, float(tr._pow2(spread)))
    t = tr.fit_transform(X, w)
    # Means to float64 round-off relative to the data's magnitude; the scale is exact.
    np.testing.assert_array_less(np.abs(t.shift - mean), 1e-13 * (abs(offset) + std))
    assert t.scale == float(tr._pow2(np.exp(np.mean(np.log(std)))))


def test_fit_transform_constant_column_has_zero_spread():
    rng = np.random.default_rng(1)
    X = np.column_stack([np.full(N, 0.1), rng.standard_normal(N) * 8.0 + 1e6])
    t = tr.fit_transform(X, np.ones(N))
    assert t.shift[0] == 0.1
    assert t.scale == 8.0  # the constant column does not enter the geometric mean


def test_fit_transform_refuses_overflowing_variance():
    X = np.zeros((N, 2))
    X[::2, 1] = 1e200
    with pytest.raises(ValueError, match="overflows: column 1"):
        tr.fit_transform(X, np.ones(N))


@pytest.mark.parametrize("x_dtype", [np.float64, np.float32, np.int64])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_to_working_matches_float64_reference(x_dtype, dtype):
    rng = np.random.default_rng(2)
    X = (1e6 + 50.0 * rng.standard_normal((N, 4))).astype(x_dtype)
    t = tr.Transform(np.array([1e6 + 0.1, 1e6 - 3.3, 999_999.7, 1e6 + 1 / 3]), 64.0)
    ref = ((X.astype(np.float64) - t.shift) / t.scale).T
    got = tr.to_working(X, t, dtype)
    assert got.shape == (4, N) and got.dtype == dtype
    if x_dtype == np.float32 and dtype == np.float32:
        # Centred in float32 with the shift split into hi + lo: within two float32 rounding
        # errors of the float64 result (the float64 path rounds once).
        eps = np.finfo(np.float32).eps
        bound = 2 * eps * np.abs(ref) + eps**2 * np.abs(t.shift)[:, None] / t.scale
        np.testing.assert_array_less(np.abs(got - ref), bound + 1e-30)
    else:
        np.testing.assert_array_equal(got, ref.astype(dtype))


def test_to_working_identity_is_the_layout_copy():
    X = np.random.default_rng(3).standard_normal((N, 3)).astype(np.float32)
    got = tr.to_working(X, tr.identity(3), np.float32)
    np.testing.assert_array_equal(got, X.T)
    assert not np.shares_memory(got, X)
    assert got.ctypes.data % 64 == 0  # the CPU device takes it without a copy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_to_working_names_overflow(dtype):
    X = np.zeros((N, 2))
    X[N - 1, 1] = 1e300 if dtype == np.float64 else 1e30
    with pytest.raises(ValueError, match=f"X overflows {np.dtype(dtype).name}"):
        tr.to_working(X, tr.identity(2), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_for_scoring_matches_untiled_formula(dtype):
    rng = np.random.default_rng(4)
    X = 1e6 + rng.standard_normal((N, 3))
    X[5] = 1e200  # far rows are scaled down by a power of two of their own
    X[N - 2, 1] = -1e40
    t = tr.Transform(np.array([1e6, 1e6 + 3.0, 1e6 - 0.5]), 4.0)
    y = X / t.scale - t.shift / t.scale
    far = np.max(np.abs(y), axis=1)
    ts = np.where(far > _FAR[np.dtype(dtype)], np.exp2(np.ceil(np.log2(np.maximum(far, 1)))), 1.0)
    got = rows_for_scoring(X, t, dtype)
    assert got.shape == (5, bucket(N))
    np.testing.assert_array_equal(got[:3, :N], (y / ts[:, None]).T.astype(dtype))
    np.testing.assert_array_equal(got[3, :N], (1.0 / ts).astype(dtype))
    np.testing.assert_array_equal(got[3:, N:], 1.0)
