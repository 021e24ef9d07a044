r"""Build the tiny Caduceus Ph and PS reference checkpoints for the tests.

Runs the upstream code itself, fetched at generation time (never copied into
this repository), in a separate environment with torch (never a dependency of
diffbio_sc)::

    git clone https://github.com/kuleshov-group/caduceus /tmp/caduceus   # caduceus/*.py
    git clone --branch v1.2.2 https://github.com/state-spaces/mamba /tmp/mamba
    /work/venv-torch/bin/pip install torch transformers safetensors einops numpy
    /work/venv-torch/bin/python scripts/make_caduceus_fixture.py \
        --caduceus-src /tmp/caduceus --mamba-src /tmp/mamba

mamba_ssm 1.2.2 is imported from its source tree (``--mamba-src``; its wheel
build needs CUDA): its CUDA extension ``selective_scan_cuda`` and Triton are
absent on a CPU machine, so the Triton kernels are never called; instead the
script runs mamba_ssm's own pure-torch references, ``selective_scan_ref`` for
the scan (``Mamba`` with ``use_fast_path=False``, ``causal_conv1d`` absent ->
``nn.Conv1d``) and ``rms_norm_ref`` for RMSNorm and for the fused add+norm
(``rms_norm_fn``), as the brief of issue 23 asks.

Built under ``tests/checkpoints/fixtures/<name>/`` (random weights, seed 0;
``d_model`` 16, 2 layers, ``d_state`` 4, context 32 tokens):

* ``caduceus_ph/``: ``CaduceusForMaskedLM`` with ``rcps=False``, saved as
  ``pytorch_model.bin`` (``torch.save`` of the state dict, tied reverse-mixer
  projections included; read through the restricted unpickler).
* ``caduceus_ps/``: ``rcps=True`` (RCPS embedding, blocks and add-norm),
  ``fused_add_norm=False``, saved as ``model.safetensors`` (tied tensors once).
* ``caduceus_ps_fused/``: as ``caduceus_ps`` with ``fused_add_norm=True`` (the
  published checkpoints' setting), the fused add+norm run through
  ``rms_norm_ref``.

Each has ``config.json`` (upstream's ``CaduceusConfig.to_dict``),
``tokenizer_config.json`` (``characters``, ``model_max_length``) and
``expected.npz``: ``sequences``; ``ids_<i>`` upstream's ``CaduceusTokenizer``
ids of each sequence (``[SEP]`` appended; lower case, ``N`` and one symbol
outside the alphabet included; the last sequence is longer than the context);
for each in-context sequence run alone (unpadded), ``hidden_<i>_<layer>``
(upstream's ``output_hidden_states``: the input of every block), ``last_<i>``
(``last_hidden_state``) and ``pooled_<i>`` (mean over positions; PS: the mean
of the forward half and of the flipped reverse-complement half, as upstream's
``CaduceusForSequenceClassification`` conjoins them). ``meta.json`` records the
reference commits and versions.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "checkpoints" / "fixtures"
CONTEXT = 32
SEQUENCES = [
    "ACGTACGTAC",
    "GATTACAnnacgtTGCA",
    "TTGCA",
    "CCCGGGATATNNTTAGCAXGTCA",
    "ACGTTGCA" * 5,  # 41 tokens with [SEP]: longer than the context
]


class _Any:
    """Stand-in for Triton names at import time (decorators return the function)."""

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return _Any()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Any()


def _stub_module(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__getattr__ = _Any().__getattr__  # PEP 562
    sys.modules[name] = mod
    return mod


def _git_commit(path: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def import_upstream(caduceus_src: Path, mamba_src: Path):
    """Import upstream Caduceus with mamba_ssm's pure-torch reference ops."""
    from transformers import PreTrainedModel, PreTrainedTokenizer  # noqa: F401  (before the stubs)

    _stub_module("selective_scan_cuda")
    triton = _stub_module("triton")
    triton.language = _stub_module("triton.language")
    sys.path[:0] = [str(mamba_src), str(caduceus_src)]
    import transformers.generation as tg  # names mamba_ssm's generation utilities import

    for old in ("GreedySearchDecoderOnlyOutput", "SampleDecoderOnlyOutput", "TextStreamer"):
        if not hasattr(tg, old):  # removed in transformers 5; unused by the forward pass
            setattr(tg, old, type(old, (), {}))
    import mamba_ssm.modules.mamba_simple as ms
    from mamba_ssm.ops import selective_scan_interface as ssi
    from mamba_ssm.ops.triton import layernorm as ln

    def rms_norm_fn(
        x, weight, bias, residual=None, prenorm=False, residual_in_fp32=False, eps=1e-6
    ):
        return ln.rms_norm_ref(
            x, weight, bias, residual=residual, eps=eps, prenorm=prenorm, upcast=True
        )

    def rms_forward(self, x, residual=None, prenorm=False, residual_in_fp32=False):
        return rms_norm_fn(
            x, self.weight, self.bias, residual=residual, prenorm=prenorm, eps=self.eps
        )

    ln.RMSNorm.forward = rms_forward
    ms.selective_scan_fn = ssi.selective_scan_ref
    ms.rms_norm_fn = rms_norm_fn
    assert ms.causal_conv1d_fn is None, "causal_conv1d installed: uninstall it for the CPU path"
    import caduceus.modeling_caduceus as mc
    import caduceus.modeling_rcps as mr

    mc.rms_norm_fn = mr.rms_norm_fn = rms_norm_fn
    mc.RMSNorm = mr.RMSNorm = ln.RMSNorm
    from caduceus import CaduceusConfig, CaduceusForMaskedLM, CaduceusTokenizer

    tie = CaduceusForMaskedLM.tie_weights  # transformers 5 passes keyword arguments
    CaduceusForMaskedLM.tie_weights = lambda self, *args, **kwargs: tie(self)
    for name in ("triton", "triton.language", "selective_scan_cuda"):
        sys.modules.pop(name)
    return CaduceusConfig, CaduceusForMaskedLM, CaduceusTokenizer


def build(name, *, rcps, fused, fmt, upstream, meta):
    """Write one fixture directory (weights, config, tokenizer settings, expected.npz)."""
    import torch

    CaduceusConfig, CaduceusForMaskedLM, CaduceusTokenizer = upstream
    tok = CaduceusTokenizer(model_max_length=CONTEXT)
    torch.manual_seed(0)
    cfg = CaduceusConfig(
        d_model=16,
        n_layer=2,
        vocab_size=tok.vocab_size,
        ssm_cfg={"d_state": 4, "d_conv": 4, "expand": 2, "dt_rank": "auto", "use_fast_path": False},
        rms_norm=True,
        residual_in_fp32=True,
        fused_add_norm=fused,
        pad_vocab_size_multiple=8,
        norm_epsilon=1e-5,
        bidirectional=True,
        bidirectional_strategy="add",
        bidirectional_weight_tie=True,
        rcps=rcps,
        complement_map=dict(tok.complement_map),
        pad_token_id=tok.pad_token_id,
    )
    model = CaduceusForMaskedLM(cfg).eval()
    with torch.no_grad():  # move the weights off their init values (norms = 1, D = 1)
        for pname, p in model.named_parameters():
            if pname.endswith(("norm.weight", "norm_f.weight", ".D")):
                p.add_(0.3 * torch.randn_like(p))
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if fmt == "bin":
        torch.save(state, out / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        tied = [
            k
            for k in state
            if ".mamba_rev." in k and k.rsplit(".", 2)[-2] in ("in_proj", "out_proj")
        ]
        state = {
            k: v
            for k, v in state.items()
            if k not in tied and k != "lm_head.lm_head.weight" and k != "lm_head.weight"
        }
        save_file(state, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(model.config.to_dict(), indent=1, sort_keys=True))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "characters": list(tok.characters),
                "model_max_length": CONTEXT,
                "tokenizer_class": "CaduceusTokenizer",
            },
            indent=1,
        )
    )
    arrays = {"sequences": np.array(SEQUENCES)}
    d = cfg.d_model
    for i, seq in enumerate(SEQUENCES):
        ids = tok(seq)["input_ids"]
        arrays[f"ids_{i}"] = np.asarray(ids, np.int32)
        if len(ids) > CONTEXT:
            continue
        with torch.inference_mode():
            res = model.caduceus(torch.tensor([ids]), output_hidden_states=True, return_dict=True)
        for j, h in enumerate(res.hidden_states):
            arrays[f"hidden_{i}_{j}"] = h[0].numpy().astype(np.float32)
        last = res.last_hidden_state
        arrays[f"last_{i}"] = last[0].numpy().astype(np.float32)
        if rcps:
            stacked = torch.stack([last[..., :d], torch.flip(last[..., d:], dims=[1, 2])], -1)
            pooled = stacked.mean(dim=1).mean(dim=-1)
        else:
            pooled = last.mean(dim=1)
        arrays[f"pooled_{i}"] = pooled[0].numpy().astype(np.float32)
    np.savez_compressed(out / "expected.npz", **arrays)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {out}")


def main(argv=None):
    """Build the three fixtures from the upstream checkouts named on the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--caduceus-src",
        type=Path,
        required=True,
        help="checkout of github.com/kuleshov-group/caduceus",
    )
    p.add_argument(
        "--mamba-src",
        type=Path,
        required=True,
        help="checkout of github.com/state-spaces/mamba at v1.2.2",
    )
    args = p.parse_args(argv)
    import torch
    import transformers

    upstream = import_upstream(args.caduceus_src, args.mamba_src)
    import mamba_ssm

    meta = {
        "reference": "github.com/kuleshov-group/caduceus caduceus/{configuration,modeling,"
        "rcps,tokenization}_caduceus.py",
        "caduceus_commit": _git_commit(args.caduceus_src),
        "mamba_ssm": f"{mamba_ssm.__version__} (github.com/state-spaces/mamba, "
        f"commit {_git_commit(args.mamba_src)}); selective_scan_ref, rms_norm_ref",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "seed": 0,
    }
    build("caduceus_ph", rcps=False, fused=False, fmt="bin", upstream=upstream, meta=meta)
    build("caduceus_ps", rcps=True, fused=False, fmt="safetensors", upstream=upstream, meta=meta)
    build(
        "caduceus_ps_fused", rcps=True, fused=True, fmt="safetensors", upstream=upstream, meta=meta
    )


if __name__ == "__main__":
    main()
