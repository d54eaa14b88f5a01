"""CPU-independent float64 arithmetic for the behaviour-policy forward and its noise.

Why: the same build command on two machines of one kind gave walker2d-medium data on which one
seed's scores moved by up to 34 points. A float32 MLP forward is not reproducible across CPUs:
BLAS picks kernels (and summation orders, FMA or not) by CPU, and numpy's ``exp``/``tanh`` and
the C library's ``log``/``cos`` have CPU-dispatched variants that differ in the last bit. In a
chaotic system one flipped bit ends in another trajectory.

So every operation here is one that IEEE 754 rounds exactly, whatever the CPU:

- **Matrix products** in block floating point (:func:`exact_matmul`): each row of activations and
  each weight matrix is rounded to 22 significant bits under one shared power of two. A product of
  two such numbers needs at most 44 bits, and a sum of up to 2**9 of them at most 53, so float64
  represents every partial sum exactly and *any* summation order (any BLAS kernel) gives the same
  bits. The rounding changes activations by at most 2**-22 relative to the row's largest entry,
  below float32's resolution of the weights.
- **exp, log, tanh, cos** (:func:`exp`, :func:`log`, :func:`tanh`, :func:`cos_2pi`) from range
  reduction by powers of two (exact) and fixed polynomials evaluated with ``+ - * /``, each
  correctly rounded. Accuracy about 1e-15 relative: far below float32.
- **Normal noise** (:func:`standard_normal`) by Box-Muller on the generator's uniform doubles, which
  PCG64 produces with integer arithmetic only.

numpy's elementwise ``+ - * /``, ``sqrt``, ``rint``, ``ldexp`` and ``frexp`` are correctly rounded
(or exact) in every SIMD variant, and separate ufunc calls are never fused into FMAs.
"""

from __future__ import annotations

import numpy as np

MANTISSA_BITS = 22  # 2 * 22 + log2(max inner size 512) = 53: float64 sums are exact
MAX_INNER = 1 << (53 - 2 * MANTISSA_BITS)

_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact for |k| < 2**20
_LN2_LO = 1.90821492927058770002e-10


def quantize_rows(x: np.ndarray) -> np.ndarray:
    """Round each row of ``x`` to ``MANTISSA_BITS`` significant bits under the row's own exponent."""
    x = np.asarray(x, np.float64)
    peak = np.max(np.abs(x), axis=-1, keepdims=True)
    _, exponent = np.frexp(peak)  # peak < 2**exponent (0 for an all-zero row)
    shift = MANTISSA_BITS - exponent
    return np.ldexp(np.rint(np.ldexp(x, shift)), -shift)


def quantize_matrix(w: np.ndarray) -> np.ndarray:
    """Round a weight matrix to ``MANTISSA_BITS`` significant bits under its largest entry's exponent."""
    w = np.asarray(w, np.float64)
    _, exponent = np.frexp(np.max(np.abs(w)))
    shift = MANTISSA_BITS - int(exponent)
    return np.ldexp(np.rint(np.ldexp(w, shift)), -shift)


def exact_matmul(x: np.ndarray, w_quantized: np.ndarray, quantized: bool = False) -> np.ndarray:
    """``quantize_rows(x) @ w_quantized.T``, bit-identical on every CPU and BLAS.

    ``w_quantized`` must come from :func:`quantize_matrix`; its inner size is at most ``MAX_INNER``.
    ``quantized=True`` says ``x`` already went through :func:`quantize_rows`.
    """
    if w_quantized.shape[1] > MAX_INNER:
        raise ValueError(f"exact_matmul supports inner sizes up to {MAX_INNER}, got {w_quantized.shape[1]}")
    return (x if quantized else quantize_rows(x)) @ w_quantized.T


def _horner(x: np.ndarray, coefficients: tuple[float, ...]) -> np.ndarray:
    """sum_i c_i x**i with the highest coefficient first in evaluation (``coefficients`` low to high)."""
    acc = np.full_like(x, coefficients[-1])
    for c in coefficients[-2::-1]:
        acc = acc * x + c
    return acc


_EXP_TAYLOR = tuple(1.0 / float(np.prod(np.arange(1, k + 1, dtype=np.float64))) for k in range(14))


def exp(x: np.ndarray) -> np.ndarray:
    """e**x for float64 ``x`` in [-700, 700]: x = k ln2 + r, |r| <= ln2/2, Taylor to degree 13."""
    x = np.clip(np.asarray(x, np.float64), -700.0, 700.0)
    k = np.rint(x / (_LN2_HI + _LN2_LO))
    r = (x - k * _LN2_HI) - k * _LN2_LO
    return np.ldexp(_horner(r, _EXP_TAYLOR), k.astype(np.int64))


def log(x: np.ndarray) -> np.ndarray:
    """Natural log of positive float64 ``x``: x = m 2**e with m in [sqrt(1/2), sqrt(2)),
    log m = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172, series to s**27."""
    x = np.asarray(x, np.float64)
    m, e = np.frexp(x)  # m in [0.5, 1)
    low = m < np.sqrt(0.5)
    m = np.where(low, m * 2.0, m)
    e = np.where(low, e - 1, e).astype(np.float64)
    s = (m - 1.0) / (m + 1.0)
    odd = _horner(s * s, tuple(1.0 / (2 * i + 1) for i in range(14)))
    return 2.0 * s * odd + (e * _LN2_HI + e * _LN2_LO)


def tanh(x: np.ndarray) -> np.ndarray:
    """tanh of float64 ``x``: sign(x) (1 - 2 / (e**(2|x|) + 1)); saturates at |x| > 20 like float64."""
    x = np.asarray(x, np.float64)
    a = np.minimum(np.abs(x), 20.0)
    small = a < 0.125  # 1 - 2/(e+1) cancels there: odd Taylor series instead, to x**15
    series = a * _horner(a * a, (1.0, -1 / 3, 2 / 15, -17 / 315, 62 / 2835, -1382 / 155925, 21844 / 6081075))
    large = 1.0 - 2.0 / (exp(2.0 * a) + 1.0)
    return np.copysign(np.where(small, series, large), x)


_SIN_TAYLOR = tuple(
    (-1.0) ** k / float(np.prod(np.arange(1, 2 * k + 2, dtype=np.float64))) for k in range(10)
)
_COS_TAYLOR = tuple(
    (-1.0) ** k / float(np.prod(np.arange(1, 2 * k + 1, dtype=np.float64))) for k in range(10)
)


def cos_2pi(u: np.ndarray) -> np.ndarray:
    """cos(2 pi u) for float64 ``u`` in [0, 1): exact quadrant reduction on u, then Taylor on
    |t| <= pi/4."""
    u = np.asarray(u, np.float64) * 4.0  # exact
    quadrant = np.floor(u + 0.5)
    t = (u - quadrant) * (np.pi / 2)  # u - quadrant is exact; t in [-pi/4, pi/4]
    t2 = t * t
    c = _horner(t2, _COS_TAYLOR)
    s = t * _horner(t2, _SIN_TAYLOR)
    q = quadrant.astype(np.int64) % 4  # cos(t + q pi/2) = cos t, -sin t, -cos t, sin t
    return np.choose(q, (c, -s, -c, s))


def standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """N(0, 1) samples by Box-Muller: sqrt(-2 log u1) cos(2 pi u2), u1 in (0, 1], u2 in [0, 1)."""
    u1 = 1.0 - rng.random(shape)  # (0, 1]: log stays finite
    u2 = rng.random(shape)
    return np.sqrt(-2.0 * log(u1)) * cos_2pi(u2)
