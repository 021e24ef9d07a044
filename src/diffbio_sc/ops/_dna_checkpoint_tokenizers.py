"""Tokenizers of published DNA checkpoints, with the checkpoint's own vocabulary.

Unlike the ``nt6``/``kmer`` tokenizers of :mod:`diffbio_sc.ops._sequence_tokenizers`
(ids of diffbio_sc's own vocabulary), these give the token ids a published
checkpoint was trained with, read from its tokenizer file:

* :class:`NTCheckpointTokenizer` -- Nucleotide Transformer (Hugging Face
  ``EsmTokenizer`` with the checkpoint's ``vocab.txt``). Reading left to right,
  a token starts at every position: six ``ACGT`` bases make a 6-mer token when
  all six are bases, otherwise the single symbol (``A C G T N``) is its token.
  So each run of ``ACGT`` between ``N`` s is cut into 6-mers from its left end
  and the leftover ``len % 6`` bases become single-base tokens. ``<cls>`` comes
  first (``<eos>`` last when the tokenizer defines one).
* :class:`GeneratorTokenizer` -- GENERator (its ``DNAKmerTokenizer``, ``k = 6``):
  the sequence is cut from the left into pieces of ``k`` upper-case letters, the
  remainder (< ``k`` letters) is one more piece; a piece that is not a k-mer of
  ``ACGT`` (a remainder, or a piece holding ``N``) is the ``<oov>`` token.
  ``<s>`` first and ``</s>`` last, as its ``add_special_tokens=True`` does.

* :class:`HyenaTokenizer` -- HyenaDNA's character tokenizer (upstream's
  ``CharacterTokenizer``): ``[CLS]`` 0, ``[SEP]`` 1, ``[BOS]`` 2, ``[MASK]`` 3,
  ``[PAD]`` 4, ``[RESERVED]`` 5, ``[UNK]`` 6, then one id per character of
  ``A C G T N`` from 7; one token per character, ``[SEP]`` last (the ``-hf``
  checkpoints' rule: no ``[CLS]``).

Symbols outside the model's alphabet (``ACGTN`` for NT and HyenaDNA, ``ACGT`` for GENERator;
lower case included) are an error naming the sequence and the position, unless
``unknown='token'`` asks for the model's own unknown-token rule (upstream
equality): NT maps each maximal run of symbols outside ``ACGTN`` to one
``<unk>`` (whitespace splits a run, and is dropped); GENERator maps every character that is not an upper-case letter to
one ``<oov>`` and pieces holding other letters to ``<oov>``; HyenaDNA maps every
character outside its characters, lower case included (its vocabulary is
case-sensitive), to one ``[UNK]``. (Upstream's ``transformers`` tokenizer would
also read a literal ``[SEP]``-style string in the text as that special token;
here every character is one token.)

* :class:`Dnabert2Tokenizer` -- DNABERT-2 (byte-pair encoding): the checkpoint's
  ``tokenizer.json`` run by the ``tokenizers`` library itself (as upstream's
  ``PreTrainedTokenizerFast`` does, with neither truncation nor padding), so the
  ids are upstream's: ``[CLS]`` first, ``[SEP]`` last, and with
  ``unknown='token'`` every symbol outside the BPE alphabet (``N``, lower case)
  one ``[UNK]``; its alphabet for ``unknown='error'`` is ``ACGT``.

* :class:`CaduceusTokenizer` -- Caduceus (kuleshov-group/caduceus
  ``CaduceusTokenizer``): one token per character after upper-casing (so
  soft-masked lower-case bases read as bases), ids
  ``[CLS]`` 0, ``[SEP]`` 1, ``[BOS]`` 2, ``[MASK]`` 3, ``[PAD]`` 4,
  ``[RESERVED]`` 5, ``[UNK]`` 6 and the characters (default ``A C G T N``)
  from 7. Its ``tokenizer(seq)`` appends ``[SEP]`` (``add_sep=True``); the
  authors' own pretraining and benchmark pipelines call it with
  ``add_special_tokens=False``, which is what diffbio_sc embeds with (default
  ``add_sep=False``; a trailing ``[SEP]`` would also break PS's exact strand
  symmetry, since the reverse complement of ``seq [SEP]`` is ``[SEP] rc(seq)``). Its unknown rule (``unknown='token'``): every other character is one
  ``[UNK]``; its alphabet for ``unknown='error'`` is the characters, either case.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from .._validate import DfmInputError

__all__ = [
    "CaduceusTokenizer",
    "DnaTokenizerError",
    "Dnabert2Tokenizer",
    "GeneratorTokenizer",
    "HyenaTokenizer",
    "NTCheckpointTokenizer",
]

UNKNOWN_MODES = ("error", "token")
#: How the checkpoints' vocabularies spell special tokens: ``<pad>``, ``</s>``, ``[CLS]``.
_SPECIAL = re.compile(r"<[a-z/]+>|\[[A-Z]+\]")


class DnaTokenizerError(DfmInputError):
    """A sequence cannot be tokenized for a checkpoint as given."""


class _CheckpointTokenizer:
    """Shared part: vocabulary checks, the alphabet check, padding and lengths."""

    #: Symbols each model reads as sequence (upper case).
    alphabet = ""
    name = ""

    def __init__(self, vocab: Mapping[str, int], *, source: str = "vocabulary"):
        self.vocab = {str(t): int(i) for t, i in vocab.items()}
        self.source = source
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        if len(self.id_to_token) != len(self.vocab):
            raise DnaTokenizerError(f"{source}: token ids are not unique.")

    def _require(self, *tokens: str) -> None:
        missing = [t for t in tokens if t not in self.vocab]
        if missing:
            raise DnaTokenizerError(
                f"{self.source} lacks the token(s) {missing} that the {self.name} tokenizer "
                "needs; is it this model's tokenizer file?"
            )

    @property
    def vocab_size(self) -> int:
        """Number of tokens in the vocabulary."""
        return len(self.vocab)

    @property
    def special_ids(self) -> dict[str, int]:
        """Special token -> id, as this model's vocabulary spells them (``<pad>``, ``[CLS]``, ...)."""
        return {t: i for t, i in self.vocab.items() if _SPECIAL.fullmatch(t)}

    def plan(self, *, max_length: int | None = None, unknown: str = "error"):
        """Return this tokenizer with its options fixed, as a ``SequencePlan`` (``ops._plan``).

        Its ``encode(sequences)`` returns ``(ids, lengths)``, as every tokenizer plan.
        """
        from ._plan import sequence_plan

        return sequence_plan(self, max_length=max_length, unknown=unknown)

    def _check(self, seq: str, index: int, unknown: str) -> None:
        if not isinstance(seq, str):
            raise DnaTokenizerError(
                f"Sequence {index} is a {type(seq).__name__}, not a string of bases."
            )
        if unknown == "token":
            return
        bad = re.search(f"[^{self.alphabet}]", seq)
        if bad is not None:
            pos, ch = bad.start(), bad.group()
            hint = (
                " (lower case: pass the sequence through str.upper() first if soft-masked "
                "bases should count as bases)"
                if ch.isalpha() and ch.upper() in self.alphabet
                else ""
            )
            raise DnaTokenizerError(
                f"Sequence {index} has {ch!r} at position {pos}, outside the {self.name} "
                f"alphabet {self.alphabet!r}{hint}. Clean the sequence, or pass "
                f"unknown='token' to use the model's own unknown-token rule."
            )

    def tokens(self, seq: str) -> list[str]:
        """Token strings of one sequence, specials included (override)."""
        raise NotImplementedError

    def encode(
        self,
        sequences: Sequence[str],
        *,
        max_length: int | None = None,
        unknown: str = "error",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of ``sequences``, right-padded, and the mask of real tokens.

        Parameters
        ----------
        sequences
            DNA strings.
        max_length
            Most tokens (specials included) a sequence may have: more is an error
            naming the sequence. ``None``: no limit.
        unknown
            ``'error'`` (default): a symbol outside the alphabet is an error;
            ``'token'``: the model's unknown-token rule (see the module docstring).

        Returns
        -------
        ``(ids, mask)``: ``(n, T)`` int32 ids padded with the pad id and ``(n, T)``
        bool, True on real tokens; ``T`` is the longest token count.
        """
        if unknown not in UNKNOWN_MODES:
            raise DnaTokenizerError(f"unknown must be one of {UNKNOWN_MODES}, got {unknown!r}.")
        if isinstance(sequences, str):
            raise DnaTokenizerError("Pass a list of sequences, not one string.")
        rows = []
        for i, seq in enumerate(sequences):
            self._check(seq, i, unknown)
            toks = self.tokens(seq)
            if max_length is not None and len(toks) > max_length:
                raise DnaTokenizerError(
                    f"Sequence {i} ({len(seq)} bases) gives {len(toks)} tokens, more than the "
                    f"model's context of {max_length} tokens. Shorten it or embed it in windows."
                )
            rows.append([self.vocab.get(t, self.unk_id) for t in toks])
        if not rows:
            raise DnaTokenizerError("No sequences given.")
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(rows), width), dtype=bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = True
        return ids, mask


class NTCheckpointTokenizer(_CheckpointTokenizer):
    """Nucleotide Transformer tokens with the checkpoint's ``vocab.txt`` ids.

    Parameters
    ----------
    vocab
        Token -> id (``vocab.txt`` line order).
    add_eos
        Append ``<eos>`` (when the checkpoint's tokenizer defines an eos token).
    source
        Where ``vocab`` came from (for messages).
    """

    alphabet = "ACGTN"
    name = "Nucleotide Transformer"
    _SCAN = re.compile(r"[ACGT]{6}|[ACGTN]|[^ACGTN]+")

    def __init__(self, vocab: Mapping[str, int], *, add_eos: bool = False, source: str = "vocab"):
        super().__init__(vocab, source=source)
        self._require("<pad>", "<unk>", "<cls>", "A", "C", "G", "T", "N", "ACGTAC")
        if add_eos:
            self._require("<eos>")
        self.add_eos = bool(add_eos)
        self.pad_id = self.vocab["<pad>"]
        self.unk_id = self.vocab["<unk>"]
        self.cls_id = self.vocab["<cls>"]
        self.mask_id = self.vocab.get("<mask>")

    def tokens(self, seq: str) -> list[str]:
        """``<cls>``, the 6-mer / single-base tokens (unknown runs as ``<unk>``), [``<eos>``]."""
        out = ["<cls>"]
        for piece in self._SCAN.findall(seq):
            if piece[0] in self.alphabet:
                out.append(piece)
            else:  # one <unk> per whitespace-separated word of the run, as EsmTokenizer
                out.extend(["<unk>"] * len(piece.split()))
        if self.add_eos:
            out.append("<eos>")
        return out


class GeneratorTokenizer(_CheckpointTokenizer):
    """GENERator's non-overlapping k-mer tokens with the checkpoint's vocabulary ids.

    Parameters
    ----------
    vocab
        Token -> id (the tokenizer's ``vocab.txt`` line order).
    k
        k-mer size (6 for the published models).
    source
        Where ``vocab`` came from (for messages).
    """

    alphabet = "ACGT"
    name = "GENERator"

    def __init__(self, vocab: Mapping[str, int], *, k: int = 6, source: str = "vocab"):
        super().__init__(vocab, source=source)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 8:
            raise DnaTokenizerError(f"{source}: k must be an integer in 1..8, got {k!r}.")
        self.k = k
        self._require("<oov>", "<s>", "</s>", "<pad>", "A" * k)
        self.pad_id = self.vocab["<pad>"]
        self.unk_id = self.vocab["<oov>"]
        self.bos_id = self.vocab["<s>"]
        self.eos_id = self.vocab["</s>"]
        self._scan = re.compile(f"[A-Z]{{{k}}}|[A-Z]+|.", re.DOTALL)

    def tokens(self, seq: str) -> list[str]:
        """``<s>``, the k-mer pieces (others as ``<oov>``), ``</s>``."""
        out = ["<s>"]
        for piece in self._scan.findall(seq):
            out.append(piece if piece in self.vocab and len(piece) == self.k else "<oov>")
        out.append("</s>")
        return out


class Dnabert2Tokenizer(_CheckpointTokenizer):
    """DNABERT-2's byte-pair-encoding tokenizer, read from its ``tokenizer.json``.

    Needs the ``tokenizers`` package (``pip install 'diffbio_sc[io]'``).

    Parameters
    ----------
    tokenizer_json
        The text of the checkpoint's ``tokenizer.json``.
    source
        Where it came from (for messages).
    """

    alphabet = "ACGT"
    name = "DNABERT-2"

    def __init__(self, tokenizer_json: str, *, source: str = "tokenizer.json"):
        try:
            from tokenizers import Tokenizer
        except ImportError as err:  # pragma: no cover - the test extra installs it
            raise ImportError(
                "DNABERT-2's tokenizer needs the 'tokenizers' package: "
                "pip install 'diffbio_sc[io]' (or pip install tokenizers)."
            ) from err
        try:
            tok = Tokenizer.from_str(tokenizer_json)
        except Exception as err:  # the library raises a plain Exception on bad files
            raise DnaTokenizerError(f"{source} is not a tokenizers file ({err}).") from None
        tok.no_truncation()
        tok.no_padding()
        self._tok = tok
        self.json = tokenizer_json
        super().__init__(tok.get_vocab(with_added_tokens=True), source=source)
        self._require("[UNK]", "[CLS]", "[SEP]", "[PAD]")
        self.pad_id = self.vocab["[PAD]"]
        self.unk_id = self.vocab["[UNK]"]
        self.cls_id = self.vocab["[CLS]"]
        self.sep_id = self.vocab["[SEP]"]

    def tokens(self, seq: str) -> list[str]:
        """``[CLS]``, the BPE pieces (unknown symbols as ``[UNK]``), ``[SEP]``."""
        return list(self._tok.encode(seq).tokens)


#: CaduceusTokenizer's special tokens and their ids (upstream's fixed table).
CADUCEUS_SPECIALS = ("[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]")


class CaduceusTokenizer(_CheckpointTokenizer):
    """Caduceus's character tokenizer (upstream ``CaduceusTokenizer``; see the module doc).

    Parameters
    ----------
    characters
        The model's characters (``tokenizer_config.json``'s ``characters``;
        default ``'ACGTN'``), ids from 7 in this order.
    add_sep
        Append ``[SEP]`` as upstream's ``tokenizer(seq)`` does (default False: as
        the authors' pipelines, ``add_special_tokens=False``).
    source
        Where the settings came from (for messages).
    """

    name = "Caduceus"
    #: Bases per token (one character each).
    k = 1

    def __init__(
        self,
        characters: Sequence[str] = "ACGTN",
        *,
        add_sep: bool = False,
        source: str = "tokenizer_config",
    ):
        self.add_sep = bool(add_sep)
        #: Special tokens per sequence (``[SEP]`` or none).
        self.n_special = int(self.add_sep)
        self.add_eos = self.add_sep  # the end token is [SEP]
        chars = [str(c) for c in characters]
        if not chars or any(len(c) != 1 or not c.isupper() for c in chars):
            raise DnaTokenizerError(
                f"{source}: characters must be single upper-case letters, got {chars!r}."
            )
        vocab = {t: i for i, t in enumerate(CADUCEUS_SPECIALS)}
        vocab.update({c: i + len(CADUCEUS_SPECIALS) for i, c in enumerate(chars)})
        super().__init__(vocab, source=source)
        self.characters = "".join(chars)
        self.alphabet = re.escape(self.characters)
        self.pad_id = vocab["[PAD]"]
        self.unk_id = vocab["[UNK]"]
        self.sep_id = vocab["[SEP]"]

    def _check(self, seq: str, index: int, unknown: str) -> None:
        # upstream upper-cases first: lower-case bases are bases, not unknown symbols
        super()._check(seq.upper() if isinstance(seq, str) else seq, index, unknown)

    def tokens(self, seq: str) -> list[str]:
        """One token per upper-cased character (then ``[SEP]`` with ``add_sep``)."""
        return [*seq.upper(), "[SEP]"] if self.add_sep else list(seq.upper())


#: HyenaDNA's special tokens, in id order (upstream's ``CharacterTokenizer``).
HYENA_SPECIALS = CADUCEUS_SPECIALS  # the same CharacterTokenizer table


class HyenaTokenizer(_CheckpointTokenizer):
    """HyenaDNA's character tokens (upstream's ``CharacterTokenizer``, the ``-hf`` rule).

    Parameters
    ----------
    characters
        The model's characters (``tokenizer_config.json``'s ``characters``;
        default ``A C G T N``), ids 7, 8, ... in this order.
    source
        Where the characters came from (for messages).
    """

    name = "HyenaDNA"
    #: Bases per token (one character per token), as the k-mer tokenizers' ``k``.
    k = 1
    #: No end token besides ``[SEP]`` (counted by the callers as the one special token).
    add_eos = False

    def __init__(self, characters: Sequence[str] = tuple("ACGTN"), *, source: str = "default"):
        chars = [str(c) for c in characters]
        if (
            not chars
            or any(len(c) != 1 or not c.isalnum() for c in chars)
            or len(set(chars)) != len(chars)
        ):
            raise DnaTokenizerError(
                f"{source}: HyenaDNA characters must be distinct single letters or digits, "
                f"got {chars!r}."
            )
        vocab = {t: i for i, t in enumerate(HYENA_SPECIALS)}
        vocab.update({c: i + len(HYENA_SPECIALS) for i, c in enumerate(chars)})
        super().__init__(vocab, source=source)
        self.characters = tuple(chars)
        self.alphabet = "".join(chars)
        self.pad_id = self.vocab["[PAD]"]
        self.unk_id = self.vocab["[UNK]"]
        self.sep_id = self.vocab["[SEP]"]

    def tokens(self, seq: str) -> list[str]:
        """One token per character (others map to ``[UNK]`` by id), then ``[SEP]``."""
        return [*seq, "[SEP]"]
