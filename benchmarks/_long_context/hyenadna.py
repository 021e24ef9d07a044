"""HyenaDNA for ``bench_long_context.py``: dfm (JAX) vs the upstream ``-hf`` torch code.

Random weights at the published ``hyenadna-medium-160k-seqlen`` configuration
(d_model 256, 8 layers, d_inner 1024, 160,002-token context, filter_order 64,
emb_dim 5). The torch side runs the checkpoints' own ``modeling_hyena.py``
(read from a fetched copy of the public repository below, as
``scripts/make_hyena_fixture.py`` does; ``$DFM_HYENA_MODELING_GIT`` points at
its bare git directory). Interface: ``README.md`` in this folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

NAME = "HyenaDNA (medium-160k config: d_model 256, 8 layers)"
MAX_LENGTH = 160_002
CONFIG = dict(
    vocab_size=12,
    d_model=256,
    n_layer=8,
    d_inner=1024,
    max_seq_len=MAX_LENGTH,
    emb_dim=5,
    filter_order=64,
    num_inner_mlps=2,
    activation_freq=10,
    train_freq=True,
    layer_norm_epsilon=1e-5,
    pad_vocab_size_multiple=8,
    embed_dropout=0.0,
    pad_token_id=4,
)
NUCLEOTIDE_IDS = (7, 8, 9, 10)  # A C G T of the character tokenizer
PAD_ID = 4

_SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
_MODELING_GIT = os.environ.get(
    "DFM_HYENA_MODELING_GIT", "/work/.mirror/shubhamtkr+checkpoint-62500/repo"
)
_STANDALONE_GIT = os.environ.get(
    "DFM_HYENA_STANDALONE_GIT", "/work/.mirror/HazyResearch+hyena-dna/repo"
)


def _fixture_tools():
    sys.path.insert(0, str(_SCRIPTS))
    import make_hyena_fixture

    return make_hyena_fixture


REFERENCE = (
    "modeling_hyena.py (LongSafari/hyenadna-*-hf remote code) from "
    "github.com/shubhamtkr/checkpoint-62500 @ 18ec6529d286b28beccf5e674d287fe8491d0883"
)


def _upstream():
    tools = _fixture_tools()
    tmp = Path(tempfile.mkdtemp(prefix="hyena_ref_"))
    modeling, configuration, _ = tools.import_upstream(
        Path(_MODELING_GIT), Path(_STANDALONE_GIT), tmp
    )
    return modeling, configuration


def write_checkpoint(directory: Path, seed: int, config: dict | None = None) -> None:
    """TORCH side: upstream ``HyenaDNAModel`` with random weights, saved as the fixture is.

    ``config`` replaces CONFIG (another published configuration, for ``bench_genetics.py``).
    """
    import torch
    from safetensors.torch import save_file

    modeling, configuration = _upstream()
    torch.manual_seed(seed)
    model = modeling.HyenaDNAModel(configuration.HyenaConfig(**(config or CONFIG))).eval()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(directory)
    state, seen = {}, set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen and name.endswith("freq"):
            continue  # the tied sin frequency, stored once per filter
        seen.add(tensor.data_ptr())
        state[name] = tensor.detach().clone().contiguous()
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})


def build_torch(directory: Path, threads: int):
    """TORCH side: the upstream model on this checkpoint; ``f(ids) -> pooled (B, d)``."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(threads)
    modeling, configuration = _upstream()
    model = modeling.HyenaDNAModel(configuration.HyenaConfig(**CONFIG)).eval()
    missing, unexpected = model.load_state_dict(
        load_file(Path(directory) / "model.safetensors"), strict=False
    )
    if unexpected or any(not k.endswith("freq") for k in missing):
        raise RuntimeError(f"checkpoint mismatch: missing {missing}, unexpected {unexpected}")

    def run(ids):
        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(ids, np.int64))
            last = model(x, return_dict=True).last_hidden_state  # after the final LayerNorm
            keep = (x != PAD_ID).float()[..., None]
            pooled = (last * keep).sum(1) / keep.sum(1)
            return pooled.numpy().astype(np.float32)

    return run


def build_dfm(directory: Path):
    """DFM side: ``dfm.models.load_checkpoint``; ``f(ids) -> pooled (B, d)`` (jitted)."""
    import jax
    import numpy as np
    from flax import nnx

    import diffbio_sc as dfm

    model = dfm.models.load_checkpoint(directory)
    step = nnx.jit(lambda m, x: m.pool(x, m.hidden_states(x)[-1]))

    def run(ids):
        out = step(model.module, np.asarray(ids, np.int32))
        return np.asarray(jax.block_until_ready(out), np.float32)

    return run
