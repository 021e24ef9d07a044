"""Caduceus-Ph at the published 131k configuration, for ``bench_long_context.py``.

Interface: ``benchmarks/_long_context/README.md``. Random weights (seed) at the
config of ``kuleshov-group/caduceus-ph_seqlen-131k_d_model-256_n_layer-16``
(d_model 256, 16 BiMamba layers, d_state 16, expand 2, weight-tied reverse
mixer). The torch side is upstream's ``modeling_caduceus.py`` with mamba_ssm
1.2.2's pure-torch ``selective_scan_ref`` (a Python loop over positions: the
only selective scan mamba_ssm offers without CUDA) and ``rms_norm_ref``, imported
as ``scripts/make_caduceus_fixture.py`` does; point ``CADUCEUS_SRC`` and
``MAMBA_SRC`` at checkouts of github.com/kuleshov-group/caduceus and
github.com/state-spaces/mamba (tag v1.2.2). Nothing here imports torch, jax or
diffbio_sc at module level.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np

NAME = "Caduceus-Ph (131k config: d_model 256, 16 layers)"
MAX_LENGTH = 131_072
CONFIG = {
    "d_model": 256,
    "n_layer": 16,
    "vocab_size": 12,
    "ssm_cfg": {
        "d_state": 16,
        "d_conv": 4,
        "expand": 2,
        "dt_rank": "auto",
        "conv_bias": True,
        "bias": False,
        "use_fast_path": False,
    },
    "rms_norm": True,
    "residual_in_fp32": False,
    "fused_add_norm": True,
    "pad_vocab_size_multiple": 8,
    "norm_epsilon": 1e-5,
    "bidirectional": True,
    "bidirectional_strategy": "add",
    "bidirectional_weight_tie": True,
    "rcps": False,
}
#: CaduceusTokenizer ids of A, C, G, T.
NUCLEOTIDE_IDS = (7, 8, 9, 10)
REFERENCE = (
    "github.com/kuleshov-group/caduceus@0060a6d8079b6a040fc55d505e15972a327b70a6 "
    "(caduceus/modeling_caduceus.py) with mamba_ssm 1.2.2 "
    "(github.com/state-spaces/mamba@a07faffa36a7b89e754b5de972418475bcdd77b6) "
    "selective_scan_ref / rms_norm_ref"
)


def _upstream():
    """Import upstream Caduceus with mamba_ssm's reference ops (see the fixture script)."""
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location(
        "make_caduceus_fixture", root / "scripts" / "make_caduceus_fixture.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        src, mamba = os.environ["CADUCEUS_SRC"], os.environ["MAMBA_SRC"]
    except KeyError as err:
        raise SystemExit(
            f"set {err.args[0]} (checkouts of kuleshov-group/caduceus and state-spaces/mamba "
            "v1.2.2) to run the torch side"
        ) from None
    return mod.import_upstream(Path(src), Path(mamba))


def _config(upstream, tokenizer, config=None):
    CaduceusConfig = upstream[0]
    return CaduceusConfig(
        **(config or CONFIG),
        complement_map=dict(tokenizer.complement_map),
        pad_token_id=tokenizer.pad_token_id,
    )


def write_checkpoint(
    directory: Path, seed: int, config: dict | None = None, max_length: int = MAX_LENGTH
) -> None:
    """Torch side: random upstream weights at CONFIG, saved in the Hugging Face layout.

    ``config`` replaces CONFIG (another published configuration, e.g. PS for
    ``bench_genetics.py``); ``max_length`` is the tokenizer's ``model_max_length``.
    """
    import torch
    from safetensors.torch import save_file

    upstream = _upstream()
    _, CaduceusForMaskedLM, CaduceusTokenizer = upstream
    tok = CaduceusTokenizer(model_max_length=max_length)
    torch.manual_seed(seed)
    model = CaduceusForMaskedLM(_config(upstream, tok, config)).eval()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().clone().contiguous()
        for k, v in model.state_dict().items()
        if not (".mamba_rev." in k and k.rsplit(".", 2)[-2] in ("in_proj", "out_proj"))
        and not k.startswith("lm_head.")
    }
    save_file(state, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(model.config.to_dict(), indent=1))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"characters": list(tok.characters), "model_max_length": max_length})
    )


def build_torch(directory: Path, threads: int):
    """Torch side: upstream model with the saved weights; f(ids) -> mean-pooled last state."""
    import torch
    from safetensors.torch import load_file

    upstream = _upstream()
    _, CaduceusForMaskedLM, CaduceusTokenizer = upstream
    torch.set_num_threads(int(threads))
    model = CaduceusForMaskedLM(_config(upstream, CaduceusTokenizer(MAX_LENGTH))).eval()
    missing, unexpected = model.load_state_dict(
        load_file(str(Path(directory) / "model.safetensors")), strict=False
    )
    missing = [
        k
        for k in missing
        if not k.startswith("lm_head.") and not (".mamba_rev." in k and "_proj." in k)
    ]
    if missing or unexpected:
        raise RuntimeError(f"weights do not match: missing {missing}, unexpected {unexpected}")
    backbone = model.caduceus

    def run(ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            last = backbone(torch.as_tensor(ids, dtype=torch.long), return_dict=True)
            return last.last_hidden_state.mean(dim=1).float().numpy()

    return run


def build_dfm(directory: Path):
    """dfm side: load_checkpoint; f(ids) -> mean over all positions of the last state."""
    import jax
    from flax import nnx

    import diffbio_sc as dfm

    model = dfm.models.load_checkpoint(directory)
    step = nnx.jit(lambda m, x: m.pool(x, m.hidden_states(x)[-1]))

    def run(ids: np.ndarray) -> np.ndarray:
        out = step(model.module, np.asarray(ids, np.int32))
        return np.asarray(jax.block_until_ready(out), np.float32)

    return run
