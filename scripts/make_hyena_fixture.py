r"""Build the tiny HyenaDNA reference checkpoint and expected outputs for the tests.

Runs the upstream reference code itself, in a separate environment with torch
(never a dependency of diffbio_sc)::

    /work/venv-torch/bin/python scripts/make_hyena_fixture.py \
        --modeling-git /work/.mirror/shubhamtkr+checkpoint-62500/repo \
        --standalone-git /work/.mirror/HazyResearch+hyena-dna/repo

The two ``--*-git`` arguments are bare git directories of public repositories
(brought with the developers' ``fetch`` tool); the files are read from them at
generation time (``git show <commit>:<path>``), written to a temporary folder and
imported from there; nothing is copied into this repository:

* the modelling code: ``modeling_hyena.py`` + ``configuration_hyena.py``, the
  remote code of the ``LongSafari/hyenadna-*-hf`` checkpoints, as copied beside a
  public fine-tuned checkpoint (``MODELING_REPO`` at ``MODELING_COMMIT``);
* the tokenizer: ``CharacterTokenizer`` of HazyResearch/hyena-dna's
  ``standalone_hyenadna.py`` (``STANDALONE_COMMIT``) with the characters
  ``A C G T N``: special tokens ``[CLS]`` 0, ``[SEP]`` 1, ``[BOS]`` 2, ``[MASK]``
  3, ``[PAD]`` 4, ``[RESERVED]`` 5, ``[UNK]`` 6, then the characters from 7;
  every character outside them (lower case included) is ``[UNK]``. The ids of
  the characters come from its ``encode(..., add_special_tokens=False)``; the
  ``-hf`` checkpoints' ``tokenization_hyena.py`` then appends only ``[SEP]``
  (its ``build_inputs_with_special_tokens`` is ``token_ids_0 + [sep]``, the
  standalone file's ``[CLS] + ids + [SEP]`` rule having its ``cls`` commented
  out), which is applied here.

Built under ``tests/checkpoints/fixtures/``, random weights (``torch.manual_seed(0)``,
upstream's initialisation, then every tensor perturbed so that no weight is a
trivial 0 or 1):

* ``hyenadna/``: ``HyenaDNAModel`` (d_model 32, 2 layers, d_inner 64,
  emb_dim 5, filter_order 16, max_seq_len 1026) saved with ``save_pretrained``
  (``config.json`` + ``model.safetensors``; the filter's tied sin frequency
  stored once per layer, as transformers 4.x's ``save_pretrained`` wrote it);
* ``hyenadna_bin/``: the same weights as a ``HyenaDNAForCausalLM`` state dict
  (``hyena.`` prefix, ``lm_head.weight``, every tied frequency name) saved with ``torch.save`` as
  ``pytorch_model.bin`` (read through the restricted unpickler).

``hyenadna/expected.npz``: ``all_sequences``, ``ids_<i>`` (upstream's ids of each
sequence, ``[SEP]`` included), ``sequences`` / ``input_ids`` (the in-context ones,
right-padded with ``[PAD]``), ``hidden_<j>`` (upstream's ``output_hidden_states``:
embeddings, each block, the final LayerNorm) and ``pooled`` (mean of the last
hidden state over the non-``[PAD]`` tokens, computed in torch); ``meta.json``
records the reference repositories, commits and torch / transformers versions.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "tests" / "checkpoints" / "fixtures"
MODELING_REPO = "shubhamtkr/checkpoint-62500"
MODELING_COMMIT = "18ec6529d286b28beccf5e674d287fe8491d0883"
STANDALONE_REPO = "HazyResearch/hyena-dna"
STANDALONE_COMMIT = "d553021b483b82980aa4b868b37ec2d4332e198a"
SEED = 0
CONFIG = dict(
    vocab_size=12,
    d_model=32,
    n_layer=2,
    d_inner=64,
    max_seq_len=1026,
    emb_dim=5,
    filter_order=16,
    num_inner_mlps=2,
    activation_freq=10,
    train_freq=True,
    layer_norm_epsilon=1e-5,
    pad_vocab_size_multiple=8,
    embed_dropout=0.0,
    pad_token_id=4,
)
SEQUENCES = [
    "ACGTACGTAC",
    "ATCGGANNACGTTTGCAACGTAGGCTTACGATCGA",
    "acgtACGTACGTTGnn",  # lower case: upstream's [UNK]
    "ACGTRACGTACG",  # R: [UNK]
    "TTGACCATGCAATGCCGTAGGACTTACCGAGCTAGCTAGGATCGATCGGCTAGCTTAGC" * 3,
    "ACGTACGTAC" * 110,  # 1,100 bases + [SEP]: longer than the 1,026-token context
]


def git_show(git_dir: Path, commit: str, path: str) -> str:
    """Text of ``path`` at ``commit`` in the bare repository ``git_dir``."""
    return subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def import_upstream(modeling_git: Path, standalone_git: Path, tmp: Path):
    """Import the fetched modelling package and the standalone tokenizer class."""
    pkg = tmp / "hyena_ref"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("modeling_hyena.py", "configuration_hyena.py"):
        (pkg / name).write_text(git_show(modeling_git, MODELING_COMMIT, name))
    (tmp / "standalone_hyenadna.py").write_text(
        git_show(standalone_git, STANDALONE_COMMIT, "standalone_hyenadna.py")
    )
    sys.path.insert(0, str(tmp))
    if importlib.util.find_spec("torchvision") is None:
        # the standalone file imports torchvision.ops.StochasticDepth for its model,
        # which is not used here (only its tokenizer): a stand-in keeps the import working
        import types

        tv, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
        ops.StochasticDepth = torch.nn.Identity
        tv.ops = ops
        sys.modules.update({"torchvision": tv, "torchvision.ops": ops})
    modeling = importlib.import_module("hyena_ref.modeling_hyena")
    configuration = importlib.import_module("hyena_ref.configuration_hyena")
    standalone = importlib.import_module("standalone_hyenadna")
    return modeling, configuration, standalone


def make_tokenizer(standalone, max_len: int):
    """Upstream's ``CharacterTokenizer`` (ACGTN).

    Its ``__init__`` calls ``super().__init__`` before setting its vocabulary, which
    recent ``transformers`` versions read during that call (through ``get_vocab``,
    which the ``-hf`` tokenizer defines and the standalone one lacks); the
    vocabulary is set first here (the same dictionary) and ``get_vocab`` returns it,
    nothing else changes.
    """

    class cls(standalone.CharacterTokenizer):
        def get_vocab(self):
            return dict(self._vocab_str_to_int)

    tok = cls.__new__(cls)
    tok._vocab_str_to_int = {
        "[CLS]": 0,
        "[SEP]": 1,
        "[BOS]": 2,
        "[MASK]": 3,
        "[PAD]": 4,
        "[RESERVED]": 5,
        "[UNK]": 6,
        **{ch: i + 7 for i, ch in enumerate("ACGTN")},
    }
    tok._vocab_int_to_str = {v: k for k, v in tok._vocab_str_to_int.items()}
    cls.__init__(tok, characters=list("ACGTN"), model_max_length=max_len, padding_side="right")
    return tok


def hf_ids(tok, seq: str) -> list[int]:
    """``-hf`` rule: the characters' ids, then ``[SEP]`` (see the module docstring)."""
    return list(tok.encode(seq, add_special_tokens=False)) + [tok.sep_token_id]


def perturb(model) -> None:
    """Give every tensor a non-trivial random value (torch generator, seeded)."""
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        seen = set()
        for name, p in model.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("freq"):
                p.add_(noise * 0.5)
            elif p.ndim == 1:
                p.add_(noise * 0.05)
            else:
                p.add_(noise * 0.05)


def main() -> None:
    """Build both fixture folders (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modeling-git", type=Path, required=True)
    ap.add_argument("--standalone-git", type=Path, required=True)
    args = ap.parse_args()
    torch.manual_seed(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        modeling, configuration, standalone = import_upstream(
            args.modeling_git, args.standalone_git, Path(tmp)
        )
        cfg = configuration.HyenaConfig(**CONFIG)
        model = modeling.HyenaDNAModel(cfg).eval()
        perturb(model)
        tok = make_tokenizer(standalone, CONFIG["max_seq_len"])

        out = OUT / "hyenadna"
        out.mkdir(parents=True, exist_ok=True)
        # save_pretrained's own layout: config.json, and model.safetensors with each
        # group of shared tensors (the filter's tied sin frequency) stored once,
        # under its first name (what transformers 4.x wrote; transformers 5 refuses
        # to save the untied-by-declaration sharing, so it is done here)
        model.config.save_pretrained(out)
        state, seen = {}, {}
        for name, tensor in model.state_dict().items():
            key = tensor.data_ptr()
            if key in seen and name.endswith("freq"):
                continue
            seen[key] = name
            state[name] = tensor.detach().clone().contiguous()
        save_file(state, out / "model.safetensors", metadata={"format": "pt"})
        cfg_doc = json.loads((out / "config.json").read_text())
        cfg_doc.pop("auto_map", None)
        (out / "config.json").write_text(json.dumps(cfg_doc, indent=2, sort_keys=True) + "\n")

        ids = [hf_ids(tok, s) for s in SEQUENCES]
        inside = [i for i, r in enumerate(ids) if len(r) <= CONFIG["max_seq_len"]]
        width = max(len(ids[i]) for i in inside)
        batch = np.full((len(inside), width), 4, np.int64)
        for row, i in enumerate(inside):
            batch[row, : len(ids[i])] = ids[i]
        with torch.inference_mode():
            res = model(torch.from_numpy(batch), output_hidden_states=True, return_dict=True)
            hidden = [h.float().numpy() for h in res.hidden_states]
            keep = torch.from_numpy(batch != 4).float()
            last = res.hidden_states[-1]
            pooled = ((last * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)).numpy()
        arrays = {
            "all_sequences": np.array(SEQUENCES),
            "sequences": np.array([SEQUENCES[i] for i in inside]),
            "input_ids": batch.astype(np.int32),
            "pooled": pooled.astype(np.float32),
        }
        for i, r in enumerate(ids):
            arrays[f"ids_{i}"] = np.asarray(r, np.int32)
        for j, h in enumerate(hidden):
            arrays[f"hidden_{j}"] = h.astype(np.float32)
        np.savez_compressed(out / "expected.npz", **arrays)
        meta = {
            "modeling": f"github.com/{MODELING_REPO} @ {MODELING_COMMIT} "
            "(modeling_hyena.py, configuration_hyena.py: the LongSafari/hyenadna-*-hf remote code)",
            "tokenizer": f"github.com/{STANDALONE_REPO} @ {STANDALONE_COMMIT} "
            "(standalone_hyenadna.py CharacterTokenizer; [SEP] appended as the -hf tokenizer)",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "seed": SEED,
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")

        # the same weights as a HyenaDNAForCausalLM .bin (prefix + head)
        out_bin = OUT / "hyenadna_bin"
        out_bin.mkdir(parents=True, exist_ok=True)
        state = {f"hyena.{k}": v.clone() for k, v in model.state_dict().items()}
        vocab_rows = model.backbone.embeddings.word_embeddings.weight.shape[0]
        state["lm_head.weight"] = torch.randn(vocab_rows, CONFIG["d_model"])
        torch.save(state, out_bin / "pytorch_model.bin")
        (out_bin / "config.json").write_text(json.dumps(cfg_doc, indent=2, sort_keys=True) + "\n")
        print(f"wrote {out} and {out_bin}; state keys: {sorted(model.state_dict())[:6]}...")


if __name__ == "__main__":
    main()
