"""Eager checks at the public boundary, outside ``jit``: clear ValueErrors, never NaN results.

Nothing here or downstream writes to the arrays it is given, so the caller's arrays are never
modified. Other than ``check_X``, every function copies what it returns; ``check_X`` copies only
to convert, so a data set already in the working dtype is not duplicated (1e6 x 16 float64 is
128 MB).
"""

from __future__ import annotations

import numbers

import numpy as np

from .init import INIT_ALIASES, INIT_METHODS
from .params import COVARIANCE_TYPES


def _refuse_complex_or_masked(value, name: str) -> None:
    """Complex values would lose their imaginary part, a mask would be ignored: refuse both."""
    if isinstance(value, np.ma.MaskedArray):
        raise ValueError(
            f"{name} is a masked array; masks are not supported (the masked entries would be "
            "used as data). Remove or impute the masked entries and pass a plain array "
            "(e.g. numpy.ma.compress_rows or .filled(...))."
        )
    dt = getattr(value, "dtype", None)
    if dt is None and not isinstance(value, (int, float, np.ndarray)):
        try:
            dt = np.asarray(value).dtype
        except (TypeError, ValueError):  # ragged or not numeric: the conversion names it
            return
    if (
        dt is not None
        and np.issubdtype(np.dtype(dt), np.complexfloating)
        or isinstance(value, complex)
    ):
        raise ValueError(
            f"{name} has a complex dtype; only real numbers are supported (the imaginary part "
            "would be lost). Pass the real and imaginary parts as separate columns if both "
            "matter."
        )


def check_X(X, name: str = "X", n_features: int | None = None, dtype=None) -> np.ndarray:
    """``X`` of shape (n_samples, n_features), converted only if needed (read-only).

    1-D input is one feature. ``dtype=None`` keeps float32 and float64 input as it is and
    converts anything else to float64: the fits centre and scale the data in float64 on the
    host before casting them to the working precision (:func:`bayesgmm._transform.fit_transform`),
    so float64 data are never cast to float32 here. Complex and masked input are refused.
    """
    _refuse_complex_or_masked(X, name)
    try:
        if dtype is None:
            arr = np.asarray(X)
            if arr.dtype not in (np.float32, np.float64):
                arr = np.asarray(X, dtype=np.float64)
        else:
            arr = np.asarray(X, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array, could not convert it: {exc}") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 1-D array (n_samples,) or a 2-D array (n_samples, n_features), "
            f"got an array with {arr.ndim} dimensions and shape {arr.shape}."
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"{name} must have at least one row and one column, got shape {arr.shape}."
        )
    # A NaN or infinity makes the sum non-finite; only then (or on overflow) look element-wise.
    if not np.isfinite(np.sum(arr)) and not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        if dtype is not None and np.all(np.isfinite(np.asarray(X, np.float64))):
            raise ValueError(
                f"{name} overflows {np.dtype(dtype).name}: {bad} value(s) exceed its range "
                f"(largest magnitude {np.max(np.abs(np.asarray(X, np.float64))):.3g})."
            )
        raise ValueError(
            f"{name} contains {bad} NaN or infinite value(s); remove or impute them first."
        )
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features, but the mixture was fitted with "
            f"{n_features} features."
        )
    return arr


def check_sample_weight(sample_weight, n_samples: int) -> np.ndarray:
    """A float64 copy of non-negative weights of shape (n_samples,), not all zero."""
    if sample_weight is None:
        return np.ones(n_samples)
    _refuse_complex_or_masked(sample_weight, "sample_weight")
    try:
        w = np.array(sample_weight, dtype=np.float64, copy=True)
    except (TypeError, ValueError):
        raise ValueError("sample_weight must be a numeric array of shape (n_samples,).") from None
    if w.ndim == 0:
        w = np.full(n_samples, float(w))
    if w.shape != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},), got shape {w.shape}.")
    if not np.all(np.isfinite(w)):
        raise ValueError("sample_weight contains NaN or infinite values.")
    if np.any(w < 0):
        raise ValueError(f"sample_weight must be non-negative, got a minimum of {w.min()}.")
    if not np.any(w > 0):
        raise ValueError("sample_weight must have at least one positive entry, got all zeros.")
    return w


def check_n_components(n_components) -> int:
    if isinstance(n_components, bool) or not isinstance(n_components, numbers.Integral):
        raise ValueError(f"n_components must be a positive integer, got {n_components!r}.")
    if n_components < 1:
        raise ValueError(f"n_components must be at least 1, got {n_components}.")
    return int(n_components)


def check_covariance_type(covariance_type) -> str:
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type must be one of {', '.join(map(repr, COVARIANCE_TYPES))}, "
            f"got {covariance_type!r}."
        )
    return covariance_type


def check_init(init) -> str:
    """The init method's name; scikit-learn's spelling ``"k-means++"`` means ``"kmeans++"``."""
    if isinstance(init, str) and init in INIT_ALIASES:
        return INIT_ALIASES[init]
    if init not in INIT_METHODS:
        names = (*INIT_METHODS, *INIT_ALIASES)
        raise ValueError(f"init must be one of {', '.join(map(repr, names))}, got {init!r}.")
    return init


def check_nonnegative_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
    return int(value)


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def check_nonnegative_float(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a non-negative number, got {value!r}.") from None
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}.")
    return v


def check_enough_samples(n_samples: int, sample_weight: np.ndarray, n_components: int) -> None:
    if n_components > n_samples:
        raise ValueError(
            f"n_components={n_components} must not exceed n_samples={n_samples}: "
            "a mixture needs at least one row per component."
        )
    if n_components > int(np.sum(sample_weight > 0)):
        raise ValueError(
            f"n_components={n_components} exceeds the {int(np.sum(sample_weight > 0))} rows "
            "with positive sample_weight."
        )


def check_init_params(
    init_params, n_components: int, n_features: int, covariance_type: str, partial: bool = False
):
    """Validated copies (weights, means, covariances) of user-given starting parameters.

    With ``partial=True`` any non-empty subset of the three keys may be given; the missing ones
    come back as None. See :func:`check_params` for the checks.
    """
    names = ("weights", "means", "covariances")
    if not isinstance(init_params, dict):
        raise ValueError(
            "init_params must be a dict with keys 'weights', 'means', 'covariances', "
            f"got {type(init_params).__name__}."
        )
    unknown = set(init_params) - set(names)
    if unknown:
        raise ValueError(
            f"init_params has unknown keys {sorted(map(str, unknown))}; expected a subset of "
            "'weights', 'means', 'covariances'."
        )
    missing = set(names) - set(init_params)
    if missing and not partial:
        raise ValueError(
            f"init_params is missing {sorted(missing)}; it needs weights, means, covariances."
        )
    if len(missing) == len(names):
        raise ValueError("init_params must give at least one of weights, means, covariances.")
    return check_params(
        *(init_params.get(key) for key in names),
        n_components,
        n_features,
        covariance_type,
        name="init_params['{}']",
        zero_weights=False,
    )


def check_params(
    weights,
    means,
    covariances,
    n_components: int,
    n_features: int | None,
    covariance_type: str,
    *,
    name: str = "{}",
    zero_weights: bool = True,
):
    """Validated float64 copies (weights, means, covariances) of mixture parameters.

    Shapes (scikit-learn's; 1-D means and, for D = 1, (K,) full covariances are accepted),
    finite values, real (not complex) and unmasked, weights non-negative (positive unless
    ``zero_weights``) and summing to 1 (then renormalised), covariances symmetric positive
    definite (then symmetrised). Symmetry and the weights' sum are checked with a tolerance
    scaled to the precision of the given array (``100 eps``, at least 1e-8 and 1e-6), so that a
    float32 fit's own parameters pass. ``n_features`` None takes D from ``means``; ``name``
    formats each parameter's name into the messages. An entry given as None stays None.
    """
    names = ("weights", "means", "covariances")
    k = n_components
    out = dict.fromkeys(names)
    eps = {}
    for key, value in zip(names, (weights, means, covariances), strict=True):
        if value is None:
            continue
        _refuse_complex_or_masked(value, name.format(key))
        try:
            given = np.asarray(value)
            out[key] = np.array(given, dtype=np.float64, copy=True)
        except (TypeError, ValueError):
            raise ValueError(f"{name.format(key)} must be a numeric array.") from None
        # The precision the numbers were given in (float64 for anything not a float).
        eps[key] = float(np.finfo(given.dtype if given.dtype.kind == "f" else np.float64).eps)
    if n_features is None:
        m = out["means"]
        n_features = 1 if m.ndim == 1 else (m.shape[1] if m.ndim == 2 else -1)
        if n_features < 1:
            raise ValueError(
                f"{name.format('means')} must have shape (n_components, n_features), "
                f"got shape {m.shape}."
            )
    d = n_features
    shapes = {
        "weights": (k,),
        "means": (k, d),
        "covariances": {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[
            covariance_type
        ],
    }
    for key, shape in shapes.items():
        arr = out[key]
        if arr is None:
            continue
        if key == "means" and d == 1 and arr.shape == (k,):
            arr = arr[:, None]
        if key == "covariances" and d == 1 and arr.shape == (k,):
            arr = arr.reshape(shape)
        if arr.shape != shape:
            raise ValueError(
                f"{name.format(key)} must have shape {shape} for n_components={k}, "
                f"n_features={d}, covariance_type={covariance_type!r}; got shape {arr.shape}."
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name.format(key)} contains NaN or infinite values.")
        out[key] = arr
    w = out["weights"]
    if w is not None:
        atol = max(1e-6, 100 * k * eps["weights"])
        low_ok = np.all(w >= 0) if zero_weights else np.all(w > 0)
        if not low_ok or not np.isclose(w.sum(), 1.0, rtol=0, atol=atol):
            sign = "non-negative" if zero_weights else "positive"
            raise ValueError(
                f"{name.format('weights')} must be {sign} and sum to 1 (within {atol:.1e}), "
                f"got sum {w.sum():.6g} and minimum {w.min():.6g}."
            )
        out["weights"] = w / w.sum()
    cov = out["covariances"]
    cname = name.format("covariances")
    if cov is None:
        pass
    elif covariance_type in ("full", "tied"):
        mats = cov if covariance_type == "full" else cov[None]
        rtol = max(1e-8, 100 * eps["covariances"])
        for i, m in enumerate(mats):
            scale = np.max(np.abs(m))
            if np.max(np.abs(m - m.T)) > rtol * scale or not _is_pd(m):
                where = f"[{i}]" if covariance_type == "full" else ""
                raise ValueError(
                    f"{cname}{where} must be symmetric positive definite (symmetric to a "
                    f"relative {rtol:.1e}); got a matrix that is not."
                )
        cov = (cov + np.swapaxes(cov, -1, -2)) / 2
    elif np.any(cov <= 0):
        raise ValueError(
            f"{cname} (variances) must be positive, got a minimum of {float(cov.min()):.6g}."
        )
    return out["weights"], out["means"], cov


def _is_pd(m: np.ndarray) -> bool:
    try:
        np.linalg.cholesky(m)
        return True
    except np.linalg.LinAlgError:
        return False


def _is_int_seed(rng_key) -> bool:
    return isinstance(rng_key, (int, np.integer)) and not isinstance(rng_key, (bool, np.bool_))


def check_rng_key(rng_key, name: str = "rng_key"):
    """A PRNG key for every entry point, validated at the boundary.

    - An int seed of any size (negative, or beyond 64 bits) is taken modulo 2**64 and split
      into two 32-bit words ``[seed // 2**32, seed % 2**32]``: the raw threefry key that
      ``jax.random.PRNGKey(seed)`` builds for ``0 <= seed < 2**64`` with x64 on (and, for
      ``0 <= seed < 2**31``, also without). Built with NumPy, so the first fit of a process
      compiles nothing for it.
    - A JAX key: a typed key (``jax.random.key``) of shape (), or a raw ``uint32`` key of
      shape (2,) (``jax.random.PRNGKey``), returned unchanged.

    Anything else raises a ValueError naming ``name``.
    """
    import jax  # only here: the other checks are plain NumPy

    if _is_int_seed(rng_key):
        seed = int(rng_key) % 2**64
        words = np.array([seed >> 32, seed & 0xFFFFFFFF], np.uint32)
        impl = str(getattr(jax.config, "jax_default_prng_impl", "threefry2x32"))
        return words if impl == "threefry2x32" else jax.random.PRNGKey(int(words[1] >> 1))
    if isinstance(rng_key, (jax.Array, np.ndarray)):
        dt = rng_key.dtype
        if jax.dtypes.issubdtype(dt, jax.dtypes.prng_key):
            if rng_key.shape != ():
                raise ValueError(
                    f"{name} must be a single key, got a typed key array of shape "
                    f"{rng_key.shape}; pass one of them, e.g. {name}[0]."
                )
            return rng_key
        if dt == np.uint32 and rng_key.shape == (2,):
            return rng_key
        raise ValueError(
            f"{name} must be an int seed, a typed key (jax.random.key) of shape () or a raw "
            f"key (jax.random.PRNGKey) of dtype uint32 and shape (2,); got an array of dtype "
            f"{dt} and shape {rng_key.shape}."
        )
    raise ValueError(
        f"{name} must be an int seed or a jax.random key, got {type(rng_key).__name__}."
    )


def as_key(rng_key, name: str = "rng_key"):
    """A JAX PRNG key (a device array) from any form :func:`check_rng_key` accepts."""
    import jax

    key = check_rng_key(rng_key, name)
    return jax.device_put(key) if isinstance(key, np.ndarray) else key


def check_em_prior(prior) -> None:
    """EM needs a Dirichlet concentration of at least 1 (NUTS accepts any positive value)."""
    alpha = getattr(prior, "weight_concentration", None)
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        return  # None (no prior, or "default") or not a number: resolve_prior says which
    if 0 < alpha < 1:
        raise ValueError(
            f"Prior weight_concentration must be >= 1 for EM, got {alpha}: "
            "below 1 the posterior mode lies on the boundary of the simplex. NUTS accepts any "
            "positive value."
        )


def check_em_settings(*, init, n_init, max_iter, tol, rng_key) -> dict:
    """The validated EM settings shared by ``Mixture.fit_em`` and ``select``, as a dict."""
    return dict(
        init=check_init(init),
        n_init=check_positive_int(n_init, "n_init"),
        max_iter=check_nonnegative_int(max_iter, "max_iter"),
        tol=check_nonnegative_float(tol, "tol"),
        rng_key=check_rng_key(rng_key),
    )
