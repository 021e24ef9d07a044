"""Fetch a checkpoint from the Hugging Face Hub (or its local cache) and load it.

:func:`from_pretrained` is the only place diffbio_sc touches the network, and only
when it is called. It asks ``huggingface_hub`` for the files one checkpoint needs
(configuration, weights, tokenizer and dictionary files; never the whole
repository), then hands the folder to :func:`~diffbio_sc.models.load_checkpoint`,
so the weights are read exactly as from a local directory: safetensors, or
``.bin``/``.pt`` through the restricted unpickler (tensors only). Nothing here
unpickles: Geneformer's ``.pkl`` dictionaries are downloaded, not read.

Offline use: with ``HF_HUB_OFFLINE=1`` (or ``local_files_only=True``) the files
come from the cache only, e.g. one filled beforehand with
``hf download <repo_id>`` (``huggingface-cli download`` in older versions) or by
one online call.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from ._genomics_registry import GENOMICS_MODELS

__all__ = ["from_pretrained", "HUB_REPOSITORIES"]

_by_name = {rec["name"]: rec for rec in GENOMICS_MODELS}

#: Hub repositories of the checkpoint families diffbio_sc runs in-process
#: (family -> ``repo_ids`` and notes). Geneformer keeps several models in one
#: repository, chosen with ``subfolder``; its dictionaries are pickles under
#: ``geneformer/`` (see :func:`from_pretrained`). scGPT's whole-human checkpoint is
#: distributed through Google Drive, not the Hub: :func:`from_pretrained` loads any
#: repository holding scGPT's layout. The DNA families' ids are the ``checkpoints``
#: of :data:`~diffbio_sc.models.GENOMICS_MODELS`.
HUB_REPOSITORIES: dict[str, dict[str, Any]] = {
    "geneformer": {
        "repo_ids": ("ctheodoris/Geneformer",),
        "subfolders": (
            "Geneformer-V1-10M",
            "Geneformer-V2-104M",
            "Geneformer-V2-104M_CLcancer",
            "Geneformer-V2-316M",
        ),
        "dictionaries": "geneformer/token_dictionary_gc104M.pkl, "
        "geneformer/gene_median_dictionary_gc104M.pkl (V2; V1: geneformer/gene_dictionaries_30m/)",
    },
    "scgpt": {
        "repo_ids": (),
        "note": "distributed via Google Drive (github.com/bowang-lab/scGPT); no official Hub "
        "repository. Any repository with scGPT's layout (args.json, vocab.json, "
        "best_model.pt) loads.",
    },
    **{
        family: {"repo_ids": tuple(rec["checkpoints"])}
        for family, rec in (
            ("generator", _by_name["GENERator"]),
            ("nucleotide_transformer", _by_name["Nucleotide Transformer"]),
            ("dnabert2", _by_name["DNABERT-2"]),
            ("hyenadna", _by_name["HyenaDNA"]),
        )
    },
    "caduceus": {
        "repo_ids": tuple(_by_name["Caduceus-Ph"]["checkpoints"])
        + tuple(_by_name["Caduceus-PS"]["checkpoints"]),
        "note": "config.json + model.safetensors; the tokenizer is Caduceus's fixed character "
        "table (tokenizer_config.json: characters, model_max_length).",
    },
}
del _by_name

#: Files that mark a folder as holding a checkpoint (HF layout, scGPT layout).
_MARKERS = ("config.json", "args.json")

#: Files a checkpoint folder needs (names relative to the folder).
_CHECKPOINT_FILES = (
    "config.json",
    "args.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model-*-of-*.bin",
    "pytorch_model.bin.index.json",
    "best_model.pt",
    "best_model.safetensors",
    "vocab.json",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)

#: Geneformer's dictionaries, wherever they are in the repository (JSON read; pickles
#: only downloaded, for the user to convert where they trust them).
_DICTIONARY_FILES = (
    "*token_dictionary*.json",
    "*gene_median_dictionary*.json",
    "*token_dictionary*.pkl",
    "*gene_median_dictionary*.pkl",
)

_CONVERT = (
    "convert them once to JSON where you trust the files (pickles can run code; diffbio_sc "
    "never unpickles them), e.g. json.dump({k: int(v) for k, v in pickle.load(open(tok, "
    "'rb')).items()}, ...) as token_dictionary.json, or pass token_dictionary= and "
    "gene_median_dictionary= as mappings (see dfm.models.load_checkpoint); "
    "dfm.tl.embed_checkpoint also takes the pickle paths with trust_pickle=True."
)


def _checkpoint_patterns(sub: str) -> list[str]:
    """``allow_patterns`` for the model in folder ``sub`` ('' for the root).

    Names are anchored at the folder (``fnmatch``'s ``*`` crosses ``/``, so no
    pattern starts with ``*`` but the dictionaries', which may sit anywhere).
    """
    prefix = f"{sub}/" if sub else ""
    return [prefix + name for name in _CHECKPOINT_FILES] + list(_DICTIONARY_FILES)


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError(
            "dfm.models.from_pretrained needs the huggingface_hub package: pip install "
            "huggingface_hub (or pip install 'diffbio_sc[hub]'). A checkpoint directory "
            "on disk loads without it: dfm.models.load_checkpoint(path)."
        ) from None
    return huggingface_hub


def _check_subfolder(subfolder) -> str:
    from .._validate import DfmInputError

    if subfolder is None:
        return ""
    if not isinstance(subfolder, str):
        raise TypeError(f"subfolder must be a string, got {type(subfolder).__name__}.")
    parts = PurePosixPath(subfolder.replace("\\", "/")).parts
    if subfolder.startswith(("/", "\\")) or ".." in parts:
        raise DfmInputError(
            f"subfolder {subfolder!r} must be a relative path inside the repository "
            "(e.g. 'Geneformer-V2-104M'), without '..'."
        )
    return "/".join(p for p in parts if p != ".")


def _model_folders(root: Path) -> list[str]:
    """Folders under ``root`` (relative, POSIX, '' for the root) that hold a config.json/args.json."""
    found = set()
    for marker in _MARKERS:
        for f in root.rglob(marker):
            rel = f.parent.relative_to(root).as_posix()
            found.add("" if rel == "." else rel)
    return sorted(found)


def _describe(folders: list[str]) -> str:
    return ", ".join("'.' (the repository root)" if f == "" else repr(f) for f in folders)


def _download(hub, repo_id, revision, cache_dir, local_files_only, patterns) -> Path:
    """``snapshot_download`` restricted to ``patterns``; hub errors become CheckpointError."""
    from huggingface_hub.utils import (
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from ..io._checkpoints import CheckpointError

    kwargs = {"revision": revision, "cache_dir": cache_dir, "allow_patterns": list(patterns)}
    if local_files_only is not None:
        kwargs["local_files_only"] = bool(local_files_only)
    rev = "main" if revision is None else revision
    fill = (
        f"hf download {repo_id}"
        + ("" if revision is None else f" --revision {revision}")
        + ("" if cache_dir is None else f" --cache-dir {os.fspath(cache_dir)}")
    )
    try:
        return Path(hub.snapshot_download(repo_id, **kwargs))
    except RevisionNotFoundError:
        raise CheckpointError(
            f"Revision {rev!r} of {repo_id!r} does not exist on the Hugging Face Hub; pass a "
            "branch, tag or commit hash of the repository as revision=."
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"{repo_id!r} is no Hugging Face Hub repository you can read (check the id; for a "
            "private or gated one, log in with `hf auth login` and accept its terms)."
        ) from None
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{repo_id!r} at revision {rev!r} is not in the local Hugging Face cache"
            + ("" if cache_dir is None else f" ({os.fspath(cache_dir)})")
            + ", and downloads are off (HF_HUB_OFFLINE=1 or local_files_only=True) or the Hub "
            f"is unreachable. Pre-fill the cache on a machine with a network: `{fill}` "
            "(`huggingface-cli download ...` in older huggingface_hub), or call "
            "dfm.models.from_pretrained once online, then copy the cache folder."
        ) from None


def from_pretrained(
    repo_id: str,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    **load_kwargs,
):
    """Download (or find in the cache) a checkpoint on the Hugging Face Hub and load it.

    Opt-in: nothing is fetched unless this is called. Only the files a checkpoint
    needs are fetched (configuration, weights, tokenizer files, Geneformer
    dictionaries), for the chosen ``subfolder`` only; then the folder is read by
    :func:`~diffbio_sc.models.load_checkpoint`, as a local directory would be.

    Parameters
    ----------
    repo_id
        Hub repository, e.g. ``'ctheodoris/Geneformer'``,
        ``'InstaDeepAI/nucleotide-transformer-v2-50m-multi-species'`` or
        ``'GenerTeam/GENERator-eukaryote-1.2b-base'`` (see
        :data:`HUB_REPOSITORIES` and the ``checkpoints`` of
        :data:`~diffbio_sc.models.GENOMICS_MODELS`).
    revision
        Branch, tag or commit hash; default ``'main'``.
    subfolder
        Folder of the repository that holds the model (Geneformer keeps several:
        ``'Geneformer-V1-10M'``, ``'Geneformer-V2-104M'``, ``'Geneformer-V2-316M'``, ...).
        Required when the repository holds more than one model; ``'.'`` picks the
        repository root's own.
    cache_dir
        Hugging Face cache folder; default that of ``huggingface_hub``
        (``HF_HUB_CACHE``, ``~/.cache/huggingface/hub``).
    local_files_only
        ``True``: use the cache only, never the network (as ``HF_HUB_OFFLINE=1``
        does for every call). Default: as ``huggingface_hub`` decides.
    **load_kwargs
        Passed to :func:`~diffbio_sc.models.load_checkpoint` (``token_dictionary=``,
        ``gene_median_dictionary=``, ``vocab=``).

    Returns
    -------
    CheckpointModel
        The loaded model (a ``DnaCheckpointModel`` for GENERator / Nucleotide
        Transformer). Its ``hub`` attribute records ``repo_id``, ``revision`` (the
        resolved commit hash), ``requested_revision`` and ``subfolder``; it is
        kept by :meth:`~diffbio_sc.models.CheckpointModel.save`.

    Raises
    ------
    ImportError
        ``huggingface_hub`` is not installed.
    CheckpointError
        (a :class:`~diffbio_sc._validate.DfmInputError`): the repository or
        revision does not exist; it is not cached while offline (the message says
        how to pre-fill the cache); ``subfolder`` holds no model (the folders that
        do are listed); no ``subfolder`` was given for a repository holding
        several models (listed); a Geneformer model whose dictionaries exist
        only as pickles (convert them once to JSON, or pass them as mappings).
    FileNotFoundError, CheckpointError
        As :func:`~diffbio_sc.models.load_checkpoint` for the files themselves.
    """
    from .._validate import DfmInputError
    from ..io._checkpoints import CheckpointError
    from ._pretrained import load_checkpoint

    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise DfmInputError(
            f"repo_id must be a Hugging Face repository id 'owner/name' (e.g. "
            f"'ctheodoris/Geneformer'), got {repo_id!r}."
        )
    if revision is not None and not isinstance(revision, str):
        raise TypeError(f"revision must be a string or None, got {type(revision).__name__}.")
    sub = _check_subfolder(subfolder)
    hub = _hub()
    args = (hub, repo_id, revision, cache_dir, local_files_only)

    # 1. configurations only: cheap, and enough to see which models the repository holds.
    markers = [*_MARKERS, *(f"*/{m}" for m in _MARKERS)]
    root = _download(*args, markers)
    folders = _model_folders(root)
    rev = "main" if revision is None else revision
    where = f"{repo_id!r} (revision {rev!r})"
    if subfolder is None and len(folders) > 1:
        raise CheckpointError(
            f"{where} holds several models; choose one with subfolder=: {_describe(folders)}."
        )
    if sub not in folders:
        raise CheckpointError(
            f"{where} has no model in "
            + (f"subfolder {subfolder!r}" if sub else "its root")
            + " (no config.json or args.json there); "
            + (
                f"folders holding one: {_describe(folders)}."
                if folders
                else "no folder of the repository holds one."
            )
        )

    # 2. the chosen model's files (and the dictionaries, wherever the repository keeps them).
    snapshot = _download(*args, _checkpoint_patterns(sub))
    folder = snapshot / sub if sub else snapshot
    try:
        model = load_checkpoint(folder, **load_kwargs)
    except FileNotFoundError as err:
        pickles = sorted(
            p.relative_to(snapshot).as_posix()
            for p in snapshot.rglob("*.pkl")
            if "dictionary" in p.name
        )
        if not pickles or not str(err).startswith("No "):
            raise
        raise CheckpointError(
            f"{err} {where} ships its Geneformer dictionaries as pickles ({', '.join(pickles)}, "
            f"downloaded under {snapshot}): {_CONVERT}"
        ) from None
    model.hub = {
        "repo_id": repo_id,
        "revision": snapshot.name,
        "requested_revision": rev,
        "subfolder": sub or None,
    }
    return model
