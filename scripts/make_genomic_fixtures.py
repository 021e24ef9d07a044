r"""Build the tiny GENERator and Nucleotide Transformer v1 reference checkpoints for the tests.

Run in a separate environment with torch (never a dependency of diffbio_sc)::

    python -m venv /work/venv-torch
    /work/venv-torch/bin/pip install torch transformers safetensors numpy
    /work/venv-torch/bin/pip install dm-haiku jax   # only for the NT v2 fixture
    /work/venv-torch/bin/python scripts/make_genomic_fixtures.py \\
        --generator-tokenizer /path/to/GENERator/tokenizer.py \\
        --nt-repo /path/to/instadeepai/nucleotide-transformer

``--generator-tokenizer`` is GENERator's own tokenizer module (``tokenizer.py``
of its Hugging Face repository, class ``DNAKmerTokenizer``); it is imported from
where it lies and never copied into this repository.

What is built under ``tests/checkpoints/fixtures/<name>/``, random weights, seed 0:

* ``nucleotide_transformer_v1/``: ``transformers.EsmForMaskedLM`` (learned
  absolute positions, 2 layers x 8, 24-token context) with an NT-style
  ``vocab.txt`` (``<unk> <pad> <mask> <cls>``, the 4,096 6-mers in ``ATCG``
  order, ``A T C G N``, ``<eos> <bos>``: the order of NT's own
  ``StandardTokenizer``) and ``transformers.EsmTokenizer`` settings with no eos
  token (as NT's); saved as ``model.safetensors``.
* ``nucleotide_transformer_v1_bin/``: a second ESM (``emb_layer_norm_before``
  and ``token_dropout`` on) saved as ``pytorch_model.bin`` (``torch.save`` of
  the state dict; read through the restricted unpickler).
* ``generator/``: ``transformers.LlamaForCausalLM`` (2 layers x 8, 2 query and
  1 key/value head, tied embeddings, 16-token context) with GENERator's
  ``DNAKmerTokenizer(k=6)`` saved by ``save_pretrained`` (``vocab.txt``,
  ``tokenizer_config.json`` with ``k``).

* ``nucleotide_transformer_v2/`` (with ``--nt-repo``): InstaDeep's own JAX/Haiku
  ``nucleotide_transformer.model`` configured as the v2 models (rotary, bias-free
  SwiGLU feed-forward), its parameters written as an NT v2 Hugging Face state dict
  (``model.safetensors``; ``config.json`` with ``add_bias_fnn`` and, like NT v2's,
  an ``auto_map`` and no ``model_type``), NT v2 vocabulary
  order (``compute_tokens_to_ids_v2``); see :func:`make_nt_v2`.

``expected.npz`` in each holds the sequences (``all_sequences``; ``sequences``
those within the context), the upstream tokenizer's ids of
every sequence (``ids_<i>``, special tokens included; lower case and other
symbols through the upstream unknown-token rule), the batch of in-context
sequences right-padded (``input_ids``, ``attention_mask``), every hidden state
(``hidden_<layer>``, Hugging Face's ``output_hidden_states``) and the pooled
embedding as the authors compute it (NT: mean of the last layer over the
attention mask, the model card's; GENERator: the last layer at the last
non-padding token, its sequence-understanding code's); ``meta.json`` records
the torch / transformers versions.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import torch
import transformers

OUT = Path(__file__).resolve().parents[1] / "tests" / "checkpoints" / "fixtures"
SEED = 0

NT_SEQS = [
    "ACGTACGTAC",
    "ATCGGANNACGTTTGCAACGTAGGCTTACGATCGA",
    "TTGACCATGCAATGCCGTAGGACTTACCGA",
    "acgtACGTACGTTG",
    "ACGTRACGTACG",
    "ACGTACGTAC" * 20,
]
GEN_SEQS = [
    "ACGTACGTACGT",
    "ACGTTGCAAGTCCGTAGGCTTACGATCGAACGT",
    "ACGTNNACGTACTTGACA",
    "acgtacACGTAC",
    "ACGTACGTAC" * 12,
]


def _meta(name: str, extra: dict) -> dict:
    return {
        "name": name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "seed": SEED,
        **extra,
    }


def _save_expected(out: Path, all_seqs, seqs, ids, batch_ids, mask, hidden, pooled) -> None:
    arrays = {
        "all_sequences": np.asarray(all_seqs),
        "sequences": np.asarray(seqs),
        "input_ids": batch_ids.astype(np.int32),
        "attention_mask": mask.astype(bool),
        "pooled": pooled.astype(np.float32),
    }
    for i, row in enumerate(ids):
        arrays[f"ids_{i}"] = np.asarray(row, dtype=np.int32)
    for i, h in enumerate(hidden):
        arrays[f"hidden_{i}"] = h.astype(np.float32)
    np.savez_compressed(out / "expected.npz", **arrays)


def _randomise(model) -> None:
    """Weights of order one (not the small default init), so that errors show at 1e-5."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n.lower() and n.endswith(("weight", "gamma")):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.ndim == 1:
                p.copy_(0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)


def _pad(rows, pad_id):
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return ids, ids != pad_id


def make_nt(name: str, *, layer_norm_before: bool, token_dropout: bool, binary: bool) -> None:
    """Write one tiny Nucleotide Transformer v1 (ESM) fixture and its reference outputs."""
    out = OUT / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    kmers = ["".join(p) for p in itertools.product("ATCG", repeat=6)]
    tokens = [
        "<unk>",
        "<pad>",
        "<mask>",
        "<cls>",
        *kmers,
        "A",
        "T",
        "C",
        "G",
        "N",
        "<eos>",
        "<bos>",
    ]
    tmp = out / "vocab.txt"
    tmp.write_text("\n".join(tokens) + "\n")
    tok = transformers.EsmTokenizer(
        str(tmp),
        eos_token=None,
        unk_token="<unk>",
        pad_token="<pad>",
        cls_token="<cls>",
        mask_token="<mask>",
    )
    tok.save_pretrained(str(out))
    cfg = transformers.EsmConfig(
        vocab_size=len(tokens),
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=26,  # pad_token_id 1 + 24 tokens + 1
        pad_token_id=1,
        mask_token_id=2,
        position_embedding_type="absolute",
        emb_layer_norm_before=layer_norm_before,
        token_dropout=token_dropout,
        layer_norm_eps=1e-12 if not layer_norm_before else 1e-5,
        hidden_act="gelu",
        architectures=["EsmForMaskedLM"],
    )
    torch.manual_seed(SEED)
    model = transformers.EsmForMaskedLM(cfg).eval()
    _randomise(model)
    if binary:
        cfg.save_pretrained(str(out))
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        torch.save(state, out / "pytorch_model.bin")
    else:
        model.save_pretrained(str(out))
    ids = [tok(s)["input_ids"] for s in NT_SEQS]
    max_tokens = cfg.max_position_embeddings - cfg.pad_token_id - 1
    fit = [r for r in ids if len(r) <= max_tokens]
    seqs = [s for s, r in zip(NT_SEQS, ids, strict=True) if len(r) <= max_tokens]
    if token_dropout:  # exercise the <mask> rescaling
        fit[1] = list(fit[1])
        fit[1][2] = tok.mask_token_id
    batch, mask = _pad(fit, tok.pad_token_id)
    with torch.no_grad():
        res = model(
            torch.tensor(batch),
            attention_mask=torch.tensor(mask),
            output_hidden_states=True,
        )
    hidden = [h.numpy() for h in res.hidden_states]
    m = torch.tensor(mask).unsqueeze(-1).float()
    pooled = (torch.sum(m * res.hidden_states[-1], dim=-2) / torch.sum(m, dim=1)).numpy()
    _save_expected(out, NT_SEQS, seqs, ids, batch, mask, hidden, pooled)
    (out / "meta.json").write_text(
        json.dumps(
            _meta(
                name,
                {
                    "model": "transformers.EsmForMaskedLM",
                    "tokenizer": "transformers.EsmTokenizer (eos_token=None)",
                    "pooling": "mean of hidden_states[-1] over attention_mask (cls included)",
                    "masked_token_in_batch_row_1": bool(token_dropout),
                },
            ),
            indent=2,
        )
    )


def make_generator(tokenizer_py: Path) -> None:
    """Write the tiny GENERator (Llama) fixture, tokenized by GENERator's own tokenizer."""
    spec = importlib.util.spec_from_file_location("generator_tokenizer", tokenizer_py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = OUT / "generator"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tok = mod.DNAKmerTokenizer(k=6, pad_token="<pad>")
    tok.save_pretrained(str(out))
    tcfg = json.loads((out / "tokenizer_config.json").read_text())
    tcfg["k"] = 6  # as GENERator's own save_pretrained records it
    (out / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2))
    cfg = transformers.LlamaConfig(
        vocab_size=len(tok.get_vocab()),
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=16,
        max_position_embeddings=16,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        architectures=["LlamaForCausalLM"],
    )
    torch.manual_seed(SEED)
    model = transformers.LlamaForCausalLM(cfg).eval()
    _randomise(model)
    model.save_pretrained(str(out))
    ids = [tok(s, add_special_tokens=True)["input_ids"] for s in GEN_SEQS]
    fit = [r for r in ids if len(r) <= cfg.max_position_embeddings]
    seqs = [s for s, r in zip(GEN_SEQS, ids, strict=True) if len(r) <= cfg.max_position_embeddings]
    batch, mask = _pad(fit, tok.pad_token_id)
    with torch.no_grad():
        res = model(
            torch.tensor(batch),
            attention_mask=torch.tensor(mask.astype(np.int64)),
            output_hidden_states=True,
        )
    hidden = [h.numpy() for h in res.hidden_states]
    last = torch.tensor(mask.sum(axis=1) - 1)
    pooled = res.hidden_states[-1][torch.arange(len(fit)), last].numpy()
    _save_expected(out, GEN_SEQS, seqs, ids, batch, mask, hidden, pooled)
    (out / "meta.json").write_text(
        json.dumps(
            _meta(
                "generator",
                {
                    "model": "transformers.LlamaForCausalLM",
                    "tokenizer": f"GENERator DNAKmerTokenizer(k=6) from {tokenizer_py.name}",
                    "pooling": "hidden_states[-1] at the last non-padding token (</s>)",
                },
            ),
            indent=2,
        )
    )


def make_nt_v2(nt_repo: Path) -> None:
    """Write a tiny Nucleotide Transformer v2 fixture from InstaDeep's own JAX/Haiku model.

    The Hugging Face NT v2 checkpoints ship their modelling file as remote code, of
    which no verbatim copy was reachable; the reference here is the authors'
    original ``nucleotide_transformer.model`` (Haiku), configured as the v2 models
    are (rotary positions, bias-free SwiGLU feed-forward, RoBERTa LM head). Its
    parameters are written under the Hugging Face NT v2 names (an ``EsmForMaskedLM``
    state dict whose ``intermediate.dense`` is ``2 * intermediate_size`` wide, with
    the unused position table and the per-layer rotary ``inv_freq`` buffers).
    """
    import sys

    import haiku as hk
    import jax
    import jax.numpy as jnp
    import safetensors.numpy

    jax.config.update("jax_default_matmul_precision", "highest")
    sys.path.insert(0, str(nt_repo))
    from nucleotide_transformer.model import (
        NucleotideTransformerConfig,
        build_nucleotide_transformer_fn,
    )
    from nucleotide_transformer.tokenizers import compute_tokens_to_ids_v2

    out = OUT / "nucleotide_transformer_v2"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tokens_to_ids, _ = compute_tokens_to_ids_v2(k_mers=6)
    vocab = sorted(tokens_to_ids, key=tokens_to_ids.get)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = transformers.EsmTokenizer(
        str(out / "vocab.txt"),
        eos_token=None,
        unk_token="<unk>",
        pad_token="<pad>",
        cls_token="<cls>",
        mask_token="<mask>",
    )
    tok.save_pretrained(str(out))
    h, heads, inter, layers, max_tokens = 8, 2, 16, 2, 24
    cfg = NucleotideTransformerConfig(
        alphabet_size=len(vocab),
        pad_token_id=tokens_to_ids["<pad>"],
        mask_token_id=tokens_to_ids["<mask>"],
        max_positions=max_tokens,
        embed_dim=h,
        attention_heads=heads,
        ffn_embed_dim=inter,
        num_layers=layers,
        positional_embedding=None,
        use_rotary_embedding=True,
        add_bias_ffn=False,
        use_glu_in_ffn=True,
        ffn_activation_name="swish",
        lm_head="roberta",
        layer_norm_eps=1e-5,
        embeddings_layers_to_save=tuple(range(1, layers + 1)),
    )
    fn = hk.transform(build_nucleotide_transformer_fn(cfg, model_name="nt"))
    ids = [tok(x)["input_ids"] for x in NT_SEQS]
    fit = [r for r in ids if len(r) <= max_tokens]
    seqs = [x for x, r in zip(NT_SEQS, ids, strict=True) if len(r) <= max_tokens]
    batch, mask = _pad(fit, tok.pad_token_id)
    params = fn.init(jax.random.PRNGKey(SEED), jnp.asarray(batch))
    rng = np.random.default_rng(SEED)
    params = {
        mod: {
            name: (
                1.0 + 0.2 * rng.standard_normal(a.shape)
                if name == "scale"
                else 0.2 * rng.standard_normal(a.shape)
                if a.ndim == 1
                else rng.standard_normal(a.shape) / np.sqrt(a.shape[0])
            ).astype(np.float32)
            for name, a in leaves.items()
        }
        for mod, leaves in params.items()
    }
    res = fn.apply(params, None, jnp.asarray(batch))
    hidden = [np.asarray(params["nt/~/embed"]["embeddings"])[batch] * mask[..., None]]
    hidden += [np.asarray(res[f"embeddings_{i}"]) for i in range(1, layers + 1)]
    m = mask[..., None].astype(np.float32)
    pooled = (hidden[-1] * m).sum(1) / m.sum(1)
    _save_expected(out, NT_SEQS, seqs, ids, batch, mask, hidden, pooled)

    def lin(name):
        p = params[name]
        d = {"weight": p["w"].T.copy()}
        if "b" in p:
            d["bias"] = p["b"]
        return d

    def norm(name):
        return {"weight": params[name]["scale"], "bias": params[name]["offset"]}

    state = {"esm.embeddings.word_embeddings.weight": params["nt/~/embed"]["embeddings"]}
    state["esm.embeddings.position_embeddings.weight"] = np.zeros((max_tokens + 2, h), np.float32)
    d = h // heads
    inv_freq = (1.0 / 10000 ** (np.arange(0, d, 2, dtype=np.float32) / d)).astype(np.float32)
    for i in range(layers):
        src, dst = f"nt/attention_layer_{i}/~/", f"esm.encoder.layer.{i}."
        parts = {
            "attention.self.query": lin(src + "self_attention/query"),
            "attention.self.key": lin(src + "self_attention/key"),
            "attention.self.value": lin(src + "self_attention/value"),
            "attention.output.dense": lin(src + "self_attention/mha_output"),
            "attention.LayerNorm": norm(src + "self_attention_layer_norm"),
            "LayerNorm": norm(src + "final_layer_norm"),
            "intermediate.dense": lin(src + "fc1"),
            "output.dense": lin(src + "fc2"),
        }
        for mod, leaves in parts.items():
            for leaf, arr in leaves.items():
                state[f"{dst}{mod}.{leaf}"] = arr
        state[f"{dst}attention.self.rotary_embeddings.inv_freq"] = inv_freq
    head = "nt/~/roberta_lm_head/~/"
    for leaf, arr in norm(head + "emb_layer_norm_after").items():
        state[f"esm.encoder.emb_layer_norm_after.{leaf}"] = arr
    for leaf, arr in lin(head + "lm_head_fc_1").items():
        state[f"lm_head.dense.{leaf}"] = arr
    state["lm_head.bias"] = params[head + "lm_final_fc"]["b"]  # decoder weight left out: size
    for leaf, arr in norm(head + "lm_head_layer_norm").items():
        state[f"lm_head.layer_norm.{leaf}"] = arr
    safetensors.numpy.save_file(
        {k: np.ascontiguousarray(v, np.float32) for k, v in state.items()},
        str(out / "model.safetensors"),
    )
    config = {
        "architectures": ["EsmForMaskedLM"],
        "auto_map": {
            "AutoConfig": "esm_config.EsmConfig",
            "AutoModelForMaskedLM": "modeling_esm.EsmForMaskedLM",
        },
        "add_bias_fnn": False,  # no model_type: NT v2's config names only its remote code
        "position_embedding_type": "rotary",
        "emb_layer_norm_before": False,
        "token_dropout": False,
        "hidden_act": "gelu",
        "hidden_size": h,
        "intermediate_size": inter,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "layer_norm_eps": 1e-5,
        "max_position_embeddings": max_tokens + 2,
        "pad_token_id": tokens_to_ids["<pad>"],
        "mask_token_id": tokens_to_ids["<mask>"],
        "vocab_size": len(vocab),
        "tie_word_embeddings": True,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    commit = (nt_repo / "COMMIT").read_text().strip() if (nt_repo / "COMMIT").is_file() else "?"
    (out / "meta.json").write_text(
        json.dumps(
            _meta(
                "nucleotide_transformer_v2",
                {
                    "model": "instadeepai/nucleotide-transformer nucleotide_transformer.model "
                    f"(Haiku) at {commit}, haiku {hk.__version__}, jax {jax.__version__}",
                    "tokenizer": "transformers.EsmTokenizer (eos_token=None), NT v2 vocab order",
                    "pooling": "mean of the last layer over the attention mask (cls included)",
                    "compare": "non-padding positions (Haiku masks padded queries too)",
                },
            ),
            indent=2,
        )
    )


def main() -> None:
    """Build every fixture."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator-tokenizer", type=Path, required=True)
    ap.add_argument(
        "--nt-repo",
        type=Path,
        help="a checkout of instadeepai/nucleotide-transformer (with dm-haiku installed) "
        "for the NT v2 fixture; a COMMIT file in it records the commit",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    make_nt("nucleotide_transformer_v1", layer_norm_before=False, token_dropout=False, binary=False)
    make_nt(
        "nucleotide_transformer_v1_bin", layer_norm_before=True, token_dropout=True, binary=True
    )
    make_generator(args.generator_tokenizer)
    names = ["nucleotide_transformer_v1", "nucleotide_transformer_v1_bin", "generator"]
    if args.nt_repo is not None:
        make_nt_v2(args.nt_repo)
        names.append("nucleotide_transformer_v2")
    for d in names:
        for f in sorted((OUT / d).iterdir()):
            print(f"{f.relative_to(OUT)}: {f.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
