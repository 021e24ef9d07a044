"""Tests for dfm.ops: soft_rank, soft_sort, neural_sort, soft_rank_value_tokens.

Independent references written here:
* ``ref_project``: Blondel et al.'s reduction written from the paper (sort z
  descending, isotonic regression of ``s - w`` by a naive "merge the first
  violating pair, rescan" PAV, then ``s - v``), in plain Python/NumPy;
* ``qp_project`` / ``kl_project``: the Euclidean / entropic projection found by
  enumerating every face of the permutahedron (ordered partitions, n <= 5) and
  taking the feasible closed-form face minimiser with the smallest objective; exact,
  no iterative solver, and it does not use the isotonic reduction at all.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import rankdata

from diffbio_sc.ops import neural_sort, soft_rank, soft_rank_value_tokens, soft_sort


# ----------------------------------------------------------------- references
def ref_isotonic_decreasing(y):
    blocks = [[float(v)] for v in y]
    changed = True
    while changed:
        changed = False
        for i in range(len(blocks) - 1):
            if np.mean(blocks[i]) < np.mean(blocks[i + 1]):
                blocks[i] = blocks[i] + blocks.pop(i + 1)
                changed = True
                break
    return np.concatenate([[np.mean(b)] * len(b) for b in blocks])


def ref_project(z, w):
    """Euclidean projection of z onto the permutahedron of w (Blondel et al., Prop. 3)."""
    z = np.asarray(z, dtype=np.float64)
    sigma = np.argsort(-z, kind="stable")
    s = z[sigma]
    w_desc = np.sort(np.asarray(w, dtype=np.float64))[::-1]
    v = ref_isotonic_decreasing(s - w_desc)
    out = np.empty_like(z)
    out[sigma] = s - v
    return out


def ref_rank(x, eps):
    n = len(x)
    return ref_project(-np.asarray(x, np.float64) / eps, np.arange(n, 0, -1))


def ref_sort(x, eps):
    n = len(x)
    return ref_project(np.arange(n, 0, -1) / eps, x)


def _ordered_partitions(n):
    """Every ordered partition of range(n), as a tuple of block labels 0..k-1."""
    for labels in itertools.product(range(n), repeat=n):
        k = max(labels) + 1
        if set(labels) == set(range(k)):
            yield np.asarray(labels), k


def _in_permutahedron(mu, w, tol=1e-9):
    """Rado's condition: sorted prefix sums of mu never exceed those of w, totals equal."""
    a = np.cumsum(np.sort(mu)[::-1])
    b = np.cumsum(np.sort(np.asarray(w, np.float64))[::-1])
    scale = 1.0 + np.abs(b).max()
    return abs(a[-1] - b[-1]) <= tol * scale and np.all(a <= b + tol * scale)


def _face_project(z, w, kind):
    """Exact projection onto the permutahedron of w by enumerating its faces (n <= 5).

    A face is an ordered partition (B_1, ..., B_k) of the coordinates: mu sums to the
    |B_1| largest w's over B_1, to the next |B_2| over B_2, and so on. The minimiser
    over a face's affine hull has a closed form (``mu = z - c_j`` on B_j for the squared
    distance, ``mu = exp(z - c_j)`` for the entropic objective). The constrained optimum
    lies in the relative interior of one face, where it equals that face's affine
    minimiser, so the feasible candidate with the smallest objective is the optimum.
    No iterative solver and no isotonic reduction are involved.
    """
    z = np.asarray(z, np.float64)
    n = len(z)
    w_desc = np.sort(np.asarray(w, np.float64))[::-1]
    if kind == "l2":
        obj = lambda mu: 0.5 * np.sum((mu - z) ** 2)  # noqa: E731
    else:
        obj = lambda mu: np.sum(mu * (np.log(mu) - 1) - mu * z)  # noqa: E731
    best, best_val = None, np.inf
    for labels, k in _ordered_partitions(n):
        mu = np.empty(n)
        start = 0
        for j in range(k):
            block = labels == j
            size = int(block.sum())
            target = w_desc[start : start + size].sum()
            start += size
            if kind == "l2":
                mu[block] = z[block] - (z[block].sum() - target) / size
            else:
                if target <= 0:
                    break
                zb = z[block]
                mu[block] = np.exp(zb - zb.max()) * target / np.exp(zb - zb.max()).sum()
        else:
            if _in_permutahedron(mu, w_desc):
                val = obj(mu)
                if val < best_val:
                    best, best_val = mu, val
    return best


def qp_project(z, w):
    """Euclidean projection onto the permutahedron of w, by exhaustive face search."""
    return _face_project(z, w, "l2")


def kl_project(z, w):
    """argmin over the permutahedron of <mu, log mu - 1> - <mu, z> (entropic projection)."""
    return _face_project(z, w, "kl")


def test_face_reference_hand_case():
    # z already in the permutahedron's interior direction: projection of (3, 1) onto
    # conv{(1, 2), (2, 1)} is (2, 1); of (0, 0) it is the centre (1.5, 1.5).
    np.testing.assert_allclose(qp_project([3.0, 1.0], [1, 2]), [2.0, 1.0])
    np.testing.assert_allclose(qp_project([0.0, 0.0], [1, 2]), [1.5, 1.5])
    # entropic: equal z gives the centre; z = log w in decreasing order gives w itself
    np.testing.assert_allclose(kl_project([0.0, 0.0, 0.0], [1, 2, 3]), [2.0, 2.0, 2.0])
    np.testing.assert_allclose(kl_project(np.log([3.0, 2.0, 1.0]), [1, 2, 3]), [3, 2, 1])


def np64(a):
    return np.asarray(a, dtype=np.float64)


# ----------------------------------------------------------------- hard limits
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hard_ranks_and_sorts_at_small_temperature(dtype):
    rng = np.random.default_rng(0)
    x = rng.permutation(np.arange(50)).astype(dtype) * 0.5 - 7.0  # distinct, gaps 0.5
    with jax.enable_x64(dtype == np.float64):
        xj = jnp.asarray(x)
        r = soft_rank(xj, temperature=1e-3)
        assert r.dtype == dtype
        np.testing.assert_array_equal(np.asarray(r), rankdata(-x))
        np.testing.assert_array_equal(
            np.asarray(soft_rank(xj, temperature=1e-3, descending=False)), rankdata(x)
        )
        s = soft_sort(xj, temperature=1e-3)
        assert s.dtype == dtype
        np.testing.assert_array_equal(np.asarray(s), np.sort(x)[::-1])
        np.testing.assert_array_equal(
            np.asarray(soft_sort(xj, temperature=1e-3, descending=False)), np.sort(x)
        )
        # entropic ranks have the same hard limit
        np.testing.assert_allclose(
            np.asarray(soft_rank(xj, temperature=1e-3, regularization="kl")),
            rankdata(-x),
            atol=1e-5,
        )


def test_large_temperature_limits():
    x = jnp.array([3.0, -1.0, 0.5, 10.0, 2.0])
    np.testing.assert_allclose(np.asarray(soft_rank(x, temperature=1e6)), 3.0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(soft_sort(x, temperature=1e6)), 2.9, atol=1e-4)
    np.testing.assert_allclose(
        np.asarray(soft_rank(x, temperature=1e6, regularization="kl")), 3.0, atol=1e-4
    )


def test_hand_computed_case():
    # x = (0, 1, 3), eps = 1.5: hard ranks (3, 2, 1); in descending order the
    # values 3 and 1 differ by 2 > 1.5 (kept), 1 and 0 by 1 < 1.5 (pooled):
    # pooled ranks 2.5 -/+ (1 - 0) / (2 * 1.5).
    r = np.asarray(soft_rank(jnp.array([0.0, 1.0, 3.0]), temperature=1.5))
    np.testing.assert_allclose(r, [2.5 + 1 / 3, 2.5 - 1 / 3, 1.0], rtol=1e-6)
    # sort of (0, 1, 3) with eps = 0.7: 0.7 * (3 - 1) > 1 pools 3 and 1 around
    # their mean 2 with step 1 / eps: (2 + 0.5 / 0.7, 2 - 0.5 / 0.7); then
    # 0.7 * (2 - 0) = 1.4 < (2 + 1) / 2 keeps 0 apart.
    s = np.asarray(soft_sort(jnp.array([0.0, 1.0, 3.0]), temperature=0.7))
    np.testing.assert_allclose(s, [2 + 0.5 / 0.7, 2 - 0.5 / 0.7, 0.0], rtol=1e-6)


# ----------------------------------------------------------------- references
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_matches_qp_on_permutahedron(n):
    rng = np.random.default_rng(n)
    with jax.enable_x64(True):
        for eps in (0.3, 1.0, 4.0):
            x = rng.normal(size=n)
            np.testing.assert_allclose(
                np.asarray(soft_rank(jnp.asarray(x), temperature=eps)),
                qp_project(-x / eps, np.arange(1, n + 1)),
                atol=1e-9,
            )
            np.testing.assert_allclose(
                np.asarray(soft_sort(jnp.asarray(x), temperature=eps)),
                qp_project(np.arange(n, 0, -1) / eps, x),
                atol=1e-9,
            )


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_kl_rank_matches_entropic_projection(n):
    rng = np.random.default_rng(10 + n)
    with jax.enable_x64(True):
        for eps in (0.5, 2.0):
            x = rng.normal(size=n)
            np.testing.assert_allclose(
                np.asarray(soft_rank(jnp.asarray(x), temperature=eps, regularization="kl")),
                kl_project(-x / eps, np.arange(1, n + 1)),
                atol=1e-9,
            )


finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    x=st.lists(finite, min_size=1, max_size=25),
    log_eps=st.floats(-2, 1.5),
)
def test_matches_reference_pav_property(x, log_eps):
    eps = float(10**log_eps)
    x = np.asarray(x, np.float64)
    with jax.enable_x64(True):
        r = np.asarray(soft_rank(jnp.asarray(x), temperature=eps))
        s = np.asarray(soft_sort(jnp.asarray(x), temperature=eps))
    np.testing.assert_allclose(r, ref_rank(x, eps), rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(s, ref_sort(x, eps), rtol=1e-9, atol=1e-7 * (1 + np.abs(x).max()))
    n = len(x)
    # ranks lie in the permutahedron of 1..n; sorts keep the sum and are descending
    assert abs(r.sum() - n * (n + 1) / 2) < 1e-8 * n * n
    assert r.min() >= 1 - 1e-9 and r.max() <= n + 1e-9
    assert abs(s.sum() - x.sum()) < 1e-8 * (1 + np.abs(x).sum())
    assert np.all(np.diff(s) <= 1e-9 * (1 + np.abs(x).max()))
    # soft ranks preserve the order of the values (larger value, smaller rank)
    order = np.argsort(-x, kind="stable")
    assert np.all(np.diff(r[order]) >= -1e-9)


@settings(max_examples=30, deadline=None)
@given(
    data=st.lists(st.tuples(finite, st.booleans()), min_size=1, max_size=20),
    log_eps=st.floats(-2, 1),
)
def test_masked_equals_compressed_property(data, log_eps):
    eps = float(10**log_eps)
    x = np.asarray([v for v, _ in data], np.float64)
    mask = np.asarray([m for _, m in data], bool)
    with jax.enable_x64(True):
        r = np.asarray(soft_rank(jnp.asarray(x), temperature=eps, mask=jnp.asarray(mask)))
        s = np.asarray(soft_sort(jnp.asarray(x), temperature=eps, mask=jnp.asarray(mask)))
    np.testing.assert_array_equal(r[~mask], 0.0)
    k = int(mask.sum())
    np.testing.assert_array_equal(s[k:], 0.0)
    if k:
        np.testing.assert_allclose(r[mask], ref_rank(x[mask], eps), rtol=1e-9, atol=1e-8)
        np.testing.assert_allclose(
            s[:k], ref_sort(x[mask], eps), rtol=1e-9, atol=1e-7 * (1 + np.abs(x).max())
        )


# ----------------------------------------------------------------- gradients
def _fd_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in range(len(x)):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


@pytest.mark.parametrize(
    ("fn", "kwargs"),
    [
        (soft_rank, {}),
        (soft_rank, {"descending": False}),
        (soft_rank, {"regularization": "kl"}),
        (soft_sort, {}),
        (soft_sort, {"descending": False}),
    ],
)
def test_gradients_match_finite_differences_float64(fn, kwargs):
    rng = np.random.default_rng(3)
    n = 12
    x = rng.normal(size=n) * 2
    w = rng.normal(size=n)
    eps = 0.7 if fn is soft_rank else 0.8
    with jax.enable_x64(True):
        wj = jnp.asarray(w)

        def loss(xx, t=eps):
            return jnp.sum(wj * fn(xx, temperature=t, **kwargs))

        out = np.asarray(fn(jnp.asarray(x), temperature=eps, **kwargs))
        hard = np.asarray(fn(jnp.asarray(x), temperature=1e-6, **kwargs))
        # the case must pool some entries, or the test would only check a permutation
        assert not np.allclose(np.sort(out), np.sort(hard), atol=1e-3)
        g = np.asarray(jax.grad(loss)(jnp.asarray(x)))
        g_fd = _fd_grad(lambda v: float(loss(jnp.asarray(v))), x)
        np.testing.assert_allclose(g, g_fd, rtol=1e-6, atol=1e-7)
        gt = float(jax.grad(loss, argnums=1)(jnp.asarray(x), jnp.asarray(eps)))
        gt_fd = (
            float(loss(jnp.asarray(x), eps + 1e-6)) - float(loss(jnp.asarray(x), eps - 1e-6))
        ) / 2e-6
        np.testing.assert_allclose(gt, gt_fd, rtol=1e-5, atol=1e-7)


def test_masked_gradients_match_finite_differences():
    rng = np.random.default_rng(4)
    x = np.abs(rng.normal(size=10)) * 2
    x[[1, 4, 7]] = 0.0
    mask = x > 0
    w = rng.normal(size=10)
    with jax.enable_x64(True):
        for fn in (soft_rank, soft_sort):

            def loss(xx, fn=fn):
                return jnp.sum(jnp.asarray(w) * fn(xx, temperature=0.6, mask=jnp.asarray(mask)))

            g = np.asarray(jax.grad(loss)(jnp.asarray(x)))
            np.testing.assert_array_equal(g[~mask], 0.0)
            np.testing.assert_allclose(
                g, _fd_grad(lambda v: float(loss(jnp.asarray(v))), x), rtol=1e-6, atol=1e-7
            )


def test_gradient_structure_hard_limit_and_n1():
    # away from ties, at small temperature ranks are locally constant: zero gradient
    x = jnp.array([0.3, 2.0, -1.0, 5.0])
    g = jax.grad(lambda v: jnp.sum(soft_rank(v, temperature=1e-3) * jnp.arange(4.0)))(x)
    np.testing.assert_array_equal(np.asarray(g), 0.0)
    # hard sort: the gradient routes each output's cotangent to its source entry
    gs = jax.grad(lambda v: jnp.sum(soft_sort(v, temperature=1e-3) * jnp.arange(4.0)))(x)
    np.testing.assert_array_equal(np.asarray(gs), [2.0, 1.0, 3.0, 0.0])
    one = jnp.array([4.2])
    assert soft_rank(one).tolist() == [1.0]
    assert soft_sort(one).tolist() == [pytest.approx(4.2)]
    assert jax.grad(lambda v: soft_rank(v)[0])(one).tolist() == [0.0]
    assert jax.grad(lambda v: soft_sort(v)[0])(one).tolist() == [1.0]
    assert soft_rank(jnp.zeros((3, 0))).shape == (3, 0)


# ----------------------------------------------------------------- symmetries and ties
def test_permutation_equivariance():
    rng = np.random.default_rng(5)
    x = rng.normal(size=40).astype(np.float32)
    p = rng.permutation(40)
    for eps in (0.05, 0.5, 3.0):
        r = np.asarray(soft_rank(jnp.asarray(x), temperature=eps))
        rp = np.asarray(soft_rank(jnp.asarray(x[p]), temperature=eps))
        np.testing.assert_allclose(rp, r[p], rtol=1e-6)
        s = np.asarray(soft_sort(jnp.asarray(x), temperature=eps))
        sp_ = np.asarray(soft_sort(jnp.asarray(x[p]), temperature=eps))
        np.testing.assert_allclose(sp_, s, rtol=1e-6, atol=1e-6)


def test_ties_share_ranks_at_every_temperature():
    x = jnp.array([2.0, 5.0, 2.0, 1.0, 5.0, 5.0])
    for eps in (1e-4, 0.3, 2.0):
        r = np.asarray(soft_rank(x, temperature=eps))
        assert r[0] == r[2]
        assert r[1] == r[4] == r[5]
    np.testing.assert_array_equal(
        np.asarray(soft_rank(x, temperature=1e-4)), rankdata(-np.asarray(x))
    )
    np.testing.assert_array_equal(
        np.asarray(soft_sort(x, temperature=1e-4)), [5.0, 5.0, 5.0, 2.0, 2.0, 1.0]
    )
    # the Jacobian averages within the pooled block {5, 5, 5} (eps = 1):
    # d rank_1 / d x_j = (1/3 - [j == 1]) / eps
    g = np.asarray(jax.grad(lambda v: soft_rank(v, temperature=1.0)[1])(x))
    np.testing.assert_allclose(g, [0, -2 / 3, 0, 0, 1 / 3, 1 / 3], rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------- transformations
def test_jit_vmap_grad_agree_with_rowwise():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(5, 30)).astype(np.float32)
    W = rng.normal(size=(5, 30)).astype(np.float32)

    def row_loss(x, w):
        return jnp.sum(w * soft_rank(x, temperature=0.3)) + jnp.sum(
            w * soft_sort(x, temperature=0.3)
        )

    batched = jax.jit(jax.vmap(jax.grad(row_loss)))(jnp.asarray(X), jnp.asarray(W))
    for i in range(5):
        gi = jax.grad(row_loss)(jnp.asarray(X[i]), jnp.asarray(W[i]))
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(gi), rtol=1e-5, atol=1e-6)
    # a 2-D input ranks each row (same as vmap), also nested vmap over a 3-D stack
    r2 = soft_rank(jnp.asarray(X), temperature=0.3)
    rv = jax.vmap(lambda x: soft_rank(x, temperature=0.3))(jnp.asarray(X))
    np.testing.assert_allclose(np.asarray(r2), np.asarray(rv), rtol=1e-6)
    X3 = jnp.asarray(X.reshape(1, 5, 30))
    rvv = jax.vmap(jax.vmap(lambda x: soft_rank(x, temperature=0.3)))(X3)
    np.testing.assert_allclose(np.asarray(rvv[0]), np.asarray(r2), rtol=1e-6)
    # vmap over the temperature, with a gradient through it
    temps = jnp.array([0.1, 1.0, 10.0])
    rt = jax.vmap(lambda t: soft_rank(jnp.asarray(X[0]), temperature=t))(temps)
    for k, t in enumerate([0.1, 1.0, 10.0]):
        np.testing.assert_allclose(
            np.asarray(rt[k]), np.asarray(soft_rank(jnp.asarray(X[0]), temperature=t)), rtol=1e-6
        )
    gt = jax.grad(lambda t: jnp.sum(soft_rank(jnp.asarray(X), temperature=t) * jnp.asarray(W)))(1.0)
    assert np.isfinite(float(gt)) and float(gt) != 0.0


def test_float64_preserved_and_integer_input():
    with jax.enable_x64(True):
        x = jnp.asarray(np.array([1.0, 3.0, 2.0]))
        assert soft_rank(x).dtype == jnp.float64
        assert soft_sort(x).dtype == jnp.float64
    r = soft_rank(jnp.array([1, 3, 2]), temperature=1e-3)
    assert r.dtype == jnp.float32
    assert r.tolist() == [3.0, 1.0, 2.0]


# ----------------------------------------------------------------- masked ranking
def test_masked_rank_equals_rank_of_masked_entries():
    rng = np.random.default_rng(7)
    X = np.where(rng.random((6, 40)) < 0.6, 0.0, rng.gamma(2.0, 2.0, (6, 40))).astype(np.float32)
    X[2] = 0.0  # an empty row
    X[3, :] = rng.gamma(2.0, 2.0, 40)  # a full row
    mask = X > 0
    for eps in (1e-3, 0.5):
        R = np.asarray(jax.jit(lambda x, m, t: soft_rank(x, temperature=t, mask=m))(X, mask, eps))
        S = np.asarray(soft_sort(jnp.asarray(X), temperature=eps, mask=jnp.asarray(mask)))
        for i in range(6):
            m = mask[i]
            np.testing.assert_array_equal(R[i, ~m], 0.0)
            k = int(m.sum())
            if k:
                expected = np.asarray(soft_rank(jnp.asarray(X[i, m]), temperature=eps))
                np.testing.assert_allclose(R[i, m], expected, rtol=1e-6)
                np.testing.assert_allclose(
                    S[i, :k],
                    np.asarray(soft_sort(jnp.asarray(X[i, m]), temperature=eps)),
                    rtol=1e-6,
                )
            np.testing.assert_array_equal(S[i, k:], 0.0)
    # hard limit: ranks among the nonzeros only, zeros do not shift them
    R0 = np.asarray(soft_rank(jnp.asarray(X), temperature=1e-4, mask=jnp.asarray(mask)))
    for i in (0, 1, 3):
        np.testing.assert_array_equal(R0[i, mask[i]], rankdata(-X[i, mask[i]]))
    # vmap with a different number of masked entries per row
    Rv = jax.vmap(lambda x, m: soft_rank(x, temperature=0.5, mask=m))(X, mask)
    np.testing.assert_allclose(
        np.asarray(Rv),
        np.asarray(soft_rank(jnp.asarray(X), temperature=0.5, mask=jnp.asarray(mask))),
        rtol=1e-6,
    )
    # broadcast mask
    col = mask[0]
    Rb = np.asarray(soft_rank(jnp.asarray(X), temperature=0.5, mask=jnp.asarray(col)))
    np.testing.assert_array_equal(Rb[:, ~col], 0.0)


def test_masked_zero_gradient_under_jit_vmap():
    X = jnp.array([[0.0, 2.0, 1.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    W = jnp.array([[1.0, -2.0, 0.5, 3.0], [1.0, 1.0, 1.0, 1.0]])

    def loss(x, w):
        return jnp.sum(w * soft_rank(x, temperature=2.0, mask=x > 0))

    g = np.asarray(jax.jit(jax.vmap(jax.grad(loss)))(X, W))
    np.testing.assert_array_equal(g[0, [0, 3]], 0.0)
    np.testing.assert_array_equal(g[1], 0.0)  # one masked entry: rank is constant 1
    assert np.abs(g[0, 1:3]).sum() > 0


# ----------------------------------------------------------------- errors
def test_invalid_arguments():
    x = jnp.array([1.0, 2.0])
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            soft_rank(x, temperature=bad)
    with pytest.raises(ValueError, match="scalar"):
        soft_rank(x, temperature=jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="regularization"):
        soft_rank(x, regularization="l1")
    with pytest.raises(ValueError, match="l2"):
        soft_sort(x, regularization="kl")
    with pytest.raises(TypeError, match="boolean"):
        soft_rank(x, mask=jnp.array([1, 0]))
    with pytest.raises(ValueError, match="broadcast"):
        soft_rank(x, mask=jnp.array([True, False, True]))
    with pytest.raises(ValueError, match="at least one axis"):
        soft_rank(jnp.array(1.0))
    # a temperature outside the dtype's normal range would be flushed to 0 (NaN
    # gradients, ties no longer pooled) or become infinite: refused
    for fn in (soft_rank, soft_sort, neural_sort):
        for bad in (1e-40, 1e39):
            with pytest.raises(ValueError, match="not representable in float32"):
                fn(x, temperature=bad)
    with pytest.raises(ValueError, match="not representable"):
        soft_rank_value_tokens(x, max_tokens=1, temperature=1e-40)
    with jax.enable_x64(True):  # fine in float64: ties pooled, finite gradient
        x64 = jnp.asarray(np.array([1.0, 1.0, 3.0]))
        assert soft_rank(x64, temperature=1e-40).tolist() == [2.5, 2.5, 1.0]
        g = jax.grad(lambda v: soft_rank(v, temperature=1e-40)[0])(x64)
        assert np.all(np.isfinite(np.asarray(g)))


# ----------------------------------------------------------------- neural sort
@pytest.mark.slow  # fast-suite budget: runs in the slow CI step
def test_neural_sort_properties_and_agreement():
    rng = np.random.default_rng(8)
    x = rng.permutation(20).astype(np.float32)
    P = np.asarray(neural_sort(jnp.asarray(x), temperature=1e-2))
    assert P.shape == (20, 20)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(P, np.eye(20)[np.argsort(-x)], atol=1e-6)
    ranks = P.T @ np.arange(1, 21)
    np.testing.assert_allclose(
        ranks, np.asarray(soft_rank(jnp.asarray(x), temperature=1e-3)), atol=1e-4
    )
    # soft: rows are proper distributions, and it is differentiable under vmap
    Pb = jax.vmap(lambda v: neural_sort(v, temperature=5.0))(jnp.asarray(np.stack([x, -x])))
    assert Pb.shape == (2, 20, 20)
    assert np.all(np.asarray(Pb) > 0)
    g = jax.grad(lambda v: jnp.sum(neural_sort(v, temperature=5.0) @ v))(jnp.asarray(x))
    assert np.all(np.isfinite(np.asarray(g)))


# ----------------------------------------------------------------- soft tokens
def test_soft_tokens_basic_contract():
    values = jnp.array([[0.0, 4.0, 1.0, 4.0, 0.5, 0.0, 9.0]])
    ranks, keep = soft_rank_value_tokens(values, max_tokens=3, temperature=1e-4)
    r = np.asarray(ranks)[0]
    k = np.asarray(keep)[0]
    # 9 -> 0; the tie 4.0/4.0 keeps gene order -> 1 (gene 1), 2 (gene 3); 1.0 -> 3; 0.5 -> 4
    np.testing.assert_allclose(r, [7, 1, 3, 2, 4, 7, 0], atol=1e-5)
    assert np.all((k >= 0) & (k <= 1))
    np.testing.assert_array_equal(k[[0, 5]], 0.0)
    kept = np.flatnonzero(k > 0.5)
    np.testing.assert_array_equal(kept[np.argsort(r[kept])], [6, 1, 3])

    # at a finite temperature the tie is still split by gene order, and the
    # gradient reaches only the masked genes
    def loss(v):
        rr, kk = soft_rank_value_tokens(v, max_tokens=3, temperature=0.5, keep_temperature=1.0)
        return jnp.sum(kk * jnp.arange(7.0)) + jnp.sum(jnp.where(v > 0, rr, 0) ** 2)

    g = np.asarray(jax.jit(jax.grad(loss))(values))[0]
    np.testing.assert_array_equal(g[[0, 5]], 0.0)
    assert np.abs(g).sum() > 0
    r_soft = np.asarray(soft_rank_value_tokens(values, max_tokens=3, temperature=0.5)[0])[0]
    assert r_soft[1] < r_soft[3]
    # custom mask overrides values > 0
    m = jnp.asarray(np.array([[True, True, False, True, True, True, True]]))
    r_m = np.asarray(soft_rank_value_tokens(values, m, max_tokens=3, temperature=1e-4)[0])[0]
    np.testing.assert_allclose(r_m[[2, 0, 5]], [7, 4, 5], atol=1e-5)
    with pytest.raises(ValueError, match="max_tokens"):
        soft_rank_value_tokens(values, max_tokens=0)
    with pytest.raises(TypeError, match="max_tokens"):
        soft_rank_value_tokens(values, max_tokens=2.5)


def test_tie_group_pools_like_a_heavy_block():
    # gap 1 between 2.0 and a group of 5 tied 1.0s: with temperature 0.5 < gap the pair
    # (singleton, group of 5) still pools, since 1 < 0.5 * (1 + 5) / 2; at 0.3 it does not
    x = jnp.array([2.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(np.asarray(soft_rank(x, temperature=0.3)), [1, 4, 4, 4, 4, 4])
    r = np.asarray(soft_rank(x, temperature=0.5))
    # pooled block of 6: mean rank 3.5, rank_j = 3.5 + (mean(x) - x_j) / 0.5
    np.testing.assert_allclose(r, 3.5 + (7.0 / 6.0 - np.asarray(x)) / 0.5, rtol=1e-6)
    assert r[0] > 1.0


def test_soft_tokens_converge_to_pp_tokenize():
    """Hard limit == the public tokenizer ``dfm.pp.tokenize`` (geneformer_v1, default vocab)."""
    import diffbio_sc as dfm

    adata = dfm.datasets.synthetic_counts(40, 300, seed=1)
    rng = np.random.default_rng(9)
    median = rng.choice([0.5, 1.0, 2.0, 3.0], size=300)  # repeated medians -> exact ties
    median[rng.choice(300, 20, replace=False)] = 0.0  # no positive median: excluded genes
    adata.var["med"] = median
    max_tokens = 200  # cells express about 160-235 usable genes: some are truncated
    dfm.pp.tokenize(adata, gene_medians="med", max_tokens=max_tokens)
    tokens = np.asarray(adata.obsm["dfm_tokens"])
    n_tokens = adata.obs["dfm_n_tokens"].to_numpy()
    n_special = len(adata.uns["dfm"]["tokenizer"]["dfm_tokens"]["special_token_ids"])
    # the documented normalisation, written here: counts / cell total * 10,000 / median
    # (float64), compared in float32
    X = adata.X.toarray().astype(np.float64)
    scale = np.where(median > 0, 1.0 / np.where(median > 0, median, 1.0), 0.0)
    values = (X / X.sum(axis=1, keepdims=True) * 10_000.0 * scale).astype(np.float32)
    assert any(len(np.unique(v[v > 0])) < (v > 0).sum() for v in values)  # ties occur
    assert (n_tokens == max_tokens).any() and (n_tokens < max_tokens).any()
    # exactly hard once temperature * (c1 + c2) / 2 < gap for adjacent distinct values
    # (c = tie-group sizes): smallest gap / largest tie group is enough
    bounds = []
    for v in values:
        distinct, counts = np.unique(v[v > 0], return_counts=True)
        bounds.append(np.diff(distinct).min() / counts.max())
    eps = 0.5 * min(bounds)
    ranks, keep = jax.jit(
        lambda v: soft_rank_value_tokens(v, max_tokens=max_tokens, temperature=eps)
    )(values)
    ranks, keep = np.asarray(ranks), np.asarray(keep)
    for i in range(values.shape[0]):
        kept = np.flatnonzero(keep[i] > 0.5)
        ordered = kept[np.argsort(ranks[i, kept], kind="stable")]
        expected = tokens[i, : n_tokens[i]] - n_special  # default vocab: gene j -> j + 4
        np.testing.assert_array_equal(ordered, expected)
        np.testing.assert_allclose(ranks[i, expected], np.arange(n_tokens[i]), atol=1e-3)
