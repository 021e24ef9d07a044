"""One training loop for every diffbio_sc model (Flax NNX + optax).

:func:`fit` trains a model in place on examples held in host memory::

    from diffbio_sc.models import TrainConfig, fit

    def loss_fn(model, batch, key):
        # batch: dict of (B, ...) arrays, plus batch["weight"] (B,) float32
        pred = model(batch["x"], dropout_key=key)
        per_example = jnp.mean((pred - batch["y"]) ** 2, axis=-1)
        w = batch["weight"]
        loss = jnp.sum(w * per_example) / jnp.maximum(w.sum(), 1.0)
        return loss, {"mse": loss}             # aux: dict of scalars (may be empty)

    result = fit(
        model, loss_fn, {"x": X, "y": Y},
        train_idx=np.arange(900), val_idx=np.arange(900, 1000),
        config=TrainConfig(epochs=20, batch_size=64, learning_rate=1e-3, seed=0),
    )
    result.history["val_loss"], result.summary["best_epoch"]

What it does
------------
* **Optimizer.** optax AdamW (decoupled weight decay on matrices only: leaves
  with ``ndim >= 2``) after global-norm gradient clipping, in an
  ``nnx.Optimizer``; the learning rate follows linear warmup over
  ``warmup_fraction`` of the steps, then cosine decay to 0. All three
  hyperparameters are optimizer *state* (``optax.inject_hyperparams``), so the
  compiled step is reused across calls with the same architecture and shapes.
* **Steps.** A module-level compiled step per loss function: a pure
  ``jax.jit`` function of the flat ``(model, optimizer)`` state (``nnx.split``
  once, ``nnx.merge`` inside the step), with that state donated, so the host
  does no NNX graph traversal per step; the model is updated from the state
  after each epoch's steps. On CPU the step is compiled with
  :data:`CPU_STEP_OPTIONS`. Pass the same (module-level) ``loss_fn`` object to
  reuse compiled steps across calls.
* **Minibatches.** Each epoch shuffles ``train_idx`` with a NumPy generator
  seeded from ``seed`` and takes ``len(train_idx) // batch_size`` full batches
  (the remainder of an epoch is dropped; it differs from epoch to epoch), each
  sorted by index. ``data`` is a mapping ``name -> array`` indexed along axis 0
  on the host, or a callable ``idx -> dict of arrays`` (e.g. to densify sparse
  rows per batch). The trainer adds ``batch["weight"]``.
* **Validation and early stopping.** After each epoch the loss over
  ``val_idx`` (fixed-shape batches, the last one padded with weight-0 rows) is
  the weighted mean of the batch losses; the best epoch's weights are kept
  and restored at the end, and training stops after ``patience`` epochs
  without improvement (``patience=None``: run all epochs, still restore the
  best). Without ``val_idx`` the final weights are kept. With
  ``config.average_checkpoints`` the model ends instead with the mean of the
  weights at the ends of the epochs that those fractions of the step budget
  name (a checkpoint average of the run's tail).
* **Randomness.** ``seed`` fixes the shuffling, and the keys passed to
  ``loss_fn`` (``fold_in(step_key, step)`` for training step ``step``,
  ``fold_in(val_key, j)`` for validation batch ``j``, the same every epoch):
  the same seed and data give the same weights.
* **Devices.** Data parallel over ``config.devices`` (default: all JAX
  devices): parameters and optimizer state replicated, each batch split along
  axis 0 over a 1-D mesh (``jax.sharding``); the number of devices used is the
  largest that divides the batch size. On CPU,
  ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` gives two devices.
* **No host syncs per step.** The loss and ``aux`` of each step stay on the
  device; they are copied to the host together every ``config.log_every`` steps
  (all but the newest step, which keeps running meanwhile) and at the end of
  each epoch, and the validation losses in groups of ``log_every`` batches. So
  the host prepares the next batch while the device runs the current step. The
  history is the same as with a read per step: the same float32 values, summed
  on the host in float64 in the same order.
* **Progress.** A tqdm bar with the loss (updated at each read), following
  ``dfm.settings.progress_bar`` unless ``config.progress_bar`` is set.
* **Failure.** A non-finite training loss raises ``FloatingPointError`` naming
  the first step that had one, when its metrics are read (so up to
  ``log_every`` more steps may run first); on any error the model's weights are
  restored to those it had before :func:`fit`.

The model ends in eval mode (``model.eval()``); :class:`TrainResult` holds
``history`` (``train_loss``, ``val_loss`` and ``train_<aux name>`` per epoch) and
a ``summary``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validate import (
    DfmInputError,
    check_bool,
    check_float,
    check_int,
    check_key,
    check_seed,
)

__all__ = ["TrainConfig", "TrainResult", "fit"]


def check_ema(ema) -> float | None:
    """Return the parameter-average decay ``ema`` as a float in (0, 1), or ``None``; else raise."""
    if ema is None:
        return None
    ema = check_float("ema", ema, minimum=0.0, strict_min=True)
    if ema >= 1.0:
        raise DfmInputError(
            f"ema is the decay of the weight average, in (0, 1) (e.g. 0.99), or None for no "
            f"averaging; got {ema!r}."
        )
    return ema


def check_average_checkpoints(fractions) -> tuple[float, ...] | None:
    """Return ``fractions`` (checkpoints of the step budget) as a sorted tuple in (0, 1], or ``None``."""
    if fractions is None:
        return None
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence):
        raise TypeError(
            "average_checkpoints must be a sequence of fractions of the step budget, e.g. "
            f"(0.75, 0.9, 1.0), or None; got {type(fractions).__name__}."
        )
    out = tuple(
        check_float("average_checkpoints[]", f, minimum=0.0, maximum=1.0, strict_min=True)
        for f in fractions
    )
    if not out:
        raise DfmInputError(
            "average_checkpoints is empty; give at least one fraction of the step budget in "
            "(0, 1] (e.g. (0.75, 0.9, 1.0)), or None for no averaging."
        )
    return tuple(sorted(set(out)))


def checkpoint_epochs(total_steps: int, steps_per_epoch: int, fractions) -> list[int]:
    """1-based epochs at whose end each fraction ``f`` of ``total_steps`` is first done.

    Epoch ``e`` ends after ``min(e * steps_per_epoch, total_steps)`` steps, so the
    checkpoint of ``f`` is epoch ``ceil(f * total_steps / steps_per_epoch)``
    (distinct epochs, ascending): 608 steps of 19 per epoch and fractions
    (0.75, 0.9, 1.0) give epochs 24, 29 and 32.
    """
    return sorted({max(1, math.ceil(f * total_steps / steps_per_epoch - 1e-9)) for f in fractions})


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of :func:`fit` (validated on construction).

    Parameters
    ----------
    epochs
        Passes over the training examples (>= 1).
    max_steps
        Stop after this many optimizer steps in all (>= 1), mid-epoch if need be
        (that last, partial epoch is validated like a full one); ``None`` runs
        every epoch. The learning-rate schedule spans the steps actually run.
        A fixed step budget for data too large to pass over in full.
    batch_size
        Examples per optimizer step (capped at the number of training examples).
    learning_rate
        Peak AdamW learning rate (> 0).
    weight_decay
        Decoupled weight decay on matrices (>= 0).
    warmup_fraction
        Fraction of the steps with linear warmup, in ``[0, 1)``.
    grad_clip
        Global gradient-norm clip (> 0).
    patience
        Early stopping after this many epochs without a better validation loss;
        ``None`` runs all epochs.
    seed
        Seed for shuffling and the per-step keys.
    progress_bar
        Show a tqdm bar; ``None`` follows ``dfm.settings.progress_bar``.
    desc
        Label of the progress bar.
    log_every
        Steps between reads of the training metrics to the host (the loss on the
        progress bar and the check for a non-finite loss); in between they stay on
        the device, so that no step waits for the one before it. The epoch's metrics
        are always read at its end.
    devices
        JAX devices for data parallelism; ``None`` uses ``jax.devices()``.
    ema
        Decay of an exponential moving average (Polyak averaging) of the
        parameters, in ``(0, 1)``; ``None`` (default) keeps the raw weights. With
        it, each step also updates ``avg += (1 - d_t) (params - avg)`` inside the
        compiled step, with ``d_t = min(ema, (1 + t) / (10 + t))`` at step ``t``
        (the average starts from the initial weights and forgets them fast), and
        the averaged weights are the model's at each epoch's end: validation,
        ``epoch_end``, the best-epoch copy and the final model all use them
        (the optimizer keeps training the raw weights). Deterministic.
    average_checkpoints
        Fractions of the step budget, in ``(0, 1]``, at which the weights are
        kept: a copy at the end of each epoch :func:`checkpoint_epochs` names
        (e.g. ``(0.75, 0.9, 1.0)``). The model then ends with the **mean of
        those copies** (a checkpoint average of the run's tail, in weight
        space) instead of the best-validation weights. The run's last epoch
        always joins them: a run stopped early averages the checkpoints it
        reached and its last epoch, and fractions without 1.0 are averaged
        with the final weights too. ``None``
        (default): no copies, the best weights by validation loss. The
        averaged weights' validation loss is recorded (``summary
        ['average_val_loss']``), with the epochs averaged
        (``summary['checkpoint_epochs']``).
    """

    epochs: int
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    patience: int | None = 10
    seed: int = 0
    progress_bar: bool | None = None
    desc: str = "train"
    log_every: int = 50
    devices: Sequence[Any] | None = field(default=None, compare=False)
    max_steps: int | None = None
    ema: float | None = None
    average_checkpoints: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, minimum=1)
        check_int("max_steps", self.max_steps, minimum=1, allow_none=True)
        check_int("batch_size", self.batch_size, minimum=1)
        check_float("learning_rate", self.learning_rate, minimum=0.0, strict_min=True)
        check_float("weight_decay", self.weight_decay, minimum=0.0)
        check_float("warmup_fraction", self.warmup_fraction, minimum=0.0)
        if self.warmup_fraction >= 1.0:
            raise DfmInputError(f"warmup_fraction must be < 1, got {self.warmup_fraction!r}.")
        check_float("grad_clip", self.grad_clip, minimum=0.0, strict_min=True)
        check_int("patience", self.patience, minimum=1, allow_none=True)
        check_seed(self.seed)
        if self.progress_bar is not None:
            check_bool("progress_bar", self.progress_bar)
        check_key("desc", self.desc)
        check_int("log_every", self.log_every, minimum=1)
        check_ema(self.ema)
        object.__setattr__(
            self, "average_checkpoints", check_average_checkpoints(self.average_checkpoints)
        )
        if self.devices is not None and len(self.devices) == 0:
            raise DfmInputError("devices must list at least one JAX device (or be None).")


@dataclass
class TrainResult:
    """What :func:`fit` returns (the model itself is trained in place).

    Attributes
    ----------
    history
        Per-epoch ``train_loss``, ``val_loss`` (empty without validation) and
        ``train_<name>`` for each entry of the loss function's ``aux``.
    summary
        ``epochs_run``, ``steps``, ``best_epoch`` (1-based, or ``None``),
        ``best_val_loss``, ``final_train_loss``, ``stopped_early``,
        ``batch_size``, ``steps_per_epoch``, ``n_devices``, ``max_steps``;
        with ``average_checkpoints``, also ``checkpoint_epochs`` (1-based, the
        epochs whose weights were averaged) and ``average_val_loss``.
    """

    history: dict[str, list[float]]
    summary: dict[str, Any]


# ---------------------------------------------------------------- compiled pieces
def _decay_mask(params):
    """Weight decay on matrices only (not biases, norms or vectors)."""
    import jax

    return jax.tree.map(lambda x: x.ndim >= 2, params)


def _make_tx(learning_rate, weight_decay, grad_clip):
    import optax

    return optax.chain(
        optax.clip_by_global_norm(grad_clip),
        optax.adamw(learning_rate, weight_decay=weight_decay, mask=_decay_mask),
    )


_TX: list = []


def _tx():
    """Return the one optax transformation (hyperparameters as state), built once."""
    if not _TX:
        import optax

        _TX.append(
            optax.inject_hyperparams(_make_tx)(learning_rate=0.0, weight_decay=0.0, grad_clip=1.0)
        )
    return _TX[0]


_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: XLA options of the compiled training step on CPU: dots through XLA's own
#: (Eigen) kernels rather than YNNPACK fusions, which cost ~10% more CPU per step
#: for the native model's shapes at the same float32 maths (issue 26,
#: ``docs/notes/native_model.md``).
CPU_STEP_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def _supported_cpu_options() -> dict:
    """:data:`CPU_STEP_OPTIONS` if this XLA knows them (checked once), else ``{}``.

    The options are experimental XLA flags: a newer jaxlib may rename or drop them,
    and compiling with an unknown option fails. The step is then compiled with
    XLA's defaults (the same maths, possibly slower), never refused
    (:func:`~diffbio_sc.models._runner.supported_compiler_options`).
    """
    from ._runner import supported_compiler_options

    return supported_compiler_options(CPU_STEP_OPTIONS)


def _steps(loss_fn: Callable, *, cpu: bool = False, ema: bool = False) -> tuple[Callable, Callable]:
    """Return the jitted ``(train_step, eval_step)`` for ``loss_fn``, built once per function.

    ``train_step(graphdef, state, lr, batch, key) -> (state, loss, aux)`` is a
    pure function of the flat ``(model, optimizer)`` state (``nnx.split``), jitted
    with ``jax.jit`` and the state donated: no NNX graph traversal on the host per
    step. ``cpu=True`` compiles it with :data:`CPU_STEP_OPTIONS`. ``ema=True``
    builds ``train_step(graphdef, (state, avg), lr, batch, key, decay) ->
    ((state, avg), loss, aux)`` instead, which also moves the parameter average
    ``avg`` (a pure dict like ``nnx.to_pure_dict(nnx.state(model, nnx.Param))``)
    towards the updated parameters, ``avg + (1 - decay) (params - avg)``, in the
    same compiled step (see ``TrainConfig.ema``).
    """
    try:
        return _STEPS[loss_fn][cpu, ema]
    except (KeyError, TypeError):
        pass
    import jax
    from flax import nnx

    def train_step(graphdef, state, lr, batch, key):
        model, optimizer = nnx.merge(graphdef, state)
        optimizer.opt_state.hyperparams["learning_rate"][...] = lr
        (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch, key)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss, aux

    def train_step_ema(graphdef, state_avg, lr, batch, key, decay):
        state, avg = state_avg
        state, loss, aux = train_step(graphdef, state, lr, batch, key)
        model, _ = nnx.merge(graphdef, state)
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        avg = jax.tree.map(lambda a, p: a + (1.0 - decay) * (p - a), avg, params)
        return (state, avg), loss, aux

    options = {"compiler_options": _supported_cpu_options()} if cpu else {}
    step_fn = train_step_ema if ema else train_step
    train_jit = jax.jit(step_fn, static_argnums=0, donate_argnums=1, **options)

    @nnx.jit
    def eval_step(model, batch, key):
        return loss_fn(model, batch, key)[0]

    fns = (train_jit, eval_step)
    try:
        _STEPS.setdefault(loss_fn, {})[cpu, ema] = fns
    except TypeError:  # not weak-referenceable: compile per call
        pass
    return fns


_KEYS: list = []


def _fold_in_range(key, data: np.ndarray) -> list:
    """Return ``[jax.random.fold_in(key, d) for d in data]``, computed in one compiled call.

    The same keys as folding in one step at a time, for one dispatch instead of
    one per step (compiled once per length of ``data``).
    """
    if not _KEYS:
        import jax

        _KEYS.append(jax.jit(jax.vmap(jax.random.fold_in, in_axes=(None, 0))))
    return list(_KEYS[0](key, np.asarray(data, dtype=np.uint32)))


def lr_schedule(total_steps: int, learning_rate: float, warmup_fraction: float) -> np.ndarray:
    """Learning rate of every step: linear warmup from 0, then cosine decay to 0.

    ``optax.warmup_cosine_decay_schedule`` evaluated once for all steps (float32).
    """
    import jax.numpy as jnp
    import optax

    warmup = int(round(warmup_fraction * total_steps))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=learning_rate,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=0.0,
    )
    import jax

    return np.asarray(jax.device_get(schedule(jnp.arange(total_steps))), dtype=np.float32)


def ema_decays(total_steps: int, decay: float) -> np.ndarray:
    """Decay of the parameter average at each step: ``min(decay, (1 + t) / (10 + t))`` (float32).

    Step ``t`` (0-based) moves the average by ``1 - d_t`` towards the new weights,
    so the first steps mostly replace the initial weights (``d_0 = 0.1``) and the
    horizon grows to ``1 / (1 - decay)`` steps.
    """
    t = np.arange(total_steps, dtype=np.float64)
    return np.minimum(decay, (1.0 + t) / (10.0 + t)).astype(np.float32)


def _indices(name: str, idx, n: int | None) -> np.ndarray:
    arr = np.asarray(idx)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise DfmInputError(f"{name} must be a 1-D array of integer indices.")
    arr = arr.astype(np.int64)
    if n is not None and arr.size and (arr.min() < 0 or arr.max() >= n):
        raise DfmInputError(f"{name} holds indices outside [0, {n}).")
    if np.unique(arr).size != arr.size:
        raise DfmInputError(f"{name} holds repeated indices.")
    return arr


def _batch_getter(data) -> tuple[Callable[[np.ndarray], dict], int | None]:
    if callable(data):
        return data, None
    if not isinstance(data, Mapping) or not data:
        raise TypeError(
            "data must be a non-empty mapping name -> array (first axis = examples) or a "
            f"callable idx -> dict of arrays; got {type(data).__name__}."
        )
    sizes = {k: len(v) for k, v in data.items() if v is not None}
    if len(set(sizes.values())) > 1:
        raise DfmInputError(f"data arrays differ in length along axis 0: {sizes}.")
    n = next(iter(sizes.values())) if sizes else None

    def get(idx: np.ndarray) -> dict:
        return {k: None if v is None else np.asarray(v[idx]) for k, v in data.items()}

    return get, n


def _n_devices_for(batch_size: int, n_available: int) -> int:
    """Return the largest device count <= ``n_available`` that divides ``batch_size``."""
    for d in range(min(n_available, batch_size), 0, -1):
        if batch_size % d == 0:
            return d
    return 1


# ---------------------------------------------------------------- the loop
def fit(
    model,
    loss_fn: Callable,
    data,
    *,
    train_idx,
    val_idx=None,
    config: TrainConfig,
    epoch_order: Callable[[np.random.Generator, np.ndarray], np.ndarray] | None = None,
    epoch_end: Callable[[int], tuple[dict[str, float], bool]] | None = None,
) -> TrainResult:
    """Train ``model`` in place with AdamW, warmup/cosine, clipping and early stopping.

    Parameters
    ----------
    model
        An ``nnx.Module`` (e.g. a :class:`~diffbio_sc.models._base.SavedModel`)
        whose ``nnx.Param`` variables are trained.
    loss_fn
        ``loss_fn(model, batch, key) -> (loss, aux)``: a scalar loss (a
        ``batch["weight"]``-weighted mean over the examples, so that the
        weight-0 padding rows of validation batches do not count) and a dict
        of scalar diagnostics (may be empty). ``key`` is a fresh PRNG key per
        step (masking, dropout). The model is in training mode
        (``model.train()``) for training steps and in eval mode for validation.
    data
        A mapping ``name -> array`` (first axis = examples; ``None`` values are
        passed through) or a callable ``idx -> dict of arrays`` for the sorted
        example indices ``idx``.
    train_idx, val_idx
        Indices of the training and validation examples (disjoint);
        ``val_idx=None`` or empty disables validation and early stopping.
    config
        A :class:`TrainConfig`.
    epoch_order
        ``epoch_order(rng, train_idx) -> permutation of train_idx``: the order of
        the training examples in each epoch (default ``rng.permutation``). Data
        streamed from disk passes a chunk-level shuffle (chunks in random
        order, examples shuffled within each chunk), so that a batch touches at
        most two chunks. ``rng`` is the trainer's seeded generator.
    epoch_end
        ``epoch_end(epoch) -> (metrics, stop)``, called after each epoch's
        training steps and validation (``epoch`` 0-based; the model in eval
        mode): ``metrics`` (name -> float) are appended to the history under
        their names, and ``stop=True`` ends training after that epoch (the
        best weights by validation loss are still restored, and
        ``summary['stopped_early']`` is set). A label-free stopping rule
        (e.g. :func:`diffbio_sc.tl.pretrain`'s kNN agreement) lives here.

    Returns
    -------
    A :class:`TrainResult`; the model holds the best (or final) weights, in eval mode.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from .._logging import tqdm
    from .._settings import settings

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}.")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}.")
    get_batch, n_examples = _batch_getter(data)
    train_idx = _indices("train_idx", train_idx, n_examples)
    val_idx = _indices("val_idx", [] if val_idx is None else val_idx, n_examples)
    if train_idx.size == 0:
        raise DfmInputError("train_idx is empty: there is nothing to train on.")
    if np.intersect1d(train_idx, val_idx).size:
        raise DfmInputError("train_idx and val_idx overlap; validation examples must be held out.")

    bs = min(config.batch_size, int(train_idx.size))
    steps_per_epoch = max(train_idx.size // bs, 1)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    lrs = lr_schedule(total_steps, config.learning_rate, config.warmup_fraction)
    devices = list(config.devices) if config.devices is not None else jax.devices()
    n_dev = _n_devices_for(bs, len(devices))
    show_bar = settings.progress_bar if config.progress_bar is None else config.progress_bar

    initial = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    optimizer = nnx.Optimizer(model, _tx(), wrt=nnx.Param)
    optimizer.opt_state.hyperparams["weight_decay"][...] = np.float32(config.weight_decay)
    optimizer.opt_state.hyperparams["grad_clip"][...] = np.float32(config.grad_clip)
    if n_dev > 1:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        mesh = Mesh(np.asarray(devices[:n_dev]), ("batch",))
        replicated = NamedSharding(mesh, PartitionSpec())
        data_sharding = NamedSharding(mesh, PartitionSpec("batch"))
        for node in (model, optimizer):
            nnx.update(node, jax.device_put(nnx.state(node), replicated))

        def put(batch):
            return jax.device_put(batch, data_sharding)
    else:

        def put(batch):
            return batch

    on_cpu = all(d.platform == "cpu" for d in devices[:n_dev])
    use_ema = config.ema is not None
    if use_ema:
        train_step, eval_step = _steps(loss_fn, cpu=on_cpu, ema=True)
    else:
        train_step, eval_step = _steps(loss_fn, cpu=on_cpu)
    model.train()
    graphdef, _ = nnx.split((model, optimizer))  # the training-mode structure
    model.eval()  # validation runs on the original (eval-mode) module, once per epoch
    # The trained state lives in `state` (donated to each step, so a copy: the model's
    # own arrays stay valid) and is written back to the model after each epoch's steps.
    state = jax.tree.map(jnp.copy, nnx.state((model, optimizer)))
    if use_ema:  # the parameter average rides along with the state (TrainConfig.ema)
        state = (state, jax.tree.map(jnp.copy, nnx.to_pure_dict(nnx.state(model, nnx.Param))))
        decays = ema_decays(total_steps, config.ema)

    def train_fn(lr, batch, key):
        nonlocal state
        if use_ema:
            state, loss, aux = train_step(graphdef, state, lr, batch, key, decays[step])
        else:
            state, loss, aux = train_step(graphdef, state, lr, batch, key)
        return loss, aux

    def sync_model() -> None:
        """Write the trained state (and the average, with ``ema``) to the model."""
        if use_ema:
            nnx.update((model, optimizer), state[0])
            _restore(model, state[1])
        else:
            nnx.update((model, optimizer), state)

    def eval_fn(batch, key):
        return eval_step(model, batch, key)

    def make(idx: np.ndarray, weight: np.ndarray) -> dict:
        batch = dict(get_batch(idx))
        if "weight" in batch:
            raise DfmInputError("data must not hold an entry named 'weight'; fit adds it.")
        batch["weight"] = weight
        return put(batch)

    # Fixed-shape validation batches: the last is padded with weight-0 copies of a row.
    val_batches = []
    for i in range(0, val_idx.size, bs):
        idx = np.sort(val_idx[i : i + bs])
        w = np.ones(bs, np.float32)
        if idx.size < bs:
            w[idx.size :] = 0.0
            idx = np.concatenate([idx, np.repeat(idx[:1], bs - idx.size)])
        val_batches.append((idx, w))

    _, step_key, val_key = jax.random.split(jax.random.key(config.seed), 3)
    rng = np.random.default_rng(config.seed + 1)
    val_keys = _fold_in_range(val_key, np.arange(len(val_batches))) if val_batches else []
    ones = np.ones(bs, np.float32)
    log_every = config.log_every
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    best, best_epoch, best_params, bad_epochs = math.inf, -1, None, 0
    keep_at = (
        set(checkpoint_epochs(total_steps, steps_per_epoch, config.average_checkpoints))
        if config.average_checkpoints is not None
        else set()
    )
    kept: dict[int, dict] = {}  # 1-based epoch -> copy of the weights (average_checkpoints)

    def keep(epoch: int) -> None:
        """Copy the weights at the end of ``epoch`` (0-based) if it is a checkpoint."""
        if epoch + 1 in keep_at and epoch + 1 not in kept:
            # a copy: the model's arrays are donated to the next step
            kept[epoch + 1] = jax.tree.map(jnp.copy, nnx.to_pure_dict(nnx.state(model, nnx.Param)))

    step, stopped_early = 0, False
    # Per-step metrics stay on the device, as (step, loss, aux) in `pending`, until they
    # are read in one transfer at a log interval or at the end of the epoch; reading them
    # per step (float(loss)) would wait for every step before the next batch is prepared.
    pending: list[tuple[int, Any, Any]] = []
    losses: list[float] = []
    aux_sums: dict[str, float] = {}

    def read(keep: int = 0) -> None:
        """Move the metrics of all but the newest ``keep`` pending steps to the host."""
        n_read = len(pending) - keep
        if n_read <= 0:
            return
        done = pending[:n_read]
        del pending[:n_read]
        values = jax.device_get([(loss, aux) for _, loss, aux in done])
        for (at, _, _), (loss, aux) in zip(done, values, strict=True):
            lv = float(loss)
            if not math.isfinite(lv):
                raise FloatingPointError(
                    f"Training loss became {lv} at step {at}; lower the learning rate."
                )
            losses.append(lv)
            for k, v in aux.items():
                aux_sums[k] = aux_sums.get(k, 0.0) + float(v)
        bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}")

    bar = tqdm(total=total_steps, desc=config.desc, disable=not show_bar, leave=False)
    try:
        for epoch in range(config.epochs):
            if step >= total_steps:  # the max_steps budget is spent
                break
            order = (
                rng.permutation(train_idx)
                if epoch_order is None
                else _indices("epoch_order(...)", epoch_order(rng, train_idx), None)
            )
            if order.size != train_idx.size:
                raise DfmInputError("epoch_order must return a permutation of train_idx.")
            losses.clear()
            aux_sums.clear()
            n_steps = min(steps_per_epoch, total_steps - step)  # the step budget
            keys = _fold_in_range(step_key, np.arange(step, step + n_steps))
            for b in range(n_steps):
                idx = np.sort(order[b * bs : (b + 1) * bs])
                loss, aux = train_fn(lrs[step], make(idx, ones), keys[b])
                step += 1
                pending.append((step, loss, aux))
                bar.update(1)
                if len(pending) > log_every:
                    # read all but the newest step, which keeps the device busy meanwhile
                    read(keep=1)
            read()
            sync_model()
            keep(epoch)
            history["train_loss"].append(float(np.mean(losses)))
            for k, v in aux_sums.items():
                history.setdefault(f"train_{k}", []).append(v / len(losses))
            if not val_batches:
                if epoch_end is not None and _call_epoch_end(epoch_end, epoch, history):
                    stopped_early = True
                    break
                continue
            # validation losses read in groups of log_every batches (bounded memory)
            val = _validate(eval_fn, make, val_batches, val_keys, log_every)
            history["val_loss"].append(val)
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}", val=f"{val:.4f}")
            if val < best:
                best, best_epoch, bad_epochs = val, epoch, 0
                # a copy: the model's arrays are donated to the next step
                best_params = jax.tree.map(jnp.copy, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
            else:
                bad_epochs += 1
            if epoch_end is not None and _call_epoch_end(epoch_end, epoch, history):
                stopped_early = True
                break
            if config.patience is not None and bad_epochs >= config.patience:
                stopped_early = True
                break
    except BaseException:
        _restore(model, initial)
        raise
    finally:
        bar.close()
    average_val = None
    if keep_at:
        last = len(history["train_loss"])
        if last not in kept:  # stopped early, or no fraction 1.0: the last epoch joins them
            keep_at.add(last)
            keep(last - 1)
        _restore(model, _mean_weights([kept[e] for e in sorted(kept)]))
        if val_batches:
            average_val = _validate(eval_fn, make, val_batches, val_keys, log_every)
    elif best_params is not None:
        _restore(model, best_params)
    model.eval()
    summary = {
        "epochs_run": len(history["train_loss"]),
        "steps": int(step),
        "best_epoch": int(best_epoch + 1) if best_epoch >= 0 else None,
        "best_val_loss": float(best) if math.isfinite(best) else None,
        "final_train_loss": history["train_loss"][-1] if history["train_loss"] else None,
        "stopped_early": bool(stopped_early),
        "batch_size": int(bs),
        "steps_per_epoch": int(steps_per_epoch),
        "n_devices": int(n_dev),
        "max_steps": config.max_steps,
    }
    if keep_at:
        summary["checkpoint_epochs"] = sorted(kept)
        summary["average_val_loss"] = average_val
    return TrainResult(history=history, summary=summary)


def _mean_weights(copies: list[dict]) -> dict:
    """Return the element-wise mean of weight dicts of one structure (float32, summed in order)."""
    import jax

    return jax.tree.map(lambda *xs: sum(xs[1:], xs[0]) / len(xs), *copies)


def _validate(eval_fn, make, val_batches, val_keys, log_every) -> float:
    """Weighted mean validation loss over ``val_batches`` (read in groups of ``log_every``)."""
    import jax

    tot = wsum = 0.0
    for g in range(0, len(val_batches), log_every):
        group = val_batches[g : g + log_every]
        keys = val_keys[g : g + log_every]
        outs = [eval_fn(make(i, w), k) for (i, w), k in zip(group, keys, strict=True)]
        for vl, (_, w) in zip(jax.device_get(outs), group, strict=True):
            tot += float(vl) * float(w.sum())
            wsum += float(w.sum())
    return tot / wsum


def _call_epoch_end(epoch_end, epoch: int, history: dict) -> bool:
    """Run the ``epoch_end`` hook: append its metrics to ``history``; return its stop flag."""
    metrics, stop = epoch_end(epoch)
    for k, v in metrics.items():
        history.setdefault(k, []).append(float(v))
    return bool(stop)


def _restore(model, pure: dict) -> None:
    from flax import nnx

    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(model, state)
    model.eval()
