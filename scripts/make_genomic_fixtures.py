r"""Build the tiny GENERator and Nucleotide Transformer v1 reference checkpoints for the tests.

Run in a separate environment with torch (never a dependency of diffbio_sc)::

    python -m venv /work/venv-torch
    /work/venv-torch/bin/pip install torch transformers safetensors numpy
    /work/venv-torch/bin/python scripts/make_genomic_fixtures.py \\
        --generator-tokenizer /path/to/GENERator/tokenizer.py

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


def main() -> None:
    """Build every fixture."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator-tokenizer", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    make_nt("nucleotide_transformer_v1", layer_norm_before=False, token_dropout=False, binary=False)
    make_nt(
        "nucleotide_transformer_v1_bin", layer_norm_before=True, token_dropout=True, binary=True
    )
    make_generator(args.generator_tokenizer)
    for d in ("nucleotide_transformer_v1", "nucleotide_transformer_v1_bin", "generator"):
        for f in sorted((OUT / d).iterdir()):
            print(f"{f.relative_to(OUT)}: {f.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
