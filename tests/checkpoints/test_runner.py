"""BucketedRunner: order, batch independence, fixed shapes, memory budget."""

from __future__ import annotations

import numpy as np
import pytest

from diffbio_sc.models._runner import BucketedRunner, bucket_edges, plan_batches


def _tokens(n=57, max_len=96, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, max_len + 1, size=n)
    ids = np.zeros((n, max_len), np.int32)
    for i, m in enumerate(lengths):
        ids[i, :m] = rng.integers(1, 50, size=m)
    return ids, lengths


def _fn(_static, params, ids):
    import jax.numpy as jnp

    w = (ids != 0).astype(jnp.float32)
    emb = params["table"][ids] * w[..., None]
    return emb.sum(axis=1), w.sum(axis=1)


def _expected(table, ids):
    w = (ids != 0).astype(np.float64)
    return (table[ids] * w[..., None]).sum(axis=1), w.sum(axis=1)


def test_bucket_edges_cover_and_grow():
    e = bucket_edges(2048)
    assert e[0] == 32 and e[-1] == 2048
    assert all(b > a for a, b in zip(e, e[1:], strict=False))
    assert all(v % 8 == 0 for v in e) and all(v % 64 == 0 for v in e if v > 512)
    assert all(b / a <= 1.4 for a, b in zip(e[:-2], e[1:-1], strict=False))
    assert bucket_edges(5) == [5]


def test_plan_batches_budget_and_partition():
    lengths = np.array([1, 5, 33, 64, 64, 10, 0, 100])
    plan = plan_batches(lengths, [16, 64, 128], max_batch_tokens=128, multiple=2)
    seen = np.concatenate([idx for _, _, idx in plan])
    assert sorted(seen.tolist()) == list(range(lengths.size))  # each item exactly once
    for edge, rows, idx in plan:
        assert rows % 2 == 0 and idx.size <= rows
        assert (lengths[idx] <= edge).all()
        assert rows * edge <= 128 or rows == 2  # within the budget (or the minimum)
        smaller = [e for e in (16, 64, 128) if e < edge]
        if smaller:  # smallest edge that fits
            assert (lengths[idx] > max(smaller)).all()


@pytest.mark.parametrize("bucketing", [True, False])
def test_runner_order_and_values(bucketing):
    ids, lengths = _tokens()
    table = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
    runner = BucketedRunner(
        _fn, {"table": table}, max_length=96, max_batch_tokens=256, bucketing=bucketing
    )
    emb, count = runner(lengths, ids)
    want_emb, want_count = _expected(table, ids)
    np.testing.assert_allclose(emb, want_emb, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(count, lengths)  # results back in the original order
    if bucketing:
        assert {edge for _, edge in runner.shapes} <= set(bucket_edges(96))
        assert len({edge for _, edge in runner.shapes}) > 1
    else:
        assert {edge for _, edge in runner.shapes} == {96}


def test_item_independent_of_its_batch():
    ids, lengths = _tokens(n=40)
    table = np.random.default_rng(2).normal(size=(50, 4)).astype(np.float32)
    runner = BucketedRunner(_fn, {"table": table}, max_length=96, max_batch_tokens=192)
    full, _ = runner(lengths, ids)
    perm = np.random.default_rng(3).permutation(40)[:17]
    part, _ = runner(lengths[perm], ids[perm])
    np.testing.assert_array_equal(part, full[perm])


def test_runner_rejects_bad_shapes():
    ids, lengths = _tokens(n=5)
    runner = BucketedRunner(_fn, {"table": np.zeros((50, 2), np.float32)}, max_length=96)
    with pytest.raises(ValueError, match="token arrays"):
        runner(lengths, ids[:, :50])
    with pytest.raises(ValueError, match="lengths"):
        runner(lengths + 200, ids)
    with pytest.raises(ValueError, match="max_batch_tokens"):
        BucketedRunner(_fn, {}, max_length=8, max_batch_tokens=0)


def test_blocked_attention_equals_plain_softmax_attention():
    from diffbio_sc.models._bert import _query_block, masked_attention

    assert _query_block(640) == 160 and _query_block(200) == 200
    rng = np.random.default_rng(0)
    b, t, h, d = 2, 640, 2, 8
    q, k, v = (rng.normal(size=(b, t, h, d)).astype(np.float32) for _ in range(3))
    mask = np.ones((b, t), bool)
    mask[1, 500:] = False  # padding keys of the second item
    got = np.asarray(masked_attention(q, k, v, mask))
    s = np.einsum("bqhd,bkhd->bhqk", q.astype(np.float64), k) / np.sqrt(d)
    s = np.where(mask[:, None, None, :], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = np.einsum("bhqk,bkhd->bqhd", p, v)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.slow
def test_runner_data_parallel_over_two_host_devices():
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent(
        """
        import jax, numpy as np
        from diffbio_sc.models._runner import BucketedRunner
        import tests_runner_fn as t
        ids, lengths = t._tokens(n=23)
        table = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
        runner = BucketedRunner(t._fn, {"table": table}, max_length=96, max_batch_tokens=256)
        emb, count = runner(lengths, ids)
        want, _ = t._expected(table, ids)
        assert runner.n_devices == 2 == len(jax.devices())
        assert all(rows % 2 == 0 for rows, _ in runner.shapes)
        np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(count, lengths)
        print("ok")
        """
    )
    here = Path(__file__).parent
    src = here.parents[1] / "src"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env["PYTHONPATH"] = os.pathsep.join([str(src), str(here), env.get("PYTHONPATH", "")])
    shim = "import importlib.util, sys\n" + (
        "spec = importlib.util.spec_from_file_location('tests_runner_fn', "
        f"{str(here / 'test_runner.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "sys.modules['tests_runner_fn'] = m\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", shim + code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_in_vocab_is_a_set_lookup_on_strings():
    from diffbio_sc.tl._checkpoint_inputs import in_vocab

    ids = np.asarray(["ENSG1", "ENSG2", "ENSG3", "ENSG2"], dtype=object)
    np.testing.assert_array_equal(in_vocab(ids, {"ENSG2", "x"}), [False, True, False, True])
    assert in_vocab(np.asarray([], dtype=object), {"a"}).shape == (0,)


def test_default_batch_tokens_follow_the_feed_forward_width():
    """32,768 tokens up to 512 wide; ~64 MiB of the widest activation beyond, in 1,024s."""
    from diffbio_sc.models._runner import default_batch_tokens

    assert default_batch_tokens(256) == 32_768  # Geneformer V1 intermediate is 512
    assert default_batch_tokens(512) == 32_768
    assert default_batch_tokens(3072) == 5_120  # V2-104M: 2**24 / 3072 = 5461 -> 5120
    assert default_batch_tokens(1024) == 16_384
    assert default_batch_tokens(10**6) == 1_024  # never below one 1,024-token call


def test_packed_cpu_options_fall_back_when_xla_refuses_them(monkeypatch):
    """An XLA that does not know the packed programs' CPU options compiles with its defaults."""
    import jax.numpy as jnp

    from diffbio_sc.models import _runner

    assert _runner.supported_compiler_options({"xla_cpu_no_such_flag_dfm": "1"}) == {}
    assert _runner.supported_compiler_options(_runner.PACKED_CPU_OPTIONS) in (
        _runner.PACKED_CPU_OPTIONS,
        {},
    )

    def fn(static, params, x):
        return jnp.tanh(x.astype(jnp.float32) @ params)

    params = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    x = np.arange(2 * 8 * 3).reshape(2, 8, 3) % 5
    expected = np.tanh(x.astype(np.float32) @ params)
    ran = _runner._jitted(fn, cpu_options=True)(None, params, x)
    monkeypatch.setattr(_runner, "PACKED_CPU_OPTIONS", {"xla_cpu_no_such_flag_dfm": "1"})
    monkeypatch.setattr(_runner, "_JITTED", {})
    fallback = _runner._jitted(fn, cpu_options=True)(None, params, x)
    np.testing.assert_allclose(ran, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fallback, expected, rtol=1e-6, atol=1e-6)
