"""The shared trainer (models/_train.py) on tiny models with hand-checkable answers."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy
nnx = pytest.importorskip("flax.nnx")

from diffbio_sc._validate import DfmInputError  # noqa: E402
from diffbio_sc.models import TrainConfig, fit  # noqa: E402
from diffbio_sc.models._train import lr_schedule  # noqa: E402


class _Lin(nnx.Module):
    def __init__(self, seed=0):
        self.lin = nnx.Linear(3, 1, rngs=nnx.Rngs(seed))


def _mse(model, batch, key):
    pred = model.lin(batch["x"])[:, 0]
    w = batch["weight"]
    loss = jnp.sum(w * (pred - batch["y"]) ** 2) / jnp.maximum(w.sum(), 1.0)
    return loss, {"abs": jnp.sum(w * jnp.abs(pred - batch["y"])) / jnp.maximum(w.sum(), 1.0)}


def _zero(model, batch, key):
    return 0.0 * jnp.sum(model.lin.kernel[...]) + 0.0 * jnp.sum(model.lin.bias[...]), {}


def _data(n=100, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 + noise * rng.normal(size=n)).astype(np.float32)
    return {"x": x, "y": y}


def _weights(model):
    return np.concatenate([np.ravel(model.lin.kernel[...]), np.ravel(model.lin.bias[...])])


CFG = dict(batch_size=16, learning_rate=0.05, warmup_fraction=0.1, progress_bar=False)


def test_fit_learns_a_linear_map_and_is_seeded():
    data = _data()
    m = _Lin()
    res = fit(
        m,
        _mse,
        data,
        train_idx=np.arange(80),
        val_idx=np.arange(80, 100),
        config=TrainConfig(epochs=40, **CFG),
    )
    np.testing.assert_allclose(np.ravel(m.lin.kernel[...]), [1.0, -2.0, 0.5], atol=0.05)
    np.testing.assert_allclose(m.lin.bias[...], [0.3], atol=0.05)
    assert res.summary["steps"] == res.summary["epochs_run"] * 5  # 80 // 16 steps per epoch
    assert set(res.history) == {"train_loss", "val_loss", "train_abs"}
    assert len(res.history["train_abs"]) == res.summary["epochs_run"]
    assert res.history["train_loss"][-1] < res.history["train_loss"][0] / 10
    # Same seed, same weights; another seed shuffles differently.
    runs = []
    for seed in (0, 0, 1):
        m = _Lin()
        fit(
            m,
            _mse,
            data,
            train_idx=np.arange(80),
            val_idx=np.arange(80, 100),
            config=TrainConfig(epochs=3, seed=seed, **CFG),
        )
        runs.append(m)
    m2, m3, m4 = runs
    np.testing.assert_array_equal(_weights(m2), _weights(m3))
    assert not np.allclose(_weights(m2), _weights(m4))


def test_validation_loss_is_the_exact_mean_and_best_weights_are_restored():
    # Validation targets contradict training targets: val loss falls, then rises.
    data = _data(60)
    data["y"][50:] = -data["y"][50:] + 3.0
    m = _Lin(seed=2)
    res = fit(
        m,
        _mse,
        data,
        train_idx=np.arange(50),
        val_idx=np.arange(50, 57),
        config=TrainConfig(epochs=30, patience=3, **{**CFG, "batch_size": 4}),
    )
    s = res.summary
    # The restored weights give exactly the best recorded validation loss, which is
    # a mean over the 7 validation examples (2 batches of 4, the last padded).
    pred = np.asarray(m.lin(data["x"][50:57]))[:, 0]
    val = float(np.mean((pred - data["y"][50:57]) ** 2))
    assert math.isclose(val, s["best_val_loss"], rel_tol=1e-5)
    assert math.isclose(min(res.history["val_loss"]), s["best_val_loss"], rel_tol=1e-12)
    assert s["stopped_early"] and s["epochs_run"] == s["best_epoch"] + 3 < 30
    assert res.history["val_loss"][-1] > s["best_val_loss"]


def test_learning_rate_schedule_is_warmup_then_cosine():
    lrs = lr_schedule(20, 0.1, 0.25)
    warm = 5
    ref = [
        0.1 * t / warm
        if t < warm
        else 0.1 * 0.5 * (1 + math.cos(math.pi * (t - warm) / (20 - warm)))
        for t in range(20)
    ]
    np.testing.assert_allclose(lrs, ref, rtol=1e-5, atol=1e-7)


def test_weight_decay_hits_matrices_only_and_follows_the_schedule():
    m = _Lin()
    k0, b0 = np.asarray(m.lin.kernel[...]).copy(), np.asarray(m.lin.bias[...]).copy()
    b0 = b0 + 0.5
    m.lin.bias[...] = jnp.asarray(b0)
    cfg = TrainConfig(
        epochs=1,
        batch_size=10,
        learning_rate=0.1,
        weight_decay=0.5,
        warmup_fraction=0.0,
        progress_bar=False,
    )
    fit(m, _zero, _data(20), train_idx=np.arange(20), config=cfg)
    # Zero gradients: Adam's step is 0, decoupled decay scales matrices by (1 - lr * wd)
    # per step with the cosine learning rates of the 2 steps (0.1, then 0.05).
    factor = (1 - 0.1 * 0.5) * (1 - 0.05 * 0.5)
    np.testing.assert_allclose(np.asarray(m.lin.kernel[...]), k0 * factor, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(m.lin.bias[...]), b0)


def test_callable_data_and_non_finite_loss_restores_weights():
    data = _data(40)
    seen = []

    def get(idx):
        seen.append(idx.copy())
        return {"x": data["x"][idx], "y": data["y"][idx] * np.float32(1e30)}

    m = _Lin()
    before = _weights(m)
    with pytest.raises(FloatingPointError, match="learning rate"):
        fit(m, _mse, get, train_idx=np.arange(40), config=TrainConfig(epochs=2, **CFG))
    np.testing.assert_array_equal(_weights(m), before)
    assert all(np.all(np.diff(i) > 0) and i.size == 16 for i in seen)  # sorted, full batches


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(epochs=0), DfmInputError, "epochs"),
        (dict(epochs=2.0), TypeError, "epochs"),
        (dict(weight_decay=float("nan")), DfmInputError, "weight_decay"),
        (dict(grad_clip=float("nan")), DfmInputError, "grad_clip"),
        (dict(grad_clip=0.0), DfmInputError, "grad_clip"),
        (dict(learning_rate=0.0), DfmInputError, "learning_rate"),
        (dict(warmup_fraction=1.0), DfmInputError, "warmup_fraction"),
        (dict(seed=-1), DfmInputError, "seed"),
        (dict(patience=0), DfmInputError, "patience"),
        (dict(max_steps=0), DfmInputError, "max_steps"),
        (dict(progress_bar="yes"), TypeError, "progress_bar"),
        (dict(ema=1.0), DfmInputError, "ema is the decay"),
        (dict(ema=0.0), DfmInputError, "ema"),
        (dict(ema="0.9"), TypeError, "ema"),
        (dict(average_checkpoints=()), DfmInputError, "average_checkpoints is empty"),
        (dict(average_checkpoints=(0.5, 1.5)), DfmInputError, "average_checkpoints"),
        (dict(average_checkpoints=(0.0,)), DfmInputError, "average_checkpoints"),
        (dict(average_checkpoints=0.75), TypeError, "sequence of fractions"),
    ],
)
def test_train_config_is_validated(kw, err, match):
    with pytest.raises(err, match=match):
        TrainConfig(**{"epochs": 1, **kw})


def test_max_steps_is_a_step_budget():
    """The budget cuts training short, mid-epoch too; a whole-epoch budget is ``epochs``."""
    data = _data()
    kw = dict(train_idx=np.arange(80), val_idx=np.arange(80, 100))

    def run(**cfg):
        m = _Lin()
        res = fit(m, _mse, data, config=TrainConfig(patience=None, **CFG, **cfg), **kw)
        return _weights(m), res

    # 5 steps per epoch: a budget of 10 steps over 7 epochs is exactly 2 epochs (same
    # schedule length, same shuffles, same keys).
    w_budget, r_budget = run(epochs=7, max_steps=10)
    w_two, r_two = run(epochs=2)
    np.testing.assert_array_equal(w_budget, w_two)
    assert r_budget.summary["steps"] == 10 and r_budget.summary["epochs_run"] == 2
    assert r_budget.history == r_two.history
    assert r_budget.summary["max_steps"] == 10
    # Mid-epoch: 7 steps = one epoch and 2 steps of the next, which is validated too.
    _, r = run(epochs=3, max_steps=7)
    assert r.summary["steps"] == 7 and r.summary["epochs_run"] == 2
    assert len(r.history["val_loss"]) == 2
    # A budget above epochs x steps per epoch changes nothing.
    w_big, r_big = run(epochs=2, max_steps=1000)
    np.testing.assert_array_equal(w_big, w_two)
    assert r_big.summary["steps"] == 10


def test_fit_rejects_bad_indices_and_data():
    data, cfg = _data(20), TrainConfig(epochs=1, progress_bar=False)
    for kw, match in [
        (dict(train_idx=np.arange(10), val_idx=np.arange(5, 15)), "overlap"),
        (dict(train_idx=np.arange(25)), "outside"),
        (dict(train_idx=np.array([], int)), "empty"),
        (dict(train_idx=np.array([1, 1, 2])), "repeated"),
    ]:
        with pytest.raises(DfmInputError, match=match):
            fit(_Lin(), _mse, data, config=cfg, **kw)
    with pytest.raises(DfmInputError, match="weight"):
        fit(_Lin(), _mse, {**data, "weight": np.ones(20)}, train_idx=np.arange(20), config=cfg)
    with pytest.raises(TypeError, match="mapping"):
        fit(_Lin(), _mse, [1, 2], train_idx=np.arange(2), config=cfg)


def test_progress_bar_follows_settings(capsys):
    import diffbio_sc as dfm

    data = _data(20)
    old = dfm.settings.progress_bar
    try:
        dfm.settings.progress_bar = False
        fit(
            _Lin(),
            _mse,
            data,
            train_idx=np.arange(20),
            config=TrainConfig(epochs=1, batch_size=10, desc="quiet-run"),
        )
        assert "quiet-run" not in capsys.readouterr().err
        dfm.settings.progress_bar = True
        fit(
            _Lin(),
            _mse,
            data,
            train_idx=np.arange(20),
            config=TrainConfig(epochs=1, batch_size=10, desc="loud-run"),
        )
        assert "loud-run" in capsys.readouterr().err
    finally:
        dfm.settings.progress_bar = old


@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
def test_data_parallel_over_two_devices_matches_one():
    code = textwrap.dedent(
        """
        import numpy as np, jax, jax.numpy as jnp
        from flax import nnx
        from diffbio_sc.models import TrainConfig, fit
        assert len(jax.devices()) == 2
        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 3)).astype(np.float32)
        y = (x @ np.array([1.0, -2.0, 0.5])).astype(np.float32)

        def loss(model, batch, key):
            pred = model(batch["x"])[:, 0]
            w = batch["weight"]
            return jnp.sum(w * (pred - batch["y"]) ** 2) / jnp.maximum(w.sum(), 1.0), {}

        out = []
        for devs in (jax.devices()[:1], jax.devices()):
            m = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
            r = fit(m, loss, {"x": x, "y": y}, train_idx=np.arange(48),
                    val_idx=np.arange(48, 64),
                    config=TrainConfig(epochs=3, batch_size=8, learning_rate=0.05,
                                       progress_bar=False, devices=devs))
            out.append((np.asarray(m.kernel[...]), r.summary["n_devices"],
                        r.history["val_loss"]))
        assert out[0][1] == 1 and out[1][1] == 2, (out[0][1], out[1][1])
        np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[0][2], out[1][2], rtol=1e-5)
        print("ok")
        """
    )
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(Path(__file__).parents[2] / "src"),
    }
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("ok")


# ---------------------------------------------------------------- issue 21: no host syncs
def _mse_masked(model, batch, key):
    """``_mse`` over a random ~70% of the examples: the result depends on the key."""
    keep = jax.random.bernoulli(key, 0.7, batch["weight"].shape).astype(jnp.float32)
    w = batch["weight"] * keep
    pred = model.lin(batch["x"])[:, 0]
    loss = jnp.sum(w * (pred - batch["y"]) ** 2) / jnp.maximum(w.sum(), 1.0)
    return loss, {"kept": jnp.sum(keep)}


def _reference_fit(model, loss_fn, data, train_idx, val_idx, cfg):
    """The trainer's loop as it was before issue 21: the loss read with float() every step.

    Same step maths, seed, shuffling, keys (``fold_in`` one step at a time),
    validation and early stopping; returns the history.
    """
    from diffbio_sc.models import _train

    # Its own NNX steps (the trainer's before issue 26: nnx.jit on the model and
    # optimizer objects), so the test also checks fit's functional, donated step.
    @nnx.jit
    def train_step(model, optimizer, lr, batch, key):
        optimizer.opt_state.hyperparams["learning_rate"][...] = lr
        (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch, key)
        optimizer.update(model, grads)
        return loss, aux

    @nnx.jit
    def eval_step(model, batch, key):
        return loss_fn(model, batch, key)[0]

    bs = cfg.batch_size
    spe = train_idx.size // bs
    lrs = lr_schedule(cfg.epochs * spe, cfg.learning_rate, cfg.warmup_fraction)
    opt = nnx.Optimizer(model, _train._tx(), wrt=nnx.Param)
    opt.opt_state.hyperparams["weight_decay"][...] = np.float32(cfg.weight_decay)
    opt.opt_state.hyperparams["grad_clip"][...] = np.float32(cfg.grad_clip)
    val_batches = []
    for i in range(0, val_idx.size, bs):
        idx = np.sort(val_idx[i : i + bs])
        w = np.ones(bs, np.float32)
        if idx.size < bs:
            w[idx.size :] = 0.0
            idx = np.concatenate([idx, np.repeat(idx[:1], bs - idx.size)])
        val_batches.append((idx, w))

    def batch(idx, w):
        return {"x": data["x"][idx], "y": data["y"][idx], "weight": w}

    _, step_key, val_key = jax.random.split(jax.random.key(cfg.seed), 3)
    rng = np.random.default_rng(cfg.seed + 1)
    hist = {"train_loss": [], "val_loss": []}
    best, best_params, bad, step = math.inf, None, 0, 0
    for _ in range(cfg.epochs):
        order = rng.permutation(train_idx)
        losses, sums = [], {}
        for b in range(spe):
            idx = np.sort(order[b * bs : (b + 1) * bs])
            model.train()
            loss, aux = train_step(
                model, opt, lrs[step], batch(idx, np.ones(bs, np.float32)),
                jax.random.fold_in(step_key, step),
            )  # fmt: skip
            step += 1
            losses.append(float(loss))
            for k, v in aux.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        hist["train_loss"].append(float(np.mean(losses)))
        for k, v in sums.items():
            hist.setdefault(f"train_{k}", []).append(v / len(losses))
        model.eval()
        tot = wsum = 0.0
        for j, (idx, w) in enumerate(val_batches):
            tot += float(eval_step(model, batch(idx, w), jax.random.fold_in(val_key, j))) * w.sum()
            wsum += float(w.sum())
        hist["val_loss"].append(tot / wsum)
        if hist["val_loss"][-1] < best:
            best, bad = hist["val_loss"][-1], 0
            best_params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, best_params)
    nnx.update(model, state)
    return hist


@pytest.mark.parametrize("log_every", [1, 5, 1000])
def test_fit_matches_a_loop_that_reads_the_loss_every_step(log_every):
    # Validation targets contradict the training targets, so early stopping triggers;
    # the loss depends on the per-step keys (random example masks), train and validation.
    data = _data(60, noise=0.1)
    data["y"][50:] = -data["y"][50:] + 3.0
    tr, va = np.arange(50), np.arange(50, 57)  # 12 steps of 4 per epoch; 2 val batches
    cfg = TrainConfig(epochs=30, patience=3, log_every=log_every, **{**CFG, "batch_size": 4})
    ref_model, model = _Lin(seed=2), _Lin(seed=2)
    ref = _reference_fit(ref_model, _mse_masked, data, tr, va, cfg)
    res = fit(model, _mse_masked, data, train_idx=tr, val_idx=va, config=cfg)
    assert res.summary["stopped_early"] and 4 <= res.summary["epochs_run"] < 30
    assert set(res.history) == set(ref) == {"train_loss", "val_loss", "train_kept"}
    for k in ref:
        assert len(res.history[k]) == len(ref[k]) == res.summary["epochs_run"]
        np.testing.assert_allclose(res.history[k], ref[k], rtol=1e-6, atol=0, err_msg=k)
    # the aux sum is not trivial: ~70% of 4 examples kept per step
    assert 0.5 * 4 < np.mean(res.history["train_kept"]) < 0.9 * 4
    np.testing.assert_allclose(_weights(model), _weights(ref_model), rtol=1e-6, atol=1e-7)
    assert res.summary["best_val_loss"] == min(ref["val_loss"])


class _Deferred:
    """A step's output seen by the trainer: records how and when it is read."""

    def __init__(self, value, step, events, dispatched):
        self.value, self.step, self.events, self.dispatched = value, step, events, dispatched

    def __array__(self, dtype=None, copy=None):  # what jax.device_get uses
        self.events.append(("read", self.step, self.dispatched[0]))
        return np.asarray(self.value, dtype=dtype)

    def __float__(self):  # a per-step host sync
        self.events.append(("float", self.step, self.dispatched[0]))
        return float(self.value)

    def item(self):
        self.events.append(("float", self.step, self.dispatched[0]))
        return float(self.value)


def test_step_metrics_are_read_in_batches_at_log_intervals(monkeypatch):
    from diffbio_sc.models import _train

    real_train, real_eval = _train._steps(_mse)
    events, dispatched, outputs = [], [0], []

    def spy_train(graphdef, state, lr, batch, key):
        state, loss, aux = real_train(graphdef, state, lr, batch, key)
        outputs.append(loss)
        dispatched[0] += 1
        wrap = lambda v: _Deferred(v, dispatched[0], events, dispatched)  # noqa: E731
        return state, wrap(loss), {k: wrap(v) for k, v in aux.items()}

    monkeypatch.setattr(_train, "_steps", lambda loss_fn, cpu=False: (spy_train, real_eval))
    cfg = TrainConfig(epochs=2, log_every=4, **{**CFG, "batch_size": 8})
    res = fit(_Lin(), _mse, _data(80), train_idx=np.arange(80), config=cfg)
    assert res.summary["steps"] == 20  # 10 per epoch
    assert not [e for e in events if e[0] == "float"]  # never read one step at a time
    loss_reads = events[::2]  # each step: its loss, then its one aux value
    assert [e[1] for e in loss_reads] == list(range(1, 21))  # each step read once, in order
    # Read when a 5th step is pending (all but the newest), and at the end of each epoch:
    # steps 1-4 after step 5 ran, 5-8 after step 9, 9-10 at the epoch's end (step 10), ...
    assert [e[2] for e in loss_reads] == [5] * 4 + [9] * 4 + [10] * 2 + [15] * 4 + [19] * 4 + [
        20
    ] * 2
    # The history is the per-epoch mean of the step losses that were read.
    per_step = [float(np.asarray(v)) for v in outputs]
    np.testing.assert_allclose(
        res.history["train_loss"], [np.mean(per_step[:10]), np.mean(per_step[10:])], rtol=1e-12
    )


def test_non_finite_loss_names_its_first_step():
    data = _data(80)
    data["y"] = data["y"] * np.float32(1e30)  # (pred - y)**2 overflows float32 at once
    m = _Lin()
    before = _weights(m)
    cfg = TrainConfig(epochs=2, log_every=3, **{**CFG, "batch_size": 8})
    with pytest.raises(FloatingPointError, match=r"became inf at step 1;"):
        fit(m, _mse, data, train_idx=np.arange(80), config=cfg)
    np.testing.assert_array_equal(_weights(m), before)


def test_log_every_is_validated():
    with pytest.raises(DfmInputError, match="log_every"):
        TrainConfig(epochs=1, log_every=0)


def test_epoch_end_hook_records_metrics_and_stops_training():
    data = _data()
    calls = []

    def hook(epoch):
        calls.append(epoch)
        return {"my_metric": 10.0 + epoch}, epoch == 2  # stop after the third epoch

    m = _Lin()
    res = fit(
        m,
        _mse,
        data,
        train_idx=np.arange(80),
        val_idx=np.arange(80, 100),
        config=TrainConfig(epochs=10, **CFG),
        epoch_end=hook,
    )
    assert calls == [0, 1, 2]
    assert res.history["my_metric"] == [10.0, 11.0, 12.0]
    assert res.summary["epochs_run"] == 3 and res.summary["stopped_early"]
    assert res.summary["steps"] == 15
    # Without validation the hook still runs and can stop training.
    res = fit(
        _Lin(),
        _mse,
        data,
        train_idx=np.arange(80),
        config=TrainConfig(epochs=10, **CFG),
        epoch_end=lambda e: ({}, e == 1),
    )
    assert res.summary["epochs_run"] == 2 and res.summary["stopped_early"]


def test_unknown_cpu_step_option_falls_back(monkeypatch):
    """An XLA that does not know the experimental CPU flag compiles the step with its defaults."""
    from diffbio_sc.models import _train

    monkeypatch.setattr(_train, "CPU_STEP_OPTIONS", {"xla_cpu_no_such_option_dfm": ""})
    assert _train._supported_cpu_options() == {}


def test_ema_returns_the_average_of_the_raw_weights_of_every_step():
    # Independent loop: the raw weights after each NNX step, averaged in float64 on
    # the host with the documented decays d_t = min(ema, (1 + t) / (10 + t)).
    from diffbio_sc.models import _train

    data = _data(64, noise=0.1)
    tr = np.arange(64)
    cfg = TrainConfig(epochs=3, ema=0.9, **CFG)  # 4 steps of 16 per epoch
    ref_model, model, raw_model = _Lin(seed=1), _Lin(seed=1), _Lin(seed=1)

    @nnx.jit
    def train_step(model, optimizer, lr, batch, key):
        optimizer.opt_state.hyperparams["learning_rate"][...] = lr
        (loss, _), grads = nnx.value_and_grad(_mse, has_aux=True)(model, batch, key)
        optimizer.update(model, grads)
        return loss

    lrs = lr_schedule(12, cfg.learning_rate, cfg.warmup_fraction)
    opt = nnx.Optimizer(ref_model, _train._tx(), wrt=nnx.Param)
    opt.opt_state.hyperparams["weight_decay"][...] = np.float32(cfg.weight_decay)
    opt.opt_state.hyperparams["grad_clip"][...] = np.float32(cfg.grad_clip)
    _, step_key, _ = jax.random.split(jax.random.key(cfg.seed), 3)
    rng = np.random.default_rng(cfg.seed + 1)
    avg, step = _weights(ref_model).astype(np.float64), 0
    for _ in range(cfg.epochs):
        order = rng.permutation(tr)
        for b in range(4):
            idx = np.sort(order[b * 16 : (b + 1) * 16])
            batch = {"x": data["x"][idx], "y": data["y"][idx], "weight": np.ones(16, np.float32)}
            train_step(ref_model, opt, lrs[step], batch, jax.random.fold_in(step_key, step))
            d = min(0.9, (1 + step) / (10 + step))
            avg = d * avg + (1 - d) * _weights(ref_model)
            step += 1
    fit(model, _mse, data, train_idx=tr, config=cfg)
    np.testing.assert_allclose(_weights(model), avg, rtol=1e-5, atol=1e-6)
    # ... and not the raw weights, which the same run without ema returns
    fit(raw_model, _mse, data, train_idx=tr, config=TrainConfig(epochs=3, **CFG))
    np.testing.assert_allclose(_weights(raw_model), _weights(ref_model), rtol=1e-6, atol=1e-7)
    assert np.abs(_weights(model) - _weights(raw_model)).max() > 1e-3
    # deterministic: the same seed gives the same averaged weights
    again = _Lin(seed=1)
    fit(again, _mse, data, train_idx=tr, config=cfg)
    np.testing.assert_array_equal(_weights(again), _weights(model))


def test_ema_weights_are_the_validated_and_restored_ones():
    data = _data(80, noise=0.1)
    tr, va = np.arange(64), np.arange(64, 80)
    model = _Lin(seed=1)
    res = fit(
        model, _mse, data, train_idx=tr, val_idx=va, config=TrainConfig(epochs=4, ema=0.5, **CFG)
    )
    # the restored model is the one whose validation loss was best
    pred = np.asarray(model.lin(data["x"][va]))[:, 0]
    val = float(np.mean((pred - data["y"][va]) ** 2))
    assert val == pytest.approx(res.summary["best_val_loss"], rel=1e-5)


def test_checkpoint_epochs_by_hand():
    from diffbio_sc.models._train import checkpoint_epochs

    # the default budget on the cell-line sets: 608 steps of 19 per epoch
    assert checkpoint_epochs(608, 19, (0.75, 0.9, 1.0)) == [24, 29, 32]
    # 456 = 0.75 * 608 steps end exactly with epoch 24; one step more needs epoch 25
    assert checkpoint_epochs(608, 19, (457 / 608,)) == [25]
    # a partial last epoch (max_steps) and fractions that fall in the same epoch
    assert checkpoint_epochs(10, 4, (0.1, 0.2, 0.5, 1.0)) == [1, 2, 3]


def test_average_checkpoints_is_the_mean_of_the_weights_at_those_epochs():
    """The averaged model equals the mean of the weights a plain run has at the checkpoints."""
    data = _data(80, noise=0.1)
    tr, va = np.arange(64), np.arange(64, 80)  # 4 steps of 16 per epoch
    kw = dict(train_idx=tr, val_idx=va)
    # Independently: a plain run (same seed) with a hook that copies the weights per epoch.
    plain, seen = _Lin(seed=1), {}

    def hook(epoch):
        seen[epoch + 1] = _weights(plain).copy()
        return {}, False

    res_plain = fit(
        plain, _mse, data, config=TrainConfig(epochs=8, patience=None, **CFG), epoch_end=hook, **kw
    )
    # fractions 0.5, 0.75, 1.0 of 32 steps: the ends of epochs 4, 6 and 8
    model = _Lin(seed=1)
    cfg = TrainConfig(epochs=8, patience=None, average_checkpoints=(1.0, 0.5, 0.75), **CFG)
    res = fit(model, _mse, data, config=cfg, **kw)
    assert cfg.average_checkpoints == (0.5, 0.75, 1.0)
    assert res.summary["checkpoint_epochs"] == [4, 6, 8]
    expected = (seen[4].astype(np.float64) + seen[6] + seen[8]) / 3
    np.testing.assert_allclose(_weights(model), expected, rtol=1e-6, atol=1e-7)
    # the training itself is the plain run's (same losses), only the weights returned differ
    assert res.history["val_loss"] == res_plain.history["val_loss"]
    assert np.abs(_weights(model) - seen[8]).max() > 1e-4
    assert np.abs(_weights(model) - _weights(plain)).max() > 1e-4  # not the best-epoch weights
    # the recorded validation loss is the averaged model's
    pred = np.asarray(model.lin(data["x"][va]))[:, 0]
    val = float(np.mean((pred - data["y"][va]) ** 2))
    assert res.summary["average_val_loss"] == pytest.approx(val, rel=1e-5)


def test_average_checkpoints_after_an_early_stop_takes_the_last_epoch():
    data = _data(80, noise=0.1)
    seen = {}
    model = _Lin(seed=1)

    def hook(epoch):
        seen[epoch + 1] = _weights(model).copy()
        return {}, epoch == 4  # stop after epoch 5, before the checkpoints of epochs 6 and 8

    cfg = TrainConfig(epochs=8, patience=None, average_checkpoints=(0.5, 0.75, 1.0), **CFG)
    res = fit(model, _mse, data, train_idx=np.arange(64), config=cfg, epoch_end=hook)
    assert res.summary["stopped_early"] and res.summary["checkpoint_epochs"] == [4, 5]
    assert res.summary["average_val_loss"] is None  # no validation cells
    np.testing.assert_allclose(_weights(model), (seen[4] + seen[5]) / 2, rtol=1e-6, atol=1e-7)
