"""Centring and scaling on the host, in float64, before the data are cast to the working dtype.

A fit is equivariant under ``x -> a + s x``; floating point is not: float64 data near 1e8 with
unit spread keep eight digits of their spread, and cast to float32 none. So the fits work on

    y = (x - shift) / scale,

``shift`` the weighted data mean and ``scale`` one power of two near the geometric mean of the
per-feature standard deviations, computed here in float64 (in row chunks, so no data-sized
float64 temporary is formed), and every parameter, hyperparameter and objective is mapped back.

Why one common scale and not one per feature: the spherical structure (one variance for all
features) and the spherical prior (``trace(Psi) / D``) are not equivariant under per-feature
scaling, and ``reg_covar`` (an absolute variance, as in scikit-learn) would become a vector that
the M-step does not take. Nothing is lost for the other types: the Cholesky factorisation and
the whitened E-step are invariant to a diagonal scaling of the features in floating point (their
accuracy depends on the diagonally scaled condition number), and the singularity thresholds are
per feature already. What float32 needs is the centring (the offset) and an overall magnitude
that neither overflows nor underflows; the geometric mean of the standard deviations balances
the largest and the smallest feature against both. A power of two makes the scaling exact.

Parameters map back as ``means = shift + scale * means_y``, ``covariances = scale**2 * cov_y``,
``precisions_chol = precisions_chol_y / scale``; the prior's ``mean`` and ``scale`` (Psi) the
other way. The log-likelihood of the data as given is that of ``y`` minus ``W D log(scale)`` (W
the total sample weight); the log-prior loses the log-Jacobian of the parameter map,
``(K D + 2 m) log(scale)`` with m the number of free covariance entries.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .priors import PriorParams

_CHUNK = 65536  # rows per chunk of the max-abs pass (in X's own dtype: no temporaries)
_ALIGN = 64  # bytes: the alignment XLA's CPU client needs to use a host buffer in place
_TILE = 4096  # rows per tile of the float64 moments and of the transposing copy: in cache


class Transform(NamedTuple):
    """``y = (x - shift) / scale``: the map from the data as given to the working space."""

    shift: np.ndarray  # shape=(D,), float64
    scale: float  # a power of two

    @property
    def log_scale(self) -> float:
        return float(np.log(self.scale))


def identity(n_features: int) -> Transform:
    return Transform(np.zeros(n_features), 1.0)


def _pow2(x: np.ndarray | float) -> np.ndarray:
    """The power of two nearest ``x`` (> 0) on a log scale."""
    return np.exp2(np.round(np.log2(x)))


def normalise_weights(sample_weight: np.ndarray) -> tuple[np.ndarray, float]:
    """``(u, factor)`` with ``sample_weight = factor * u`` and ``mean(u) = 1``, in float64.

    Dividing by the largest weight first keeps every step in range for weights from 1e-300 to
    1e300. A maximum-likelihood fit does not depend on the weights' scale, and ``u`` is
    representable in float32 whatever that scale was.
    """
    w = np.asarray(sample_weight, np.float64)
    top = float(np.max(w))
    u = w / top
    mean = float(np.mean(u))
    return u / mean, top * mean


def _column_max_abs(X: np.ndarray) -> np.ndarray:
    """Per-column largest magnitude (D,), float64, in ``X``'s own dtype: no upcast, no
    data-sized temporary (max and min per chunk instead of ``abs``)."""
    n, d = X.shape
    amax = np.zeros(d)
    for i in range(0, n, _CHUNK):
        c = X[i : i + _CHUNK]
        amax = np.maximum(amax, np.maximum(c.max(axis=0), -c.min(axis=0)).astype(np.float64))
    return amax


def _moments(X: np.ndarray, u: np.ndarray, inv: np.ndarray | None):
    """Weighted mean and variances (D,) of ``X * inv`` (``inv`` per-column powers of two, or
    None for 1) in one float64 pass over cache-sized tiles of rows: each tile's mean and centred
    sum of squares merged into the running ones by Chan's formula (as accurate as a second,
    centred pass, without reading X twice)."""
    n, d = X.shape
    buf = np.empty((_TILE, d))
    total, mean, m2 = 0.0, np.zeros(d), np.zeros(d)
    for i in range(0, n, _TILE):
        y = buf[: min(_TILE, n - i)]
        if inv is None:
            y[...] = X[i : i + _TILE]
        else:
            np.multiply(X[i : i + _TILE], inv, out=y, casting="unsafe")
        ut = u[i : i + _TILE]
        wt = float(np.sum(ut))
        if not wt > 0:
            continue
        mt = (ut @ y) / wt
        np.subtract(y, mt, out=y)
        np.multiply(y, y, out=y)
        m2t = ut @ y
        grown = total + wt
        delta = mt - mean
        mean += delta * (wt / grown)
        m2 += m2t + delta * delta * (total * wt / grown)
        total = grown
    return mean, m2 / total if total > 0 else m2


def fit_transform(X: np.ndarray, sample_weight: np.ndarray) -> Transform:
    """The shift and scale of validated ``X`` (n, D) with weights (n,): see the module docstring.

    One float64 pass over tiles of rows (:func:`_moments`). Only where it over- or underflows
    (spreads beyond about 1e125 or below 1e-125) the pass is repeated on
    the columns divided by powers of two near their magnitudes, which keeps every sum in range;
    dividing by a power of two is exact, so both passes agree wherever both are in range.

    Raises a ValueError naming overflow when the spread of a feature is so large that its
    variance exceeds the float64 range (standard deviations beyond about 1.3e154).
    """
    u, _ = normalise_weights(sample_weight)  # mean 1: tile sums stay near their row counts
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        mean, var = _moments(X, u, None)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(var)) and np.all(var > 1e-250)):
        amax = _column_max_abs(X)
        p0 = np.where(amax > 0, np.exp2(np.ceil(np.log2(np.where(amax > 0, amax, 1.0)))), 1.0)
        mean, var = _moments(X, u, 1.0 / p0)
        shift, std = p0 * mean, p0 * np.sqrt(var)  # std <= p0, finite
    else:
        shift, std = mean, np.sqrt(var)
    # A constant column's rounded mean leaves a variance of round-off (about (eps |x|)^2), which
    # must not enter the scale: columns whose spread is that small are checked for constancy.
    for j in np.flatnonzero(std <= 2.0**-40 * np.abs(shift)):
        lo, hi = X[:, j].min(), X[:, j].max()
        if lo == hi:
            shift[j], std[j] = float(lo), 0.0
    return transform_from_moments(shift, std)


def transform_from_moments(mean: np.ndarray, std: np.ndarray, name: str = "X") -> Transform:
    """The transform from the weighted mean (D,) and per-column standard deviations (D,).

    For callers that have the moments already, e.g. from one streamed pass over chunks
    (standard deviations, not variances, so that columns whose variance overflows float64 can
    still be passed and named). Raises the overflow ValueError of :func:`fit_transform`.
    """
    shift = np.asarray(mean, np.float64)
    std = np.asarray(std, np.float64)
    limit = np.sqrt(np.finfo(np.float64).max)
    if not np.all(std < limit):
        j = int(np.argmax(np.where(np.isfinite(std), std, np.inf)))
        raise ValueError(
            f"{name} overflows: column {j} has a standard deviation of {std[j]:.3g}, whose square "
            f"(its variance) exceeds the float64 range ({np.finfo(np.float64).max:.3g}). "
            "Rescale X (e.g. divide it by a power of ten) before fitting."
        )
    positive = std[std > 0]
    scale = float(_pow2(np.exp(np.mean(np.log(positive))))) if positive.size else 1.0
    return Transform(shift, scale)


def transform_of_moments(mean: np.ndarray, variance: np.ndarray, name: str = "X") -> Transform:
    """:func:`fit_transform`'s shift and scale from the data's weighted mean and variances (D,)
    computed elsewhere (a streamed pass, :mod:`bayesgmm.stream`): the same definitions."""
    std = np.sqrt(np.maximum(np.asarray(variance, np.float64), 0.0))
    return transform_from_moments(mean, std, name)


def _aligned_empty(shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array on a 64-byte boundary: the CPU device then uses it without a copy
    each time it enters a compiled program (NumPy's own large buffers sit 16 bytes off a page,
    and JAX copies those, on every call)."""
    nbytes = shape[0] * shape[1] * dtype.itemsize
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    offset = -raw.ctypes.data % _ALIGN
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def split_shift(shift: np.ndarray, scale: float, dtype) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(hi, lo, 1 / scale)`` in ``dtype``, ``hi + lo`` the float64 shift to about eps^2.

    ``((x - hi) - lo) * (1 / scale)`` maps rows of ``dtype`` as accurately as float64
    arithmetic followed by the cast (near the shift ``x - hi`` is exact, and ``scale`` is a
    power of two): the split the streamed chunks use (``bayesgmm.sources.Centring.split`` calls it).
    """
    dtype = np.dtype(dtype)
    hi = np.asarray(shift, np.float64).astype(dtype)
    lo = (np.asarray(shift, np.float64) - hi).astype(dtype)
    return hi, lo, dtype.type(1.0 / scale)


def centre_rows(rows: np.ndarray, hi, lo, inv, out: np.ndarray) -> np.ndarray:
    """``((rows - hi) - lo) * inv`` written into ``out`` (same shape), with no temporaries:
    the in-place centring of one tile, shared by :func:`to_working` and the streamed chunks."""
    np.subtract(rows, hi, out=out, casting="unsafe")
    if np.any(lo):
        np.subtract(out, lo, out=out)
    if inv != 1:
        np.multiply(out, inv, out=out)
    return out


def to_working(X: np.ndarray, t: Transform, dtype, name: str = "X") -> np.ndarray:
    """``(X - shift) / scale`` as columns, shape (D, n), in ``dtype``: the fits' layout.

    Cache-sized tiles of rows are centred in place and transposed into the result, as the
    streamed fits do (:func:`split_shift`): floating rows in the more
    precise of their own and the working dtype (float32 rows for a float32 fit are not upcast:
    the shift is split into ``hi + lo`` in float32 and ``1 / scale`` is a power of two),
    integers in float64; no data-sized temporary. The identity costs only the layout copy.

    Raises a ValueError naming overflow when a transformed value's square would overflow
    ``dtype`` (a value that many standard deviations from the mean).
    """
    n, d = X.shape
    dtype = np.dtype(dtype)
    out = _aligned_empty((d, n), dtype)
    shift = np.asarray(t.shift, np.float64)
    trivial = t.scale == 1.0 and not np.any(shift)
    compute = np.promote_types(X.dtype, dtype) if X.dtype.kind == "f" else np.dtype(np.float64)
    hi, lo, inv = split_shift(shift, t.scale, compute)
    buf = np.empty((_TILE, d), compute)
    # Squares, sums of squares over rows and features and their products with precisions must
    # stay finite: keep a margin of 1e4 under the square root of the largest value.
    limit = float(np.sqrt(np.finfo(dtype).max / 1e4))
    for i in range(0, n, _TILE):
        r = X[i : i + _TILE]
        if trivial:
            y = r
        else:
            y = centre_rows(r, hi, lo, inv, buf[: len(r)])
        top = max(float(y.max()), -float(y.min()))
        if top < limit:
            out[:, i : i + _TILE] = y.T
            continue
        # Raised before the cast, which would warn of its own overflow.
        raise ValueError(
            f"{name} overflows {dtype.name}: after centring and scaling, a value lies "
            f"{top:.3g} (scaled) units from the data mean, and its square exceeds the "
            f"{dtype.name} range. "
            + (
                "Use float64 (jax.config.update('jax_enable_x64', True)) or remove the outlier."
                if dtype == np.float32
                else "Remove the outlier or rescale the columns."
            )
        )
    return out


def extreme_outlier(X: np.ndarray, threshold: float = 1e6) -> str | None:
    """A sentence naming a value far outside the bulk of its column of ``X`` (n, D), or None.

    A value ``threshold`` or more median absolute deviations from its column's median (the
    median and MAD from at most about 1e5 evenly spaced rows, the largest deviation from every
    row). EM gives such an outlier a component of its own, which collapses onto it: the
    fitting driver adds this sentence to its "singular" message so that the cause is named.
    """
    n, d = X.shape
    sample = np.asarray(X[:: max(1, n // 100_000)], np.float64)
    med = np.median(sample, axis=0)
    mad = np.median(np.abs(sample - med), axis=0)
    top = np.zeros(d)
    for i in range(0, n, _CHUNK):
        top = np.maximum(top, np.max(np.abs(np.asarray(X[i : i + _CHUNK], np.float64) - med), 0))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(mad > 0, top / np.where(mad > 0, mad, 1.0), 0.0)
    j = int(np.argmax(ratio))
    if not ratio[j] >= threshold:
        return None
    return (
        f"X spans an extreme range: column {j} holds a value {ratio[j]:.3g} median absolute "
        "deviations from its median, and such an outlier gets a component of its own, which "
        "collapses onto it. Remove the outlier (or use prior='default')."
    )


def check_in_range(value: float, dtype, name: str) -> None:
    """A ValueError naming ``name`` when ``value`` (in the working space) overflows ``dtype``."""
    dtype = np.dtype(dtype)
    if not np.all(np.abs(np.asarray(value, np.float64)) < np.finfo(dtype).max / 1e4):
        raise ValueError(
            f"{name} overflows {dtype.name} once the data are scaled to unit spread (value "
            f"{np.max(np.abs(value)):.3g} in those units, limit {np.finfo(dtype).max / 1e4:.3g}); "
            "use a smaller value"
            + (
                " or float64 (jax.config.update('jax_enable_x64', True))."
                if dtype == np.float32
                else "."
            )
        )


def prior_to_working(prior: PriorParams, t: Transform, n_components: int, dtype) -> PriorParams:
    """The hyperparameters of the data as given mapped into the working space (float64).

    Raises a ValueError naming the hyperparameter whose value or whose contribution to the
    log-prior overflows the working dtype (e.g. ``degrees_of_freedom=1e300``).
    """
    mean = (np.asarray(prior.mean, np.float64) - t.shift) / t.scale
    scale = np.asarray(prior.scale, np.float64) / t.scale**2
    d = mean.shape[0]
    names = {
        "alpha": "Prior weight_concentration",
        "kappa": "Prior mean_precision",
        "dof": "Prior degrees_of_freedom",
    }
    for field, label in names.items():
        h = float(getattr(prior, field))
        # The log-prior holds terms like gammaln(K alpha), nu D log|Psi| / 2 and kappa |mu|^2:
        # bound them by h K D (|log h| + 1) times a margin.
        bound = h * n_components * d * (abs(np.log(h)) + 1.0) * 1e3 if h > 0 else 0.0
        check_in_range(bound, dtype, f"{label}={h:g}")
    check_in_range(mean, dtype, "Prior mean")
    check_in_range(scale, dtype, "Prior scale")
    diag = np.diagonal(scale) if scale.ndim == 2 else scale
    if np.any(diag < np.finfo(np.dtype(dtype)).tiny * 1e4):
        raise ValueError(
            f"Prior scale underflows {np.dtype(dtype).name} once the data are scaled to unit "
            "spread: it is too small against the data's spread."
        )
    return PriorParams(prior.alpha, prior.kappa, mean, prior.dof, scale)


def transform_of_params(weights, means, covariances, covariance_type: str) -> Transform:
    """The transformation for given parameters: their mixture's centre and overall spread.

    ``FitResult.from_params`` scores and samples about it, as a fit does, so that parameters
    far from the origin keep their digits in float32.
    """
    shift = weights @ means
    full = covariance_type in ("full", "tied")
    var = np.diagonal(covariances, axis1=-2, axis2=-1) if full else covariances
    k, d = means.shape
    var_kd = np.broadcast_to(var if var.ndim == 2 else np.reshape(var, (-1, 1)), (k, d))
    spread = weights @ (var_kd + (means - shift) ** 2)
    return Transform(shift, float(_pow2(np.sqrt(np.exp(np.mean(np.log(spread)))))))


def params_to_working(
    weights, means, covariances, t: Transform, covariance_type: str, dtype, name: str = "{}"
):
    """Mixture parameters of the data as given in the working space, as ``dtype`` arrays.

    Entries given as None stay None. Raises a ValueError naming the parameter (``name``
    formats it) that overflows ``dtype`` there, or whose variances are so small that their
    inverses do.
    """
    dtype = np.dtype(dtype)
    out_w = None if weights is None else np.asarray(weights, dtype)
    out_m = out_c = None
    if means is not None:
        means_w = (np.asarray(means, np.float64) - t.shift) / t.scale
        check_in_range(means_w, dtype, name.format("means"))
        out_m = means_w.astype(dtype)
    if covariances is not None:
        cov_w = np.asarray(covariances, np.float64) / t.scale**2
        check_in_range(cov_w, dtype, name.format("covariances"))
        full = covariance_type in ("full", "tied")
        var = np.diagonal(cov_w, axis1=-2, axis2=-1) if full else cov_w
        check_in_range(
            1.0 / np.min(var), dtype, name.format("covariances") + " (inverse variances)"
        )
        out_c = cov_w.astype(dtype)
    return out_w, out_m, out_c


def params_to_data(weights, means, covariances, precisions_chol, t: Transform):
    """Working-space parameters mapped back to the data as given: float64 NumPy arrays."""
    s = t.scale
    return (
        np.asarray(weights, np.float64),
        t.shift + s * np.asarray(means, np.float64),
        s**2 * np.asarray(covariances, np.float64),
        np.asarray(precisions_chol, np.float64) / s,
    )


def n_covariance_entries(n_components: int, n_features: int, covariance_type: str) -> int:
    k, d = n_components, n_features
    return {"full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": k * d}.get(
        covariance_type, k
    )


def log_prior_jacobian(t: Transform, n_components: int, n_features: int, covariance_type: str):
    """``log p_y(theta_y) - log p_x(theta_x)``: the log-Jacobian of the parameter map."""
    m = n_covariance_entries(n_components, n_features, covariance_type)
    return (n_components * n_features + 2 * m) * t.log_scale
