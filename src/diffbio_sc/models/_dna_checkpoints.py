"""Published DNA checkpoints (GENERator, Nucleotide Transformer v1/v2, DNABERT-2, HyenaDNA) as JAX models.

:func:`load_dna_checkpoint` takes a Hugging Face checkpoint read by
:func:`diffbio_sc.io.read_checkpoint`, recognises the family from
``config.json`` (``model_type`` ``'llama'`` -> GENERator, ``'esm'`` ->
Nucleotide Transformer; NT v2's config has no ``model_type`` but an ``auto_map``
naming its ``modeling_esm`` remote code; DNABERT-2's has ``model_type`` ``'bert'`` and
an ``auto_map`` naming its ``bert_layers`` remote code; ``'hyenadna'`` -> HyenaDNA),
reads the tokenizer file beside
the weights (``vocab.txt``, one token per line, line number = id; DNABERT-2:
``tokenizer.json``, read with the ``tokenizers`` library) and checks it against the
model's vocabulary size (HyenaDNA has no vocabulary file: its character tokenizer
is fixed, the characters optionally read from ``tokenizer_config.json``), then builds
the Flax NNX module.
:func:`diffbio_sc.models.load_checkpoint` dispatches here for those families.

Pooled embeddings follow the authors' own code:

* Nucleotide Transformer: mean of the last hidden layer over the tokens of the
  attention mask ``ids != <pad>`` (``<cls>`` included), as in the NT model
  cards' embedding example.
* DNABERT-2: mean of the last hidden layer over the sequence's tokens
  (``[CLS]`` and ``[SEP]`` included), as its README's ``torch.mean(hidden_states[0], dim=0)``.
* Caduceus (Ph and PS, :mod:`~diffbio_sc.models._caduceus`): mean of the last
  hidden layer over the sequence's tokens (``[SEP]`` included); PS conjoins its
  two strand halves, so its pooled vector is exactly reverse-complement invariant.
* GENERator: the last hidden layer at the last non-padding token (``</s>``);
  GENERator's sequence-understanding code reads the last non-padding token of
  ``last_hidden_state``, and in a causal decoder only that token has seen the
  whole sequence. ``pooling='mean'`` is offered too.
* HyenaDNA: mean of the last hidden state (after the final LayerNorm) over the
  sequence's tokens (its characters and ``[SEP]``; ``[PAD]`` excluded). The
  authors publish no pooling rule; the mean is the common one (Helical's, and
  the registry's). HyenaDNA is causal, so right padding never changes the real
  positions: a sequence's embedding is the same alone and in a padded batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io._checkpoints import CheckpointError
from ._pretrained import CheckpointModel

__all__ = ["DNA_FAMILIES", "DnaCheckpointModel", "load_dna_checkpoint"]

#: ``config.json`` ``model_type`` -> family name (DNABERT-2, ``'bert'`` with its own
#: ``auto_map``, is recognised by :func:`~diffbio_sc.models._dnabert2.is_dnabert2_config`).
DNA_FAMILIES = {
    "llama": "generator",
    "esm": "nucleotide_transformer",
    "caduceus": "caduceus",
    "hyenadna": "hyenadna",
}
#: Families saved by :meth:`DnaCheckpointModel.save` (``_load_saved`` dispatches on them).
DNA_SAVED_FAMILIES = ("generator", "nucleotide_transformer", "dnabert2", "caduceus", "hyenadna")
#: ``config.json`` ``model_type`` s of Evo 2 / StripedHyena checkpoints (recognised, refused).
EVO2_MODEL_TYPES = ("evo2", "evo", "stripedhyena", "striped_hyena", "stripedhyena2")
#: Why Evo 2 does not run here (also in the genomics registry and the docs).
EVO2_REASON = (
    "Evo 2 is not run by diffbio_sc: its reference code (ArcInstitute/evo2 on the Vortex "
    "inference code) needs CUDA 12.1+ and NVIDIA GPU kernels (Flash Attention, and for "
    "evo2_1b_base / 20b / 40b FP8 projections through NVIDIA Transformer Engine on a Hopper "
    "GPU); the smallest model that runs without FP8 is evo2_7b, in bfloat16 on a GPU. There "
    "is no CPU reference to check a port against. Embed with the upstream code on a GPU, "
    "then import the vectors: tl.export_gene_sequences -> tl.PrecomputedEncoder (genes) or "
    "tl.load_embeddings(mod='dna') (sequences)."
)


def read_vocab_txt(path: Path) -> dict[str, int]:
    """Read a ``vocab.txt`` (one token per line; the line number is its id)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} (tokenizer vocabulary) cannot be read ({err}).") from None
    vocab: dict[str, int] = {}
    for i, tok in enumerate(lines):
        tok = tok.strip()
        if not tok:
            raise CheckpointError(f"{path}: line {i + 1} is empty; one token per line expected.")
        if tok in vocab:
            raise CheckpointError(
                f"{path}: the token {tok!r} appears twice (lines {vocab[tok] + 1} and {i + 1})."
            )
        vocab[tok] = i
    if not vocab:
        raise CheckpointError(f"{path} holds no tokens.")
    return vocab


def _json_if_present(path: Path) -> dict:
    if not path.is_file():
        return {}
    from ..io._checkpoints import read_json_object

    return read_json_object(path, "tokenizer settings")


def _token_name(value) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _hidden_states_fn(graphdef, state, ids):
    from flax import nnx

    return nnx.merge(graphdef, state).hidden_states(ids)


def _compiled(fn):
    """``jax.jit(fn, static_argnums=0)``, built once per function for the session."""
    if fn not in _JITTED:
        import jax

        _JITTED[fn] = jax.jit(fn, static_argnums=0)
    return _JITTED[fn]


_JITTED: dict = {}


def _forward(module, ids):
    """``module.hidden_states(ids)``, compiled once per model structure and input shape.

    ``jax.jit`` over the module's split state, as the runner does, rather than
    ``nnx.jit``: flax's ``nnx.jit`` (0.12) made each call's resident memory grow
    by about 2x the weights on a 500M-parameter model (7.1 GiB against 3.4 GiB
    for NT v1 500M, ``benchmarks/bench_checkpoint_load_rss.py --forward``).
    """
    from flax import nnx

    graphdef, state = nnx.split(module)
    return _compiled(_hidden_states_fn)(graphdef, state, ids)


@dataclass
class DnaCheckpointModel(CheckpointModel):
    """A loaded DNA checkpoint: the NNX module, its tokenizer and its pooling rule.

    It has the attributes of :class:`~diffbio_sc.models.CheckpointModel`, and:

    Attributes
    ----------
    tokenizer
        :class:`~diffbio_sc.ops._dna_checkpoint_tokenizers.NTCheckpointTokenizer`,
        :class:`~diffbio_sc.ops._dna_checkpoint_tokenizers.GeneratorTokenizer`,
        :class:`~diffbio_sc.ops._dna_checkpoint_tokenizers.Dnabert2Tokenizer` or
        :class:`~diffbio_sc.ops._dna_checkpoint_tokenizers.HyenaTokenizer`.
    pooling
        Default pooling: ``'mean'`` (NT, DNABERT-2, HyenaDNA) or ``'last'`` (GENERator).
    """

    tokenizer: object = None
    pooling: str = "mean"

    @property
    def rc_equivariant(self) -> bool:
        """Whether the pooled embedding is exactly invariant to reverse complementing.

        True for Caduceus-PS (reverse-complement parameter sharing), so
        ``reverse_complement='equivariant'`` needs no second pass; False otherwise.
        """
        return self.family == "caduceus" and self.settings.get("variant") == "ps"

    def tokenize(self, sequences: Sequence[str], *, unknown: str = "error"):
        """Token ids ``(n, T)`` int32 (right-padded) and the mask of real tokens.

        A sequence with more tokens than the model's context, or (with
        ``unknown='error'``) a symbol outside the model's alphabet, is an error
        naming the sequence.
        """
        return self.tokenizer.encode(sequences, max_length=self.max_tokens, unknown=unknown)

    def hidden_states(self, input_ids) -> list:
        """Every layer's hidden states (embeddings first), as Hugging Face returns them.

        Compiled once per input shape.
        """
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.shape[1] > self.max_tokens:
            raise ValueError(
                f"input_ids must be (n, T) with T <= {self.max_tokens} (the model's context), "
                f"got shape {ids.shape}: inputs exceed the context."
            )
        return _forward(self.module, ids)

    def embed(
        self,
        sequences: Sequence[str],
        *,
        pooling: str | None = None,
        unknown: str = "error",
        batch_size: int = 8,
    ) -> np.ndarray:
        """Pooled embeddings ``(n, hidden_size)`` float32 of ``sequences`` (see the module doc).

        Parameters
        ----------
        sequences
            DNA strings (see :meth:`tokenize` for the alphabet and ``unknown``).
        pooling
            GENERator: ``'last'`` (default) or ``'mean'``; NT, DNABERT-2: ``'mean'``.
        unknown
            ``'error'`` or ``'token'`` (the model's unknown-token rule).
        batch_size
            Sequences run together; all batches are padded to the longest
            sequence, so the model compiles once. A row's result does not depend
            on the others.

        Returns
        -------
        ``(n, hidden_size)`` float32.
        """
        how = self.pooling if pooling is None else pooling
        allowed = ("last", "mean") if self.family == "generator" else ("mean",)
        if how not in allowed:
            raise ValueError(f"{self.family} pooling must be one of {allowed}, got {how!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        ids, _ = self.tokenize(sequences, unknown=unknown)  # every error before any compute
        from flax import nnx

        from ._adapters import dna_checkpoint_forward

        # One compiled call from ids to pooled vectors (the runner's forward): only
        # the pooled rows leave it, not every layer's (n, T, hidden) states.
        graphdef, state = nnx.split(self.module)
        static = (graphdef, how if self.family == "generator" else None)
        forward = _compiled(dna_checkpoint_forward)
        out = []
        for start in range(0, ids.shape[0], batch_size):
            chunk = ids[start : start + batch_size]
            if chunk.shape[0] < batch_size and ids.shape[0] > batch_size:
                fill = np.full((batch_size - chunk.shape[0], ids.shape[1]), chunk[0])
                chunk = np.concatenate([chunk, fill])  # same shape: no recompilation
            pooled = forward(static, state, chunk)
            out.append(
                np.asarray(pooled, dtype=np.float32)[: min(batch_size, ids.shape[0] - start)]
            )
        return np.concatenate(out)

    def _metadata(self) -> dict:
        md = super()._metadata()
        md["dna"] = {"pooling": self.pooling}
        return md


def _load_nt(ckpt, vocab: dict[str, int], vfile: Path) -> DnaCheckpointModel:
    from ..ops._dna_checkpoint_tokenizers import NTCheckpointTokenizer
    from ._esm import esm_from_checkpoint

    special = _json_if_present(ckpt.path / "special_tokens_map.json")
    tcfg = _json_if_present(ckpt.path / "tokenizer_config.json")
    # EsmTokenizer appends <eos> unless its settings set eos_token to null (NT's do)
    if "eos_token" in special:
        eos = _token_name(special["eos_token"])
    elif "eos_token" in tcfg:
        eos = _token_name(tcfg["eos_token"])
    else:
        eos = "<eos>" if "<eos>" in vocab else None
    tok = NTCheckpointTokenizer(vocab, add_eos=eos is not None, source=str(vfile))
    module = esm_from_checkpoint(ckpt)
    cfg = module.config
    if tok.pad_id != cfg.pad_token_id:
        raise CheckpointError(
            f"{vfile} puts <pad> at id {tok.pad_id} but {ckpt.config_file} has pad_token_id "
            f"{cfg.pad_token_id}: the tokenizer does not belong to this model."
        )
    return DnaCheckpointModel(
        family="nucleotide_transformer",
        module=module,
        path=ckpt.path,
        sha256=ckpt.sha256,
        vocab=dict(vocab),
        max_tokens=cfg.max_tokens,
        settings={"version": "v2" if cfg.rotary else "v1", "add_eos": tok.add_eos},
        sources={"vocab": str(vfile)},
        tokenizer=tok,
        pooling="mean",
    )


def _load_generator(ckpt, vocab: dict[str, int], vfile: Path) -> DnaCheckpointModel:
    from ..ops._dna_checkpoint_tokenizers import GeneratorTokenizer
    from ._llama import llama_from_checkpoint

    tcfg = _json_if_present(ckpt.path / "tokenizer_config.json")
    k = tcfg.get("k", 6)
    tok = GeneratorTokenizer(vocab, k=k, source=str(vfile))
    module = llama_from_checkpoint(ckpt, pad_token_id=tok.pad_id)
    return DnaCheckpointModel(
        family="generator",
        module=module,
        path=ckpt.path,
        sha256=ckpt.sha256,
        vocab=dict(vocab),
        max_tokens=module.config.max_position_embeddings,
        settings={"k": tok.k},
        sources={"vocab": str(vfile)},
        tokenizer=tok,
        pooling="last",
    )


def _load_dnabert2(ckpt) -> DnaCheckpointModel:
    from ..ops._dna_checkpoint_tokenizers import Dnabert2Tokenizer
    from ._dnabert2 import dnabert2_from_checkpoint

    tfile = ckpt.path / "tokenizer.json"
    if not tfile.is_file():
        raise CheckpointError(
            f"No tokenizer for the DNABERT-2 checkpoint at {ckpt.path}: place the model's "
            "tokenizer.json (byte-pair encoding, read with the tokenizers library) beside "
            "config.json."
        )
    try:
        text = tfile.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{tfile} (tokenizer) cannot be read ({err}).") from None
    tok = Dnabert2Tokenizer(text, source=str(tfile))
    size = ckpt.config.get("vocab_size")
    if size != tok.vocab_size:
        raise CheckpointError(
            f"{tfile} has {tok.vocab_size} tokens but {ckpt.config_file} has vocab_size "
            f"{size!r}: the tokenizer file does not belong to this model."
        )
    module = dnabert2_from_checkpoint(ckpt, pad_token_id=tok.pad_id)
    return DnaCheckpointModel(
        family="dnabert2",
        module=module,
        path=ckpt.path,
        sha256=ckpt.sha256,
        vocab=dict(tok.vocab),
        max_tokens=module.config.max_tokens,
        settings={"tokenizer_json": text},
        sources={"tokenizer": str(tfile)},
        tokenizer=tok,
        pooling="mean",
    )


#: Context used when a Caduceus checkpoint has no tokenizer_config.json (the published 131k).
_CADUCEUS_DEFAULT_CONTEXT = 131_072


def _load_caduceus(ckpt) -> DnaCheckpointModel:
    from ..ops._dna_checkpoint_tokenizers import CaduceusTokenizer
    from ._caduceus import caduceus_from_checkpoint

    tfile = ckpt.path / "tokenizer_config.json"
    tcfg = _json_if_present(tfile)
    chars = tcfg.get("characters", "ACGTN")
    tok = CaduceusTokenizer(chars, source=str(tfile))
    max_tokens = tcfg.get("model_max_length", _CADUCEUS_DEFAULT_CONTEXT)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2:
        raise CheckpointError(f"{tfile}: model_max_length {max_tokens!r} is not a context length.")
    module = caduceus_from_checkpoint(ckpt, pad_token_id=tok.pad_id, max_tokens=max_tokens)
    cfg = module.config
    if cfg.vocab_size < tok.vocab_size:
        raise CheckpointError(
            f"{ckpt.config_file} has vocab_size {cfg.vocab_size} but the Caduceus tokenizer "
            f"({tfile.name}) has {tok.vocab_size} tokens: the tokenizer does not belong to "
            "this model."
        )
    if cfg.rcps:
        comp = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N"}
        for ch in tok.characters:
            want = tok.vocab.get(comp.get(ch, ch))
            if want is not None and cfg.complement_map[tok.vocab[ch]] != want:
                raise CheckpointError(
                    f"{ckpt.config_file}: complement_map sends {ch!r} (id {tok.vocab[ch]}) to "
                    f"id {cfg.complement_map[tok.vocab[ch]]}, not to its complement "
                    f"{comp.get(ch, ch)!r} (id {want}): config and tokenizer disagree."
                )
    return DnaCheckpointModel(
        family="caduceus",
        module=module,
        path=ckpt.path,
        sha256=ckpt.sha256,
        vocab=dict(tok.vocab),
        max_tokens=max_tokens,
        settings={"variant": "ps" if cfg.rcps else "ph", "characters": tok.characters},
        sources={"tokenizer": str(tfile)} if tfile.is_file() else {},
        tokenizer=tok,
        pooling="mean",
    )


def _load_hyena(ckpt) -> DnaCheckpointModel:
    from ..ops._dna_checkpoint_tokenizers import HyenaTokenizer
    from ._hyena import hyena_from_checkpoint

    tfile = ckpt.path / "tokenizer_config.json"
    tcfg = _json_if_present(tfile)
    chars = tcfg.get("characters", tcfg.get("char_ords", list("ACGTN")))
    if "characters" not in tcfg and "char_ords" in tcfg:  # the standalone tokenizer's file
        chars = [chr(int(c)) for c in chars] if isinstance(chars, list) else chars
    if not isinstance(chars, list):
        raise CheckpointError(f"{tfile}: 'characters' must be a list, got {chars!r}.")
    tok = HyenaTokenizer(chars, source=str(tfile) if tcfg else "HyenaDNA default (ACGTN)")
    size = ckpt.config.get("vocab_size")
    if size != tok.vocab_size:
        raise CheckpointError(
            f"The HyenaDNA character tokenizer has {tok.vocab_size} tokens (7 special + "
            f"{len(tok.characters)} characters) but {ckpt.config_file} has vocab_size "
            f"{size!r}: the tokenizer does not belong to this model."
        )
    module = hyena_from_checkpoint(ckpt, pad_token_id=tok.pad_id)
    return DnaCheckpointModel(
        family="hyenadna",
        module=module,
        path=ckpt.path,
        sha256=ckpt.sha256,
        vocab=dict(tok.vocab),
        max_tokens=module.config.max_seq_len,
        settings={"characters": "".join(tok.characters)},
        sources={"tokenizer": str(tfile) if tcfg else "default"},
        tokenizer=tok,
        pooling="mean",
    )


def dna_from_saved(module, path: Path) -> DnaCheckpointModel:
    """Rebuild a :class:`DnaCheckpointModel` saved with ``save`` (vocabulary in its metadata)."""
    from ..ops._dna_checkpoint_tokenizers import (
        CaduceusTokenizer,
        Dnabert2Tokenizer,
        GeneratorTokenizer,
        HyenaTokenizer,
        NTCheckpointTokenizer,
    )

    md = module.metadata
    vocab = {str(k): int(v) for k, v in md["vocab"].items()}
    settings = dict(md.get("settings", {}))
    if md["family"] == "caduceus":
        tok = CaduceusTokenizer(str(settings.get("characters", "ACGTN")), source=str(path))
    elif md["family"] == "dnabert2":
        tok = Dnabert2Tokenizer(str(settings.get("tokenizer_json", "")), source=str(path))
    elif md["family"] == "hyenadna":
        tok = HyenaTokenizer(tuple(str(settings.get("characters", "ACGTN"))), source=str(path))
    elif md["family"] == "generator":
        tok = GeneratorTokenizer(vocab, k=int(settings.get("k", 6)), source=str(path))
    else:
        tok = NTCheckpointTokenizer(vocab, add_eos=bool(settings.get("add_eos")), source=str(path))
    return DnaCheckpointModel(
        family=md["family"],
        module=module,
        path=path,
        sha256=str(md.get("checkpoint_sha256", "")),
        vocab=vocab,
        max_tokens=int(md["max_tokens"]),
        settings=settings,
        sources=dict(md.get("sources", {})),
        hub=dict(md["hub"]) if isinstance(md.get("hub"), dict) else None,
        tokenizer=tok,
        pooling=str(md.get("dna", {}).get("pooling", "mean")),
    )


def load_dna_checkpoint(ckpt) -> DnaCheckpointModel:
    """Build a :class:`DnaCheckpointModel` from a Hugging Face :class:`~diffbio_sc.io.Checkpoint`.

    Raises
    ------
    CheckpointError
        No ``vocab.txt`` (DNABERT-2: ``tokenizer.json``; HyenaDNA needs none), or one whose size does not match the config's
        ``vocab_size``, or whose ``<pad>`` disagrees with the config.
    ValueError
        Unsupported configuration; :class:`~diffbio_sc.models.ModelFormatError` for
        missing, unexpected or mis-shaped tensors (all named in one message).
    """
    from ._dnabert2 import is_dnabert2_config
    from ._esm import model_type_of

    model_type = model_type_of(ckpt.config)
    if model_type in (None, "bert") and is_dnabert2_config(ckpt.config):
        return _load_dnabert2(ckpt)
    if model_type in EVO2_MODEL_TYPES:
        raise CheckpointError(f"{ckpt.config_file}: model_type {model_type!r}. {EVO2_REASON}")
    family = DNA_FAMILIES.get(model_type)
    if family == "caduceus":
        return _load_caduceus(ckpt)
    if family is None:
        raise CheckpointError(
            f"{ckpt.config_file}: model_type {model_type!r} is not a DNA family diffbio_sc runs "
            f"({', '.join(f'{k!r} ({v})' for k, v in DNA_FAMILIES.items())})."
        )
    if family == "hyenadna":
        return _load_hyena(ckpt)
    vfile = ckpt.path / "vocab.txt"
    if not vfile.is_file():
        raise CheckpointError(
            f"No tokenizer vocabulary for the {family} checkpoint at {ckpt.path}: place the "
            "model's vocab.txt (one token per line) beside config.json. Where the checkpoint "
            "ships only its tokenizer code, write it once with transformers: "
            "AutoTokenizer.from_pretrained(path, trust_remote_code=True).save_pretrained(path)."
        )
    vocab = read_vocab_txt(vfile)
    size = ckpt.config.get("vocab_size")
    if size != len(vocab):
        raise CheckpointError(
            f"{vfile} has {len(vocab)} tokens but {ckpt.config_file} has vocab_size {size!r}: "
            "the tokenizer file does not belong to this model."
        )
    if family == "nucleotide_transformer":
        return _load_nt(ckpt, vocab, vfile)
    return _load_generator(ckpt, vocab, vfile)
