r"""Build the tiny DNABERT-2 reference checkpoint for tests/checkpoints/test_dnabert2.py.

Run in a separate environment with torch (never a dependency of diffbio_sc)::

    /work/venv-torch/bin/pip install torch transformers safetensors numpy einops tokenizers
    /work/venv-torch/bin/python scripts/make_dnabert2_fixture.py \\
        --git-dir /path/to/a/clone/.git --commit <sha> --repo <owner/name>

The reference is DNABERT-2's own modelling code, the remote code published with
the ``zhihan1996/DNABERT-2-117M`` checkpoint (``bert_layers.py``,
``bert_padding.py``, ``configuration_bert.py``). The files are read with
``git show <commit>:<file>`` from a public GitHub repository that holds the
checkpoint's files as uploaded (ashal-ali/CS224N_DNABERT2, commit
634202c1fc7d981e3932b5a310bd3fdba41ccdb9, "Upload 9 files"), written to a
temporary package outside this repository and imported from there; they are never
copied into this repository. Its Triton flash-attention path is switched off
(``flash_attn_qkvpacked_func = None``): the model runs its pure-PyTorch attention.

What is built under ``tests/checkpoints/fixtures/dnabert2/``, random weights, seed 0:

* ``tokenizer.json``: a byte-pair-encoding tokenizer trained with the
  ``tokenizers`` library on random DNA in DNABERT-2's own layout (special tokens
  ``[UNK] [CLS] [SEP] [PAD] [MASK]`` at ids 0-4, ``Whitespace`` pre-tokenizer,
  BPE model with ``[UNK]``, no normaliser, ``[CLS] $A [SEP]`` template), read by
  ``transformers.PreTrainedTokenizerFast`` as the checkpoint's
  ``tokenizer_config.json`` asks;
* ``config.json`` / ``model.safetensors``: ``bert_layers.BertForMaskedLM`` (ALiBi,
  gated GELU feed-forward, post-LayerNorm; 2 layers, 6 heads so that the ALiBi
  slopes take upstream's non-power-of-two branch as DNABERT-2's 12 heads do),
  the state dict in the published key layout (the tied decoder weight once);
  ``max_position_embeddings`` 24 is the context diffbio_sc enforces;
* ``expected.npz``: the sequences (``all_sequences``; ``sequences`` those within
  the context), upstream's token ids of every sequence (``ids_<i>``; ``N`` and
  lower case through upstream's ``[UNK]``; one sequence longer than the context),
  the right-padded batch (``input_ids``, ``attention_mask``), every hidden state
  (``hidden_0`` the embeddings, ``hidden_<l>`` layer ``l``'s output, upstream's
  unpadded outputs padded back with zeros by its own ``pad_input``; padded rows of
  ``hidden_0`` set to zero) and the pooled embedding (mean of the last layer over
  the sequence's tokens, ``[CLS]``/``[SEP]`` included, as DNABERT-2's README);
* ``meta.json``: the reference repository and commit and the versions used.

``dnabert2_bin/`` holds the same checkpoint with its weights as ``pytorch_model.bin``
(``torch.save`` of the state dict, as the published checkpoint ships them; read here
through the restricted unpickler).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import safetensors.torch
import tokenizers
import torch
import transformers

OUT = Path(__file__).resolve().parents[1] / "tests" / "checkpoints" / "fixtures" / "dnabert2"
OUT_BIN = OUT.parent / "dnabert2_bin"
SEED = 0
FILES = ("bert_layers.py", "bert_padding.py", "configuration_bert.py")
SEQS = [
    "ACGTACGTAC",
    "ATCGGANNACGTTTGCAACGTAGGCTTACGATCGA",
    "TTGACCATGCAATGCCGTAGGACTTACCGATTGACA",
    "acgtACGTACGTTGCA",
    "ACGTACGTAC" * 30,
]
CONFIG = {
    "_name_or_path": "zhihan1996/DNABERT-2-117M",
    "alibi_starting_size": 512,
    "architectures": ["BertForMaskedLM"],
    "attention_probs_dropout_prob": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_bert.BertConfig",
        "AutoModel": "bert_layers.BertModel",
        "AutoModelForMaskedLM": "bert_layers.BertForMaskedLM",
        "AutoModelForSequenceClassification": "bert_layers.BertForSequenceClassification",
    },
    "classifier_dropout": None,
    "gradient_checkpointing": False,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 24,
    "initializer_range": 0.02,
    "intermediate_size": 32,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 24,
    "model_type": "bert",
    "num_attention_heads": 6,
    "num_hidden_layers": 2,
    "position_embedding_type": "absolute",
    "torch_dtype": "float32",
    "transformers_version": "4.28.0",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": None,  # the trained tokenizer's
}


def _reference_package(git_dir: Path, commit: str, where: Path):
    """Write the upstream files at ``commit`` to ``where/dnabert2_ref`` and import it."""
    pkg = where / "dnabert2_ref"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for f in FILES:
        text = subprocess.run(
            ["git", "--git-dir", str(git_dir), "show", f"{commit}:{f}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (pkg / f).write_text(text)
    sys.path.insert(0, str(where))
    layers = importlib.import_module("dnabert2_ref.bert_layers")
    layers.flash_attn_qkvpacked_func = None  # the pure-PyTorch attention path
    return (
        layers,
        importlib.import_module("dnabert2_ref.bert_padding"),
        importlib.import_module("dnabert2_ref.configuration_bert"),
    )


def _train_tokenizer() -> tokenizers.Tokenizer:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    rng = np.random.default_rng(SEED)
    corpus = ["".join(rng.choice(list("ACGT"), 200)) for _ in range(200)]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    special = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    trainer = trainers.BpeTrainer(vocab_size=40, special_tokens=special, show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 1), ("[SEP]", 2)],
    )
    return tok


def _randomise(model) -> None:
    """Weights of order one (not the small default init), so that errors show at 1e-5."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n.lower() and n.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.ndim == 1:
                p.copy_(0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)


def make(git_dir: Path, commit: str, repo: str) -> None:
    """Build the fixture (see the module docstring)."""
    torch.manual_seed(SEED)
    for d in (OUT, OUT_BIN):
        if d.exists():
            shutil.rmtree(d)
    OUT.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        layers, padding, configuration = _reference_package(git_dir, commit, Path(tmp))

        tok = _train_tokenizer()
        tok.save(str(OUT / "tokenizer.json"))
        tcfg = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "mask_token": "[MASK]",
        }
        (OUT / "tokenizer_config.json").write_text(json.dumps(tcfg))
        hf_tok = transformers.PreTrainedTokenizerFast(
            tokenizer_file=str(OUT / "tokenizer.json"),
            **{k: v for k, v in tcfg.items() if k != "tokenizer_class"},
        )

        cfg_doc = dict(CONFIG, vocab_size=tok.get_vocab_size())
        (OUT / "config.json").write_text(json.dumps(cfg_doc, indent=2))
        kwargs = {k: v for k, v in cfg_doc.items() if not k.startswith("_") and k != "auto_map"}
        config = configuration.BertConfig(**kwargs)
        model = layers.BertForMaskedLM(config)
        _randomise(model)
        model.eval()
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        state.pop("cls.predictions.decoder.weight")  # tied to the word embeddings
        safetensors.torch.save_file(
            state, str(OUT / "model.safetensors"), metadata={"format": "pt"}
        )
        # the same weights as the published checkpoint ships them: pytorch_model.bin
        OUT_BIN.mkdir(parents=True)
        torch.save(state, OUT_BIN / "pytorch_model.bin")

        ids = [hf_tok(s)["input_ids"] for s in SEQS]
        ctx = cfg_doc["max_position_embeddings"]
        seqs = [s for s, i in zip(SEQS, ids, strict=True) if len(i) <= ctx]
        assert len(seqs) == len(SEQS) - 1, [len(i) for i in ids]
        batch = hf_tok(seqs, padding=True, return_tensors="pt")
        input_ids, mask = batch["input_ids"], batch["attention_mask"]

        bert = model.bert
        with torch.no_grad():
            emb = bert.embeddings(input_ids, torch.zeros_like(input_ids), None)
            layers_out = bert.encoder(emb, mask, output_all_encoded_layers=True)
            _, indices, _, _ = padding.unpad_input(emb, mask.bool())
            b, t = input_ids.shape
            hidden = [emb * mask[..., None]]
            hidden += [padding.pad_input(h, indices, b, t) for h in layers_out]
            last, _ = bert(input_ids, attention_mask=mask)  # BertModel's own padded output
            assert torch.equal(last, hidden[-1])
            # each sequence alone, without padding: the same rows
            for i, s in enumerate(seqs):
                alone = torch.tensor([hf_tok(s)["input_ids"]])
                out, _ = bert(alone)
                n = int(mask[i].sum())
                torch.testing.assert_close(out[0], last[i, :n], rtol=0, atol=1e-5)
            # the README's embedding: mean of the last layer over the sequence's tokens
            pooled = torch.stack(
                [torch.mean(last[i, : int(mask[i].sum())], dim=0) for i in range(b)]
            )

        arrays = {
            "all_sequences": np.asarray(SEQS),
            "sequences": np.asarray(seqs),
            "input_ids": input_ids.numpy().astype(np.int32),
            "attention_mask": mask.numpy().astype(bool),
            "pooled": pooled.numpy().astype(np.float32),
        }
        for i, row in enumerate(ids):
            arrays[f"ids_{i}"] = np.asarray(row, dtype=np.int32)
        for i, h in enumerate(hidden):
            arrays[f"hidden_{i}"] = h.numpy().astype(np.float32)
        np.savez_compressed(OUT / "expected.npz", **arrays)

    meta = {
        "name": "dnabert2",
        "reference": {
            "repository": f"https://github.com/{repo}",
            "commit": commit,
            "files": list(FILES),
            "what": "remote code of the zhihan1996/DNABERT-2-117M checkpoint as uploaded there",
            "attention": "pure PyTorch (flash_attn_qkvpacked_func = None)",
        },
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "seed": SEED,
        "model": "bert_layers.BertForMaskedLM (hidden states of its .bert)",
        "tokenizer": "transformers.PreTrainedTokenizerFast(tokenizer_file=tokenizer.json)",
        "pooling": "mean of the last layer over the sequence's tokens ([CLS], [SEP] included)",
    }
    (OUT / "meta.json").write_text(json.dumps(meta, indent=2))
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(OUT / f, OUT_BIN / f)
    for f in sorted(OUT.iterdir()):
        print(f"{f.relative_to(OUT.parent)}: {f.stat().st_size / 1024:.1f} KiB")


def main() -> None:
    """Build the DNABERT-2 fixture."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--git-dir", type=Path, required=True, help="git directory of the reference")
    ap.add_argument("--commit", default="634202c1fc7d981e3932b5a310bd3fdba41ccdb9")
    ap.add_argument("--repo", default="ashal-ali/CS224N_DNABERT2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    make(args.git_dir, args.commit, args.repo)


if __name__ == "__main__":
    main()
