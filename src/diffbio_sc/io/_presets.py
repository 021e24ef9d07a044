"""Presets for embeddings exported by upstream foundation models.

A preset records what is known about one model's exported cell (or sequence)
embeddings: the model family, which id array a ``.npz`` holds, the usual
``.obsm`` key in an ``.h5ad`` export, the pooling and preprocessing recipes it
allows, how it counts layers, and whether its rows are L2-normalised.
:func:`diffbio_sc.tl.load_embeddings` uses the preset to validate options and to
fill ``.uns['dfm']['embeddings'][key]``.

Layer counting differs between tools. Geneformer's ``EmbExtractor`` takes
``emb_layer`` counted from the top of the network: ``0`` is the last layer and
``-1`` the penultimate one (its default). Tools built on Hugging Face
``output_hidden_states`` count from the input: ``0`` is the output of the
embedding layer, ``1`` the first transformer layer, and negative values count
back from the output (``-1`` = last layer). The preset's ``layer_convention``
says which applies and :meth:`EmbeddingPreset.describe_layer` turns an index
into plain words, which are stored beside the number.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._validate import DfmInputError

LAYER_FROM_TOP = "from_top"
LAYER_FROM_INPUT = "from_input"
# What sequence-embedding scripts commonly call the record ids (FASTA names).
_SEQ_ID_ARRAYS = ("ids", "names", "seq_ids")
_SEQ_ID_COLUMNS = ("seq_id", "id", "name")


@dataclass(frozen=True)
class EmbeddingPreset:
    """What is known about one upstream model's exported embeddings.

    Attributes
    ----------
    name
        Preset name, also the ``source`` recorded in ``.uns`` and the default
        ``key_added`` suffix (``X_<name>``).
    model_family
        ``'single_cell_transformer'`` or ``'sequence_transformer'``.
    id_kind
        Name of the id array in an ``.npz`` export: ``'cell_ids'`` or
        ``'sequence_ids'``.
    obsm_keys
        ``.obsm`` keys the upstream tool writes into an ``.h5ad`` export, tried
        in order when a file holds several entries and ``obsm_key`` is not given.
    default_pooling
        Pooling recorded when the caller gives none (``None``: not recorded).
    pooling_options
        Allowed pooling strategies; ``None`` allows any string.
    preprocessing_options
        Allowed preprocessing versions; ``None`` allows any string.
    layer_convention
        ``'from_top'`` (Geneformer: 0 = last layer, -1 = penultimate) or
        ``'from_input'`` (0 = embedding-layer output, -1 = last layer).
    layer_options
        Allowed layer indices; ``None`` allows any integer.
    expects_unit_norm
        Whether the tool's exported rows are L2-normalised (scGPT).
    batch_context
        Whether ``requires_batch_context`` is always recorded (scGPT).
    extra_id_arrays
        ``.npz``/``.safetensors`` id entries tried after ``cell_ids`` /
        ``sequence_ids`` (sequence exports often name them ``ids`` or ``names``).
    extra_id_columns
        Table id columns tried after ``cell_id`` / ``sequence_id``, before the
        leading index column (e.g. ``seq_id``, ``name``).
    """

    name: str
    model_family: str
    id_kind: str
    obsm_keys: tuple[str, ...] = ()
    default_pooling: str | None = None
    pooling_options: tuple[str, ...] | None = None
    preprocessing_options: tuple[str, ...] | None = None
    layer_convention: str = LAYER_FROM_INPUT
    layer_options: tuple[int, ...] | None = None
    expects_unit_norm: bool = False
    batch_context: bool = False
    extra_id_arrays: tuple[str, ...] = ()
    extra_id_columns: tuple[str, ...] = ()

    def check_pooling(self, pooling: str | None) -> str | None:
        """Return the pooling to record, or raise if this preset does not allow it."""
        if pooling is None:
            return self.default_pooling
        if not isinstance(pooling, str) or not pooling:
            raise DfmInputError(f"pooling_strategy must be a non-empty string, got {pooling!r}.")
        if self.pooling_options is not None and pooling not in self.pooling_options:
            raise DfmInputError(
                f"pooling_strategy={pooling!r} is not valid for source={self.name!r}; "
                f"use one of {list(self.pooling_options)}, or source='generic' for "
                "another model."
            )
        return pooling

    def check_preprocessing(self, version: str | None) -> str | None:
        """Return the preprocessing version to record, or raise if it is not allowed."""
        if version is None:
            return None
        if not isinstance(version, str) or not version:
            raise DfmInputError(
                f"preprocessing_version must be a non-empty string, got {version!r}."
            )
        if self.preprocessing_options is not None and version not in self.preprocessing_options:
            raise DfmInputError(
                f"preprocessing_version={version!r} is not valid for source={self.name!r}; "
                f"use one of {list(self.preprocessing_options)}."
            )
        return version

    def check_layer(self, index: int | None) -> int | None:
        """Return the layer index to record, or raise if this preset does not allow it."""
        if index is None:
            return None
        if isinstance(index, bool) or not isinstance(index, int):
            raise DfmInputError(f"layer_index must be an integer, got {index!r}.")
        if self.layer_options is not None and index not in self.layer_options:
            raise DfmInputError(
                f"layer_index={index} is not valid for source={self.name!r}: "
                f"{self.name} counts layers from the top and accepts "
                f"{list(self.layer_options)} (0 = last layer, -1 = penultimate)."
            )
        return int(index)

    def describe_layer(self, index: int) -> str:
        """Describe in plain words which layer ``index`` means for this tool."""
        if self.layer_convention == LAYER_FROM_TOP:
            if index == 0:
                where = "the last transformer layer"
            elif index == -1:
                where = "the penultimate transformer layer"
            else:
                where = f"the layer {abs(index)} below the last one"
            return (
                f"{where} ({self.name} emb_layer={index}; {self.name} counts from the top "
                "of the network: 0 = last layer, -1 = penultimate)"
            )
        if index >= 0:
            where = (
                "the embedding-layer output (before any transformer layer)"
                if index == 0
                else f"the output of transformer layer {index} counted from the input"
            )
            return (
                f"{where} (hidden-state index {index}, counted from the input: "
                "0 = embedding-layer output, 1 = first transformer layer)"
            )
        where = (
            "the last transformer layer"
            if index == -1
            else f"transformer layer {abs(index)} counted back from the output"
        )
        return f"{where} (hidden-state index {index}, Python-style from the end: -1 = last layer)"


PRESETS: dict[str, EmbeddingPreset] = {
    p.name: p
    for p in (
        EmbeddingPreset(
            name="geneformer",
            model_family="single_cell_transformer",
            id_kind="cell_ids",
            obsm_keys=("X_geneformer", "X_Geneformer"),
            default_pooling="mean",
            pooling_options=("mean", "cls"),
            preprocessing_options=("rank_value_v1", "rank_value_v2"),
            layer_convention=LAYER_FROM_TOP,
            layer_options=(-1, 0),
        ),
        EmbeddingPreset(
            name="scgpt",
            model_family="single_cell_transformer",
            id_kind="cell_ids",
            obsm_keys=("X_scGPT", "X_scgpt"),
            default_pooling="cls",
            pooling_options=("cls", "mean", "weighted_mean"),
            expects_unit_norm=True,
            batch_context=True,
        ),
        EmbeddingPreset(
            name="uce",
            model_family="single_cell_transformer",
            id_kind="cell_ids",
            obsm_keys=("X_uce", "X_UCE"),
            default_pooling="cls",
            pooling_options=("cls",),
        ),
        EmbeddingPreset(
            name="generic",
            model_family="single_cell_transformer",
            id_kind="cell_ids",
        ),
        EmbeddingPreset(
            name="dnabert2",
            model_family="sequence_transformer",
            id_kind="sequence_ids",
            obsm_keys=("X_dnabert2", "X_DNABERT2"),
            default_pooling="mean",
            pooling_options=("mean", "cls", "max"),
            extra_id_arrays=_SEQ_ID_ARRAYS,
            extra_id_columns=_SEQ_ID_COLUMNS,
        ),
        EmbeddingPreset(
            name="nucleotide_transformer",
            model_family="sequence_transformer",
            id_kind="sequence_ids",
            obsm_keys=("X_nucleotide_transformer", "X_nt"),
            default_pooling="mean",
            pooling_options=("mean", "cls", "max"),
            extra_id_arrays=_SEQ_ID_ARRAYS,
            extra_id_columns=_SEQ_ID_COLUMNS,
        ),
    )
}


def get_preset(source: str) -> EmbeddingPreset:
    """Return the preset named ``source`` (case-insensitive, ``-`` equals ``_``).

    Parameters
    ----------
    source
        A key of :data:`PRESETS`, e.g. ``'geneformer'``, ``'scgpt'``, ``'uce'``.

    Returns
    -------
    EmbeddingPreset
        The preset; an unknown name raises ``DfmInputError`` listing the known ones.
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a string, got {type(source).__name__}.")
    name = source.strip().lower().replace("-", "_")
    if name not in PRESETS:
        raise DfmInputError(
            f"Unknown embedding source {source!r}; known sources: {sorted(PRESETS)}. "
            "For another model pass source='generic' with artifact_id= naming the model."
        )
    return PRESETS[name]
