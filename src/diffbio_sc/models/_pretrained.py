"""Published checkpoints as runnable models: weights, architecture and tokenizer dictionaries.

:func:`load_checkpoint` reads a Geneformer (Hugging Face BERT) or scGPT
checkpoint directory with :func:`diffbio_sc.io.read_checkpoint` (no torch, no
general unpickling), builds the matching Flax NNX encoder, and checks the
tokenizer dictionaries against the weights: a dictionary that does not fit the
checkpoint's vocabulary is an error naming both files.

Dictionaries
    Geneformer: ``token_dictionary`` (gene -> token id, with ``<pad>``/``<mask>``
    and, for V2 models, ``<cls>``/``<eos>``) and ``gene_median_dictionary``
    (gene -> nonzero median), by default ``token_dictionary.json`` and
    ``gene_median_dictionary.json`` in the checkpoint directory. Upstream ships
    them as pickles; convert them once to JSON where you trust the files::

        import json, pickle
        tok = pickle.load(open("token_dictionary_gc104M.pkl", "rb"))
        json.dump({k: int(v) for k, v in tok.items()}, open("token_dictionary.json", "w"))
        med = pickle.load(open("gene_median_dictionary_gc104M.pkl", "rb"))
        json.dump({k: float(v) for k, v in med.items()}, open("gene_median_dictionary.json", "w"))

    scGPT: ``vocab.json`` in the checkpoint directory (``<pad>``, ``<cls>`` and
    ``<eoc>`` appended when absent, as scGPT's ``embed_data`` does).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import DfmInputError

__all__ = ["CheckpointModel", "load_checkpoint", "mapping_sha256"]

#: Geneformer's input sizes: V1 2,048 genes; V2 <cls> + 4,094 genes + <eos>.
GENEFORMER_V1_TOKENS = 2048
GENEFORMER_V2_TOKENS = 4096


def mapping_sha256(mapping: Mapping) -> str:
    """sha256 of a dictionary's content (canonical JSON, keys sorted), whatever file it came from."""
    doc = json.dumps({str(k): mapping[k] for k in mapping}, sort_keys=True, default=float)
    return hashlib.sha256(doc.encode()).hexdigest()


@dataclass(repr=False)
class CheckpointModel:
    """A loaded checkpoint: the NNX encoder plus what is needed to tokenize for it.

    Attributes
    ----------
    family
        ``'geneformer'`` or ``'scgpt'``.
    module
        The :class:`~diffbio_sc.models._bert.BertEncoder` or
        :class:`~diffbio_sc.models._scgpt.ScGPTEncoder`.
    path
        The checkpoint directory.
    sha256
        Digest of the weight file(s).
    vocab
        Token dictionary (Geneformer) or vocabulary (scGPT): gene/token -> id.
    medians
        Gene -> median (Geneformer), else ``None``.
    recipe
        Geneformer tokenizer recipe (``'geneformer_v1'``/``'geneformer_v2'``), else ``None``.
    max_tokens
        Longest input: Geneformer's model input size, scGPT's ``max_seq_len`` default.
    settings
        Other checkpoint settings (scGPT ``n_bins``, ``pad_value``).
    sources
        Where each dictionary came from (file path or ``'mapping'``).
    hub
        For a model fetched by :func:`~diffbio_sc.models.from_pretrained`: its
        ``repo_id``, ``revision`` (resolved commit hash), ``requested_revision``
        and ``subfolder``; else ``None``.
    """

    family: str
    module: Any
    path: Path
    sha256: str
    vocab: dict[str, int]
    medians: dict[str, float] | None = None
    recipe: str | None = None
    max_tokens: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    hub: dict[str, Any] | None = None

    def __repr__(self) -> str:
        """Return a short summary: family, sizes, parameters, dictionaries, files."""
        try:
            n_params = f"{self.module.n_params():,}"
        except Exception:  # a summary must never fail
            n_params = "?"
        lines = [
            f"CheckpointModel ({self.family}"
            + (f", {self.recipe}" if self.recipe else "")
            + f"): {self.n_layers} layers, hidden size {self.hidden_dim}",
            f"parameters: {n_params}",
            f"vocabulary: {len(self.vocab):,} tokens"
            + ("" if self.medians is None else f", {len(self.medians):,} gene medians"),
            f"max_tokens: {self.max_tokens}",
            f"checkpoint: {os.fspath(self.path)} (sha256 {self.sha256[:12]})",
        ]
        if self.hub:
            lines.append(
                f"hub: {self.hub.get('repo_id')}"
                + (f"/{self.hub['subfolder']}" if self.hub.get("subfolder") else "")
                + f" @ {self.hub.get('revision')}"
            )
        return lines[0] + "\n" + "\n".join("  " + line for line in lines[1:])

    __str__ = __repr__

    @property
    def config(self):
        """The architecture (``BertConfig`` or ``ScGPTConfig``)."""
        return self.module.config

    @property
    def n_layers(self) -> int:
        """Number of transformer layers."""
        cfg = self.config
        return int(getattr(cfg, "num_hidden_layers", getattr(cfg, "n_layers", 0)))

    @property
    def hidden_dim(self) -> int:
        """Width of the hidden states (the embedding dimension)."""
        cfg = self.config
        return int(getattr(cfg, "hidden_size", getattr(cfg, "d_model", 0)))

    def save(self, path: str | os.PathLike, *, weights_format: str | None = None) -> Path:
        """Save in diffbio_sc's model format (weights + dictionaries in one directory).

        :func:`load_checkpoint` (and :func:`diffbio_sc.models.load`) read it back.
        """
        self.module.metadata = self._metadata()
        return self.module.save(path, weights_format=weights_format)

    def _metadata(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "vocab": dict(self.vocab),
            "medians": None if self.medians is None else dict(self.medians),
            "recipe": self.recipe,
            "max_tokens": int(self.max_tokens),
            "settings": dict(self.settings),
            "sources": dict(self.sources),
            "checkpoint_sha256": self.sha256,
            "checkpoint_path": os.fspath(self.path),
            **({"hub": dict(self.hub)} if self.hub else {}),
        }

    def digests(self) -> dict[str, str]:
        """sha256 of the weights and of each dictionary (content, not file bytes)."""
        out = {"checkpoint_sha256": self.sha256, "vocab_sha256": mapping_sha256(self.vocab)}
        if self.medians is not None:
            out["gene_medians_sha256"] = mapping_sha256(self.medians)
        return out


def _dictionary(value, default: Path | None, what: str, checkpoint: Path) -> tuple[dict, str]:
    """Return a dictionary given as a mapping, or read from the checkpoint's JSON side file."""
    if isinstance(value, Mapping):
        return dict(value), str(getattr(value, "source", "mapping"))
    if value is not None:
        raise TypeError(
            f"{what} must be a mapping (read files with dfm.tl.embed_checkpoint, which accepts "
            f"JSON/CSV/TSV paths), got {type(value).__name__}."
        )
    if default is None or not default.is_file():
        raise FileNotFoundError(
            f"No {what} for the checkpoint at {checkpoint}: pass it, or place it as "
            f"{default.name if default is not None else what + '.json'} in the checkpoint "
            "directory (see dfm.models.load_checkpoint for converting upstream pickles)."
        )
    from ..io._checkpoints import read_json_object

    return read_json_object(default, what), str(default)


def _token_ids(vocab: Mapping, what: str, source: str) -> dict[str, int]:
    from ..io._torch_pickle import CheckpointError
    from ._base import token_id_map

    try:
        return token_id_map(vocab, f"{what} {source}")
    except DfmInputError as err:
        raise CheckpointError(str(err)) from None


def _gene_medians(med: Mapping, source: str) -> dict[str, float]:
    """Return ``gene -> median`` checked: every median a finite number > 0.

    Geneformer divides each gene's normalised count by its median, so a zero,
    negative or missing median would change (or break) every embedding without an
    error; strings are refused, not converted.
    """
    from ..io._torch_pickle import CheckpointError

    out: dict[str, float] = {}
    bad = []
    for k, v in med.items():
        is_num = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
            v, (bool, np.bool_)
        )
        if is_num and np.isfinite(v) and v > 0:
            out[str(k)] = float(v)
        else:
            bad.append(f"{k!r}: {v!r}")
    if bad:
        raise CheckpointError(
            f"gene_median_dictionary {source}: {len(bad)} of {len(out) + len(bad)} gene medians "
            f"are not finite numbers > 0 (e.g. {', '.join(bad[:5])}). Geneformer divides each "
            "gene's expression by its median; use the gene_median_dictionary that came with the "
            "checkpoint, or remove those genes from it."
        )
    if not out:
        raise CheckpointError(f"gene_median_dictionary {source} is empty.")
    return out


def _load_geneformer(ckpt, token_dictionary, gene_median_dictionary) -> CheckpointModel:
    from .. import _keys
    from ..io._torch_pickle import CheckpointError
    from ._bert import bert_from_checkpoint

    tok, tok_src = _dictionary(
        token_dictionary, ckpt.files.get("token_dictionary"), "token_dictionary", ckpt.path
    )
    tok = _token_ids(tok, "token dictionary", tok_src)
    med, med_src = _dictionary(
        gene_median_dictionary,
        ckpt.files.get("gene_median_dictionary"),
        "gene_median_dictionary",
        ckpt.path,
    )
    module = bert_from_checkpoint(ckpt)
    cfg = module.config
    max_id = max(tok.values())
    if len(tok) != cfg.vocab_size or max_id >= cfg.vocab_size:
        raise CheckpointError(
            f"The token dictionary ({tok_src}) has {len(tok)} tokens (largest id {max_id}) but "
            f"the checkpoint {ckpt.config_file} has vocab_size {cfg.vocab_size}: the dictionary "
            "does not belong to this model (Geneformer V1 and V2 models use different "
            "dictionaries)."
        )
    if tok.get(_keys.PAD_TOKEN) != cfg.pad_token_id:
        raise CheckpointError(
            f"The token dictionary ({tok_src}) maps <pad> to {tok.get(_keys.PAD_TOKEN)!r} but "
            f"{ckpt.config_file} has pad_token_id {cfg.pad_token_id}."
        )
    v2 = _keys.CLS_TOKEN in tok and _keys.EOS_TOKEN in tok
    cap = GENEFORMER_V2_TOKENS if v2 else GENEFORMER_V1_TOKENS
    return CheckpointModel(
        family="geneformer",
        module=module,
        path=ckpt.path,
        sha256=ckpt.sha256,
        vocab=tok,
        medians=_gene_medians(med, med_src),
        recipe="geneformer_v2" if v2 else "geneformer_v1",
        max_tokens=min(cap, cfg.max_position_embeddings),
        sources={"token_dictionary": tok_src, "gene_median_dictionary": med_src},
    )


def _load_scgpt(ckpt, vocab) -> CheckpointModel:
    from ..io._torch_pickle import CheckpointError
    from ._scgpt import max_seq_len, scgpt_from_checkpoint, scgpt_vocab

    voc, src = _dictionary(vocab, ckpt.files.get("vocab"), "vocab", ckpt.path)
    voc = scgpt_vocab(_token_ids(voc, "vocabulary", src), source=src)
    max_len = max_seq_len(ckpt.config, str(ckpt.config_file))
    try:
        module = scgpt_from_checkpoint(ckpt, voc)
    except ValueError as err:
        raise CheckpointError(f"{err} (vocabulary: {src})") from None
    return CheckpointModel(
        family="scgpt",
        module=module,
        path=ckpt.path,
        sha256=ckpt.sha256,
        vocab=voc,
        max_tokens=max_len,
        settings={"n_bins": module.config.n_bins, "pad_value": module.config.pad_value},
        sources={"vocab": src},
    )


def _load_saved(path) -> CheckpointModel | None:
    """Return a checkpoint encoder saved with :meth:`CheckpointModel.save`, or ``None``."""
    from ._io import _is_model_dir, load

    p = Path(path)
    if p.is_file():
        p = p.parent
    if not _is_model_dir(p):
        return None
    module = load(p)
    md = module.metadata
    from ._dna_checkpoints import DNA_SAVED_FAMILIES

    if md.get("family") in DNA_SAVED_FAMILIES and isinstance(md.get("vocab"), dict):
        from ._dna_checkpoints import dna_from_saved

        return dna_from_saved(module, p)
    if md.get("family") not in ("geneformer", "scgpt") or not isinstance(md.get("vocab"), dict):
        raise ValueError(
            f"{p} is a saved {type(module).__name__}, not a checkpoint encoder saved with "
            "CheckpointModel.save; load it with dfm.models.load."
        )
    from ..io._torch_pickle import CheckpointError

    where = str(p / "config.json")
    family = md["family"]
    recipes = ("geneformer_v1", "geneformer_v2") if family == "geneformer" else (None,)
    max_tokens = md.get("max_tokens")
    if md.get("recipe") not in recipes:
        raise CheckpointError(
            f"{where}: metadata 'recipe' {md.get('recipe')!r} is not one of "
            f"{list(recipes)} for a {family} model; re-save the model."
        )
    if family == "geneformer" and not isinstance(md.get("medians"), dict):
        raise CheckpointError(
            f"{where}: metadata 'medians' (the gene median dictionary) is "
            "missing; re-save the model with CheckpointModel.save."
        )
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2:
        raise CheckpointError(
            f"{where}: metadata 'max_tokens' must be an integer >= 2, got "
            f"{max_tokens!r}; re-save the model."
        )
    return CheckpointModel(
        family=family,
        module=module,
        path=p,
        sha256=str(md.get("checkpoint_sha256", "")),
        vocab=_token_ids(md["vocab"], "vocabulary", where),
        medians=None if family != "geneformer" else _gene_medians(md["medians"], where),
        recipe=md.get("recipe"),
        max_tokens=max_tokens,
        settings=dict(md.get("settings", {})),
        sources=dict(md.get("sources", {})),
        hub=dict(md["hub"]) if isinstance(md.get("hub"), dict) else None,
    )


def _dna_dispatch(ckpt, dictionaries) -> CheckpointModel | None:
    """Load a GENERator / Nucleotide Transformer / DNABERT-2 checkpoint; ``None`` for a BERT one.

    A ``model_type`` of no family diffbio_sc runs is an error listing the families.
    """
    from ..io._checkpoints import CheckpointError
    from ._dna_checkpoints import DNA_FAMILIES, EVO2_MODEL_TYPES, EVO2_REASON, load_dna_checkpoint
    from ._dnabert2 import is_dnabert2_config
    from ._esm import model_type_of

    model_type = model_type_of(ckpt.config)
    if model_type in (None, "bert") and is_dnabert2_config(ckpt.config):
        if any(d is not None for d in dictionaries):
            raise ValueError(
                f"{ckpt.path} is a DNABERT-2 checkpoint; its tokenizer is its tokenizer.json: "
                "do not pass token_dictionary=, gene_median_dictionary= or vocab=."
            )
        return load_dna_checkpoint(ckpt)
    if model_type == "bert":
        return None
    if model_type in EVO2_MODEL_TYPES:
        raise CheckpointError(f"{ckpt.config_file}: model_type {model_type!r}. {EVO2_REASON}")
    if model_type not in DNA_FAMILIES:
        known = {"bert": "geneformer", **DNA_FAMILIES}
        raise CheckpointError(
            f"{ckpt.config_file}: model_type {model_type!r} is no checkpoint family diffbio_sc "
            f"runs; known: {', '.join(f'{k!r} ({v})' for k, v in known.items())}, and scGPT's "
            "args.json layout."
        )
    if any(d is not None for d in dictionaries):
        raise ValueError(
            f"{ckpt.path} is a {DNA_FAMILIES[model_type]} checkpoint; it carries its own "
            "tokenizer: do not pass token_dictionary=, gene_median_dictionary= or vocab=."
        )
    return load_dna_checkpoint(ckpt)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    token_dictionary: Mapping | None = None,
    gene_median_dictionary: Mapping | None = None,
    vocab: Mapping | None = None,
) -> CheckpointModel:
    """Load a Geneformer, scGPT, GENERator, Nucleotide Transformer, DNABERT-2 or HyenaDNA checkpoint.

    Parameters
    ----------
    path
        Checkpoint directory: Hugging Face layout (``config.json`` +
        ``model.safetensors`` or ``pytorch_model.bin``; Geneformer) or scGPT
        layout (``args.json``, ``vocab.json``, ``best_model.pt``). GENERator
        (``model_type`` ``llama``) and Nucleotide Transformer v1/v2 (``esm``)
        checkpoints need their tokenizer's ``vocab.txt`` beside ``config.json``;
        DNABERT-2 (``model_type`` ``bert`` with an ``auto_map`` to its
        ``bert_layers`` code) its ``tokenizer.json``; HyenaDNA (``model_type``
        ``hyenadna``) needs no tokenizer file (fixed character tokenizer); they load as
        :class:`~diffbio_sc.models._dna_checkpoints.DnaCheckpointModel`. ``.bin``/``.pt``
        files are read without torch by a restricted unpickler (tensors only).
        Or a directory written by :meth:`CheckpointModel.save` (diffbio_sc's
        format, dictionaries included).
    token_dictionary, gene_median_dictionary
        Geneformer dictionaries as mappings; default: the JSON files
        ``token_dictionary.json`` / ``gene_median_dictionary.json`` in ``path``.
    vocab
        scGPT vocabulary as a mapping; default: ``vocab.json`` in ``path``.

    Returns
    -------
    A :class:`CheckpointModel`.

    Raises
    ------
    FileNotFoundError
        No recognised checkpoint, or a dictionary is missing.
    CheckpointError
        (a :class:`~diffbio_sc._validate.DfmInputError` and ``ValueError``), naming
        the file and the field or tensor: unsupported architecture; config fields
        missing or of the wrong JSON type (never converted: ``"16"`` is not 16) or
        out of range (``layer_norm_eps <= 0``, scGPT ``max_seq_len < 2``);
        integer or boolean weight tensors (quantized checkpoints); missing or
        unexpected tensors and shape mismatches; token ids that are not unique
        non-negative integers, or that lie beyond the embedding table; gene
        medians that are not finite numbers > 0; dictionaries that do not fit
        the checkpoint's vocabulary.
    """
    from ..io._checkpoints import read_checkpoint

    saved = _load_saved(path)
    if saved is not None:
        if any(v is not None for v in (token_dictionary, gene_median_dictionary, vocab)):
            raise ValueError(
                f"{path} is a saved diffbio_sc model that holds its dictionaries; do not pass "
                "token_dictionary=, gene_median_dictionary= or vocab=."
            )
        return saved
    ckpt = read_checkpoint(path)
    if ckpt.family != "scgpt":
        dna = _dna_dispatch(ckpt, (token_dictionary, gene_median_dictionary, vocab))
        if dna is not None:
            return dna
    if ckpt.family == "scgpt":
        if token_dictionary is not None or gene_median_dictionary is not None:
            raise ValueError(
                f"{ckpt.path} is an scGPT checkpoint: pass vocab=, not Geneformer dictionaries."
            )
        return _load_scgpt(ckpt, vocab)
    if vocab is not None:
        raise ValueError(
            f"{ckpt.path} is a Geneformer checkpoint: pass token_dictionary= (and "
            "gene_median_dictionary=), not vocab=."
        )
    return _load_geneformer(ckpt, token_dictionary, gene_median_dictionary)
