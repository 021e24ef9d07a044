"""Build the tiny reference checkpoints under tests/checkpoints/fixtures with the real upstream code.

Run once, in a separate environment that has torch (never a dependency of diffbio_sc)::

    python -m venv /tmp/venv-torch
    /tmp/venv-torch/bin/pip install torch transformers safetensors numpy
    /tmp/venv-torch/bin/pip install scgpt --no-deps
    /tmp/venv-torch/bin/python scripts/make_checkpoint_fixtures.py

What is built, all with random weights and a fixed seed:

* ``geneformer_v1/``: ``transformers.BertForMaskedLM`` (relu, 3 layers x 32,
  32 positions) saved with ``save_pretrained`` as ``model.safetensors``, plus a
  Geneformer-V1-style token dictionary (``<pad>``, ``<mask>``, then Ensembl
  IDs) and gene-median dictionary as JSON;
* ``geneformer_v1_bin/``: the same model saved with ``safe_serialization=False``
  (``pytorch_model.bin``, zip format), and ``legacy_pytorch_model.bin``: the same
  state dict in PyTorch's pre-1.6 (non-zip) format;
* ``geneformer_v2/``: a V2-style model (gelu, ``<cls>`` and ``<eos>``);
* ``scgpt/`` and ``scgpt_category/``: scGPT's own ``scgpt.model.model.TransformerModel``
  (the installed ``scgpt`` package's module, imported without the package's
  ``__init__``, which needs torchtext and scanpy), continuous and category
  value encoders, saved as ``args.json``, ``vocab.json`` and ``best_model.pt``
  (``torch.save(model.state_dict())``). Without flash-attn, scGPT builds
  ``torch.nn.TransformerEncoderLayer`` (``self_attn.in_proj_weight`` keys); the
  tests rename them to flash-attn's ``Wqkv`` to check that mapping.

``cells.npz`` holds a small count matrix (integers, distinct within each cell
so that rank order and scGPT's bins have no ties) with Ensembl IDs and symbols.
The expected outputs (``expected_*.npz``) are computed from it by upstream
procedures: Geneformer's tokenization (normalise by the cell's total, times
10,000, divided by the gene median, rank descending), batches padded to their
longest cell, every layer's hidden states, the MLM logits, and the pooled
embeddings as Geneformer's ``EmbExtractor`` computes them (second-to-last layer,
mean over the non-padding tokens excluding ``<cls>``/``<eos>``, and ``<cls>``);
for scGPT, bins from scGPT's own ``binning`` (run from its source), ``<cls>``
first with ``pad_value``, every layer's output and the L2-normalised ``<cls>``
embedding as ``get_batch_cell_embeddings`` computes it.
"""

from __future__ import annotations

import ast
import json
import logging
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "checkpoints" / "fixtures"
SEED = 0
N_GENES = 48  # genes in the AnnData; the last 8 are unknown to the models
N_VOCAB_GENES = 40
TARGET_SUM = 10_000.0


def make_cells(rng: np.random.Generator):
    """Return counts for 7 cells: distinct positive integers within each cell, varied lengths."""
    n_expr = [3, 11, 18, 27, 33, 40, 46]
    counts = np.zeros((len(n_expr), N_GENES), dtype=np.int64)
    for i, k in enumerate(n_expr):
        genes = rng.choice(N_GENES, size=k, replace=False)
        counts[i, genes] = rng.choice(np.arange(1, 500), size=k, replace=False)
    ensembl = np.asarray([f"ENSG{i + 1:011d}" for i in range(N_GENES)])
    symbols = np.asarray([f"GENE{i + 1}" for i in range(N_GENES)])
    obs = np.asarray([f"cell{i}" for i in range(len(n_expr))])
    return counts, ensembl, symbols, obs


# ------------------------------------------------------------------ Geneformer


def geneformer_tokens(counts, ensembl, token_dict, medians, max_len, cls_eos):
    """Geneformer's TranscriptomeTokenizer, step by step, in NumPy."""
    n_counts = counts.sum(axis=1, keepdims=True).astype(np.float64)
    in_dict = np.asarray([g in token_dict for g in ensembl])
    norm = np.asarray([medians[g] for g in ensembl[in_dict]])
    toks = np.asarray([token_dict[g] for g in ensembl[in_dict]])
    x = counts[:, in_dict] / n_counts * TARGET_SUM / norm
    cells = []
    for row in x:
        nz = np.flatnonzero(row)
        ranked = toks[nz][np.argsort(-row[nz])]
        if cls_eos:
            ranked = np.concatenate(
                [[token_dict["<cls>"]], ranked[: max_len - 2], [token_dict["<eos>"]]]
            )
        else:
            ranked = ranked[:max_len]
        cells.append(ranked.astype(np.int64))
    return cells


def pad(cells, pad_id, length=None):
    """Right-pad token lists to one array."""
    length = length or max(len(c) for c in cells)
    out = np.full((len(cells), length), pad_id, dtype=np.int64)
    for i, c in enumerate(cells):
        out[i, : len(c)] = c
    return out


def build_geneformer(name, cfg_kwargs, ensembl, counts, rng, *, v2: bool):
    """Save a random BertForMaskedLM with its dictionaries and its expected outputs."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(SEED + (2 if v2 else 1))
    specials = ["<pad>", "<mask>"] + (["<cls>", "<eos>"] if v2 else [])
    token_dict = {t: i for i, t in enumerate(specials)}
    for g in ensembl[:N_VOCAB_GENES]:
        token_dict[str(g)] = len(token_dict)
    medians = {str(g): float(rng.uniform(0.5, 20.0)) for g in ensembl[:N_VOCAB_GENES]}
    config = BertConfig(vocab_size=len(token_dict), pad_token_id=0, **cfg_kwargs)
    model = BertForMaskedLM(config).eval()
    d = OUT / name
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d, safe_serialization=True)
    (d / "token_dictionary.json").write_text(json.dumps(token_dict))
    (d / "gene_median_dictionary.json").write_text(json.dumps(medians))

    max_len = config.max_position_embeddings
    cells = geneformer_tokens(counts, ensembl, token_dict, medians, max_len, v2)
    ids = pad(cells, 0)
    lengths = np.asarray([len(c) for c in cells])
    attn = (np.arange(ids.shape[1])[None] < lengths[:, None]).astype(np.int64)
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(attn),
            output_hidden_states=True,
        )
    hidden = np.stack([h.numpy() for h in out.hidden_states]).astype(np.float32)
    layer = config.num_hidden_layers - 1  # EmbExtractor's default emb_layer=-1
    embs = torch.from_numpy(hidden[layer])
    # EmbExtractor.get_embs: drop <cls> (and <eos>) and average the non-padding positions.
    if v2:
        mean = mean_nonpadding(embs[:, 1:, :], torch.from_numpy(lengths - 2))
    else:
        mean = mean_nonpadding(embs, torch.from_numpy(lengths))
    np.savez_compressed(
        d.parent / f"expected_{name}.npz",
        input_ids=ids,
        lengths=lengths,
        hidden_states=hidden,
        logits=out.logits.numpy().astype(np.float32),
        mean_embedding=mean.numpy().astype(np.float32),
        cls_embedding=hidden[layer][:, 0].astype(np.float32),
        last_layer_mean=mean_nonpadding(
            torch.from_numpy(hidden[-1][:, 1:] if v2 else hidden[-1]),
            torch.from_numpy(lengths - 2 if v2 else lengths),
        ).numpy(),
    )
    return model, d


def mean_nonpadding(embs, lengths):
    """Geneformer's perturber_utils.mean_nonpadding_embs."""
    mask = torch.arange(embs.size(1))[None, :] < lengths[:, None]
    masked = embs * mask.unsqueeze(2).float()
    return masked.sum(dim=1) / lengths.view(-1, 1).float()


# ------------------------------------------------------------------ scGPT


_SCGPT: list = []


def import_scgpt_model():
    """scgpt.model.model without scgpt/__init__ (which imports torchtext, scanpy, wandb...)."""
    if _SCGPT:
        return _SCGPT[0]
    import importlib.util

    spec = importlib.util.find_spec("scgpt")
    root = Path(spec.submodule_search_locations[0])
    for name, path in (("scgpt", root), ("scgpt.model", root / "model")):
        mod = types.ModuleType(name)
        mod.__path__ = [str(path)]
        sys.modules[name] = mod
    sys.modules["scgpt"].logger = logging.getLogger("scGPT")
    import scgpt.model.model as mm

    # scGPT's binning and _digitize, run from the installed source (its module
    # imports scanpy, which this environment does not need).
    src = (root / "preprocess.py").read_text()
    tree = ast.parse(src)
    fns = [
        n
        for n in tree.body
        if isinstance(n, ast.FunctionDef) and n.name in ("binning", "_digitize")
    ]
    ns = {"np": np, "torch": torch, "Union": object, "logger": logging.getLogger("scGPT")}
    exec(compile(ast.Module(body=fns, type_ignores=[]), str(root / "preprocess.py"), "exec"), ns)
    _SCGPT.append((mm, ns["binning"]))
    return _SCGPT[0]


def build_scgpt(name, symbols, counts, *, style: str):
    """Save a random scGPT TransformerModel with args/vocab and its expected outputs."""
    mm, binning = import_scgpt_model()
    torch.manual_seed(SEED + 10)
    np.random.seed(SEED)  # noqa: NPY002 - scGPT's binning draws from the global RNG
    n_bins = 51
    pad_value = -2 if style == "continuous" else n_bins
    genes = [str(s) for s in symbols[:N_VOCAB_GENES]]
    vocab = {g: i for i, g in enumerate(genes)}
    vocab["<pad>"] = len(vocab)
    vocab["<cls>"] = len(vocab)
    vocab["<eoc>"] = len(vocab)
    args = {
        "embsize": 16,
        "nheads": 4,
        "d_hid": 24,
        "nlayers": 3,
        "n_layers_cls": 3,
        "dropout": 0.2,
        "pad_token": "<pad>",
        "pad_value": pad_value,
        "mask_value": -1 if style == "continuous" else n_bins + 1,
        "n_bins": n_bins,
        "input_emb_style": style,
        "max_seq_len": 1200,
    }
    model = mm.TransformerModel(
        ntoken=len(vocab),
        d_model=args["embsize"],
        nhead=args["nheads"],
        d_hid=args["d_hid"],
        nlayers=args["nlayers"],
        nlayers_cls=args["n_layers_cls"],
        n_cls=1,
        vocab=vocab,
        dropout=args["dropout"],
        pad_token=args["pad_token"],
        pad_value=pad_value,
        do_mvc=True,
        do_dab=False,
        use_batch_labels=False,
        domain_spec_batchnorm=False,
        input_emb_style=style,
        n_input_bins=n_bins + 2 if style == "category" else None,
        explicit_zero_prob=False,
        use_fast_transformer=False,
        pre_norm=False,
    ).eval()
    # scGPT initialises only the gene embedding; give every tensor a random value.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    d = OUT / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    (d / "args.json").write_text(json.dumps(args, indent=1))
    (d / "vocab.json").write_text(json.dumps(vocab))
    torch.save(model.state_dict(), d / "best_model.pt")

    # get_batch_cell_embeddings: in-vocab genes, nonzero values, <cls> first with pad_value,
    # values binned by scGPT's binning (after the first token), padded to the batch's longest.
    gene_ids = np.asarray([vocab.get(str(s), -1) for s in symbols])
    keep = gene_ids >= 0
    x = counts[:, keep].astype(np.float32)
    gid = gene_ids[keep]
    cells_g, cells_v = [], []
    for row in x:
        nz = np.nonzero(row)[0]
        g = np.insert(gid[nz], 0, vocab["<cls>"])
        v = np.insert(row[nz], 0, pad_value).astype(np.float32)
        v[1:] = binning(row=v[1:], n_bins=n_bins)
        cells_g.append(g)
        cells_v.append(v)
    lengths = np.asarray([len(g) for g in cells_g])
    ids = pad(cells_g, vocab["<pad>"])
    vals = np.full(ids.shape, pad_value, dtype=np.float32)
    for i, v in enumerate(cells_v):
        vals[i, : len(v)] = v
    mask = torch.from_numpy(ids == vocab["<pad>"])
    layer_out = []
    hooks = [
        layer.register_forward_hook(lambda _m, _i, o: layer_out.append(o.detach().clone()))
        for layer in model.transformer_encoder.layers
    ]
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad():
        final = model._encode(
            torch.from_numpy(ids), torch.from_numpy(vals), src_key_padding_mask=mask
        )
        emb0 = model.encoder(torch.from_numpy(ids)) + model.value_encoder(torch.from_numpy(vals))
    for h in hooks:
        h.remove()
    hidden = np.stack([emb0.numpy()] + [o.numpy() for o in layer_out]).astype(np.float32)
    assert np.allclose(hidden[-1], final.numpy())
    cls = final[:, 0, :].numpy()
    cls = cls / np.linalg.norm(cls, axis=1, keepdims=True)
    np.savez_compressed(
        OUT / f"expected_{name}.npz",
        input_ids=ids,
        values=vals,
        lengths=lengths,
        hidden_states=hidden,
        cls_embedding=cls.astype(np.float32),
    )


def main() -> None:
    """Build every fixture."""
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    counts, ensembl, symbols, obs = make_cells(rng)
    np.savez_compressed(OUT / "cells.npz", counts=counts, ensembl=ensembl, symbols=symbols, obs=obs)

    v1 = dict(
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=32,
        hidden_act="relu",
        layer_norm_eps=1e-12,
        hidden_dropout_prob=0.02,
        attention_probs_dropout_prob=0.02,
    )
    model, d = build_geneformer("geneformer_v1", v1, ensembl, counts, rng, v2=False)
    # transformers 5 writes safetensors only; its .bin format was torch.save of the
    # state dict (the tied decoder weight sharing the word embeddings' storage).
    dbin = OUT / "geneformer_v1_bin"
    shutil.rmtree(dbin, ignore_errors=True)
    dbin.mkdir()
    for f in ("config.json", "token_dictionary.json", "gene_median_dictionary.json"):
        shutil.copy(d / f, dbin / f)
    torch.save(model.state_dict(), dbin / "pytorch_model.bin")
    torch.save(
        model.state_dict(), dbin / "legacy_pytorch_model.bin", _use_new_zipfile_serialization=False
    )
    (dbin / "generation_config.json").unlink(missing_ok=True)
    (d / "generation_config.json").unlink(missing_ok=True)

    v2 = dict(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=32,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
    )
    build_geneformer("geneformer_v2", v2, ensembl, counts, rng, v2=True)
    (OUT / "geneformer_v2" / "generation_config.json").unlink(missing_ok=True)

    build_scgpt("scgpt", symbols, counts, style="continuous")
    build_scgpt("scgpt_category", symbols, counts, style="category")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1024:.0f} KiB); torch {torch.__version__}")


if __name__ == "__main__":
    main()
