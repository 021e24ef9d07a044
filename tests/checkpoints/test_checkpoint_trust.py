"""Issue 24: checkpoints that load today but give wrong embeddings are refused, naming the field.

Each case edits a copy of a tiny fixture checkpoint (tests/checkpoints/fixtures) and
expects one clear :class:`CheckpointError` (a ``DfmInputError``) naming the file and the
field or tensor; before the fix each of them loaded without a word.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError
from diffbio_sc.io._checkpoints import CheckpointError, read_checkpoint
from diffbio_sc.models._base import ModelFormatError

FIX = Path(__file__).parent / "fixtures"
WORD = "bert.embeddings.word_embeddings.weight"


def _copy(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    shutil.copytree(FIX / name, d)
    return d


def _edit_json(path: Path, **changes) -> None:
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def _save_weights(d: Path, weights: dict) -> None:
    import safetensors.numpy

    safetensors.numpy.save_file(
        {k: np.ascontiguousarray(v) for k, v in weights.items()}, str(d / "model.safetensors")
    )


def test_checkpoint_errors_are_dfm_input_errors_and_value_errors():
    for cls in (CheckpointError, ModelFormatError):
        assert issubclass(cls, DfmInputError) and issubclass(cls, ValueError)


@pytest.mark.parametrize("dtype", ["int8", "int32", "bool"])
def test_integer_or_bool_weights_are_refused_naming_tensor_and_file(tmp_path, dtype):
    d = _copy(tmp_path, "geneformer_v1")
    w = read_checkpoint(d).weights
    # quantized to int8 in [-127, 127] (as an int8 export would store it)
    w[WORD] = np.clip(np.round(w[WORD] * 127 / np.abs(w[WORD]).max()), -127, 127).astype(dtype)
    _save_weights(d, w)
    with pytest.raises(CheckpointError, match=rf"{WORD}.*dtype {dtype}.*floating") as err:
        dfm.models.load_checkpoint(d)
    assert "model.safetensors" in str(err.value)


def test_integer_weights_of_scgpt_are_refused(tmp_path):
    d = tmp_path / "scgpt_int"
    d.mkdir()
    for f in ("args.json", "vocab.json"):
        shutil.copy(FIX / "scgpt" / f, d / f)
    w = read_checkpoint(FIX / "scgpt").weights
    w["encoder.embedding.weight"] = (w["encoder.embedding.weight"] * 100).astype(np.int8)
    _save_weights(d, w)
    with pytest.raises(CheckpointError, match=r"encoder\.embedding\.weight.*int8"):
        dfm.models.load_checkpoint(d)


def test_half_precision_weights_still_load_widened_exactly(tmp_path):
    d = _copy(tmp_path, "geneformer_v1")
    w = read_checkpoint(d).weights
    half = {k: v.astype(np.float16) for k, v in w.items()}
    _save_weights(d, half)
    m = dfm.models.load_checkpoint(d)
    got = m.module.get_weights()["word.embedding"]
    np.testing.assert_array_equal(got, half[WORD].astype(np.float32))


@pytest.mark.parametrize(
    "value, shown", [(0.0, "0.0"), (-1.5, "-1.5"), ("2.0", "'2.0'"), (None, "None")]
)
def test_gene_medians_not_positive_numbers_are_refused(tmp_path, value, shown):
    d = _copy(tmp_path, "geneformer_v1")
    _edit_json(d / "gene_median_dictionary.json", ENSG00000000002=value)
    with pytest.raises(CheckpointError, match=r"gene_median_dictionary") as err:
        dfm.models.load_checkpoint(d)
    msg = str(err.value)
    assert "gene_median_dictionary.json" in msg and f"'ENSG00000000002': {shown}" in msg
    assert "1 of 40" in msg  # counts the bad medians


def test_gene_medians_passed_as_mapping_are_checked_and_adata_unchanged(cells):
    med = json.loads((FIX / "geneformer_v1" / "gene_median_dictionary.json").read_text())
    med["ENSG00000000003"] = 0
    before = cells.copy()
    with pytest.raises(CheckpointError, match="ENSG00000000003"):
        dfm.tl.embed_checkpoint(cells, FIX / "geneformer_v1", gene_median_dictionary=med)
    assert list(cells.obsm) == list(before.obsm) and "dfm" not in cells.uns


def test_scgpt_vocabulary_id_beyond_the_embedding_table_is_refused(tmp_path):
    d = _copy(tmp_path, "scgpt")
    voc = json.loads((d / "vocab.json").read_text())
    voc["GENE40"] = 100  # same number of tokens (43 = rows), one id outside the table
    (d / "vocab.json").write_text(json.dumps(voc))
    with pytest.raises(CheckpointError, match=r"beyond the gene embedding.*'GENE40': 100") as err:
        dfm.models.load_checkpoint(d)
    assert "vocab.json" in str(err.value)


@pytest.mark.parametrize(
    "name, file, field, value",
    [
        ("geneformer_v1", "config.json", "hidden_size", "16"),
        ("geneformer_v1", "config.json", "num_hidden_layers", 3.0),
        ("geneformer_v1", "config.json", "layer_norm_eps", "1e-12"),
        ("geneformer_v1", "config.json", "tie_word_embeddings", "false"),
        ("geneformer_v1", "config.json", "pad_token_id", True),
        ("scgpt", "args.json", "embsize", "16"),
        ("scgpt", "args.json", "n_bins", "51"),
        ("scgpt", "args.json", "pre_norm", 0),
        ("scgpt", "args.json", "max_seq_len", "1200"),
    ],
)
def test_config_fields_of_the_wrong_type_are_refused_not_coerced(
    tmp_path, name, file, field, value
):
    d = _copy(tmp_path, name)
    _edit_json(d / file, **{field: value})
    with pytest.raises(CheckpointError, match=rf"{file}: the field '{field}' must be") as err:
        dfm.models.load_checkpoint(d)
    assert str(d / file) in str(err.value)


@pytest.mark.parametrize("value", [1, 0, -5])
def test_scgpt_max_seq_len_below_two_is_refused(tmp_path, value):
    d = _copy(tmp_path, "scgpt")
    _edit_json(d / "args.json", max_seq_len=value)
    with pytest.raises(CheckpointError, match=r"args\.json: the field 'max_seq_len' must be"):
        dfm.models.load_checkpoint(d)
    _edit_json(d / "args.json", max_seq_len=7)  # a valid value is used, not replaced by 1,200
    assert dfm.models.load_checkpoint(d).max_tokens == 7


@pytest.mark.parametrize(
    "name, file, field", [("geneformer_v1", "config.json", "layer_norm_eps"), ("scgpt", None, None)]
)
def test_non_positive_layer_norm_eps_is_a_config_error_not_corrupt_weights(
    tmp_path, name, file, field
):
    if file is None:  # scGPT's epsilon is fixed (PyTorch's 1e-5); its config checks it too
        from diffbio_sc.models._scgpt import ScGPTConfig

        with pytest.raises(ValueError, match="layer_norm_eps must be > 0"):
            ScGPTConfig(
                vocab_size=5,
                d_model=4,
                n_heads=2,
                d_hid=4,
                n_layers=1,
                pad_token_id=0,
                cls_token_id=1,
                layer_norm_eps=-1.0,
            )
        return
    d = _copy(tmp_path, name)
    _edit_json(d / file, **{field: -1})
    with pytest.raises(CheckpointError, match=r"config\.json: .*layer_norm_eps must be > 0") as err:
        dfm.models.load_checkpoint(d)
    assert "corrupt" not in str(err.value)


def test_saved_checkpoint_model_with_bad_dictionaries_is_refused(tmp_path):
    m = dfm.models.load_checkpoint(FIX / "geneformer_v1")
    m.save(tmp_path / "saved")
    cfile = tmp_path / "saved" / "config.json"
    doc = json.loads(cfile.read_text())
    doc["metadata"]["medians"]["ENSG00000000001"] = -1.0
    cfile.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"saved/config\.json.*ENSG00000000001"):
        dfm.models.load_checkpoint(tmp_path / "saved")
    del doc["metadata"]["medians"]
    cfile.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="'medians'"):
        dfm.models.load_checkpoint(tmp_path / "saved")


def test_loaded_checkpoint_medians_are_not_shared_with_the_module_metadata(tmp_path):
    m = dfm.models.load_checkpoint(FIX / "geneformer_v1")
    m.save(tmp_path / "saved")
    back = dfm.models.load_checkpoint(tmp_path / "saved")
    back.module.metadata["medians"]["ENSG00000000001"] = 123.0
    assert back.medians["ENSG00000000001"] == pytest.approx(m.medians["ENSG00000000001"])


def test_checkpoint_model_repr_is_a_short_summary():
    m = dfm.models.load_checkpoint(FIX / "geneformer_v1")
    text = repr(m)
    lines = text.splitlines()
    assert len(lines) <= 8 and "ENSG" not in text  # no dictionary dump
    n = sum(v.size for v in m.module.get_weights().values())
    assert lines[0].startswith("CheckpointModel (geneformer, geneformer_v1): 3 layers")
    assert f"parameters: {n:,}" in text and "42 tokens, 40 gene medians" in text
    assert str(m) == text
    mod = repr(m.module)
    assert mod.startswith("BertEncoder") and len(mod.splitlines()) <= 8
    assert "num_hidden_layers=3" in mod and f"parameters: {n:,}" in mod


def test_token_ids_must_be_integers_not_strings_or_fractions(tmp_path):
    d = _copy(tmp_path, "geneformer_v1")
    tok = json.loads((d / "token_dictionary.json").read_text())
    gene = next(k for k in tok if not k.startswith("<"))
    for value, ok in (("7", False), (7.5, False), (True, False), (float(tok[gene]), True)):
        edited = {**tok, gene: value}
        (d / "token_dictionary.json").write_text(json.dumps(edited))
        if ok:  # an integral float (as a CSV column holds it) is the same id
            assert dfm.models.load_checkpoint(d).vocab[gene] == tok[gene]
            continue
        with pytest.raises(CheckpointError, match=rf"token dictionary .*{gene}': {value!r}"):
            dfm.models.load_checkpoint(d)
