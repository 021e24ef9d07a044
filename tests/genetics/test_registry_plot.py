"""Genomics model registry (plain data + rendered table) and the LOGO figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError


def test_registry_records_are_complete_plain_data():
    names = [m["name"] for m in dfm.models.GENOMICS_MODELS]
    assert names == [
        "Caduceus-PS",
        "Caduceus-Ph",
        "DNABERT-2",
        "Evo 2",
        "GENERator",
        "HyenaDNA",
        "Nucleotide Transformer",
    ]
    from diffbio_sc.models._genomics_registry import TOKENIZER_KINDS

    for m in dfm.models.GENOMICS_MODELS:
        assert m["tokenizer"] in TOKENIZER_KINDS
        assert m["dfm_rc_mode"] in ("average", "equivariant")
        assert m["checkpoints"] and all(w is None or w > 0 for w in m["checkpoints"].values())
        # the loader it names exists in the package
        assert "PrecomputedEncoder" in m["dfm_loader"] and hasattr(dfm.tl, "PrecomputedEncoder")
        assert all(isinstance(v, (str, int, dict, type(None))) for v in m.values())
    by = {m["name"]: m for m in dfm.models.GENOMICS_MODELS}
    assert by["Caduceus-PS"]["dfm_rc_mode"] == "equivariant"
    assert (
        by["Nucleotide Transformer"]["checkpoints"][
            "InstaDeepAI/nucleotide-transformer-v2-500m-multi-species"
        ]
        == 1024
    )


def test_markdown_table_is_rendered_from_the_data():
    md = dfm.models.genomics_models_markdown()
    lines = md.strip().splitlines()
    assert len(lines) == 2 + len(dfm.models.GENOMICS_MODELS)
    assert all(line.count("|") == 10 for line in lines)  # 9 columns everywhere
    assert "`DNABERT-2-117M`: 768" in md and "131,072 bp" in md and "`equivariant`" in md
    one = dfm.models.genomics_models_markdown(dfm.models.GENOMICS_MODELS[:1])
    assert one.count("\n") == 3 and "Caduceus-PS" in one and "HyenaDNA" not in one


def _table():
    res = pd.DataFrame(
        {
            "gene": ["A", "B", "C"],
            "delta_auc": [0.10, 0.01, -0.02],
            "ci_low": [0.05, -0.02, -0.05],
            "ci_high": [0.15, 0.04, 0.01],
            "t": [4.0, 0.5, -1.0],
            "p": [0.001, 0.3, 0.8],
            "q": [0.003, 0.45, 0.8],
            "significant": [True, False, False],
            "rank": [1, 2, 3],
        }
    )
    res.attrs.update(
        {"auc_all": 0.71, "n_repeats": 10, "n_folds": 5, "test": "permutation", "fdr": 0.05}
    )
    return res


def test_logo_plot_content(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    fig = dfm.pl.logo(_table(), save=tmp_path / "logo.png")
    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    assert (tmp_path / "logo.png").stat().st_size > 0
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["C", "B", "A"]  # largest delta-AUC drawn on top
    bars = ax.patches
    np.testing.assert_allclose([b.get_width() for b in bars], [-0.02, 0.01, 0.10])
    colours = [matplotlib.colors.to_hex(b.get_facecolor()) for b in bars]
    assert colours == ["#9e9e9e", "#9e9e9e", "#b2182b"]  # only A is significant
    texts = [t.get_text().strip() for t in ax.texts]
    assert texts == ["q=0.003"]
    assert "0.710" in ax.get_title() and "10 x 5" in ax.get_title()
    _, own = matplotlib.pyplot.subplots()
    assert dfm.pl.logo(_table(), top=2, fdr=0.5, ax=own) is own.figure
    ax2 = own
    assert [t.get_text() for t in ax2.get_yticklabels()] == ["B", "A"]
    assert len(ax2.texts) == 2
    matplotlib.pyplot.close("all")


def test_logo_plot_bad_input():
    with pytest.raises(DfmInputError, match="lacks columns"):
        dfm.pl.logo(pd.DataFrame({"gene": ["A"]}))
    with pytest.raises(TypeError, match="DataFrame"):
        dfm.pl.logo([1, 2])


def test_docs_table_is_the_rendered_registry():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "notes" / "genetics.md"
    text = doc.read_text()
    start = text.index("<!-- genomics-models-table:start -->\n") + len(
        "<!-- genomics-models-table:start -->\n"
    )
    end = text.index("<!-- genomics-models-table:end -->")
    assert text[start:end].strip() == dfm.models.genomics_models_markdown().strip()
