"""Write docs/api.md from the package's docstrings (run: python docs/make_api.py).

The reference is generated so that it cannot drift from the code; a test checks
that the committed file is up to date.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

HERE = Path(__file__).parent

SECTIONS = {
    "pp": ["gene_medians", "tokenize", "bin_expression", "soft_rank"],
    "tl": [
        "pretrain", "embed", "embed_checkpoint", "load_embeddings", "score_annotation", "score_integration",
        "benchmark", "save_baseline", "compare_to_baseline", "pca_baseline", "harmony_baseline",
    ],
    "pl": ["benchmark", "embedding"],
    "ops": ["soft_rank", "soft_sort", "neural_sort", "soft_rank_value_tokens"],
    "models": ["MaskedExpressionConfig", "MaskedExpressionModel", "load", "load_checkpoint"],
    "io": ["read_embeddings", "write_embeddings", "read_checkpoint"],
    "datasets": ["celllines_demo", "synthetic_counts"],
}


def render() -> str:
    import diffbio_sc as dfm

    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `python docs/make_api.py`; do not edit by hand.",
        "",
    ]
    for mod_name, names in SECTIONS.items():
        mod = getattr(dfm, mod_name)
        lines += [f"## `dfm.{mod_name}`", ""]
        doc = inspect.getdoc(mod)
        if doc:
            lines += [doc.split("\n\n")[0], ""]
        for name in names:
            obj = getattr(mod, name)
            try:
                target = obj.__init__ if inspect.isclass(obj) and "__init__" in vars(obj) else obj
                sig = inspect.signature(target)
                if target is not obj:
                    sig = sig.replace(parameters=list(sig.parameters.values())[1:])
                sig = str(sig)
            except (TypeError, ValueError):
                sig = "(...)"
            lines += [f"### `dfm.{mod_name}.{name}{sig}`", ""]
            lines += ["```text", inspect.getdoc(obj) or "(no docstring)", "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        current = (HERE / "api.md").read_text() if (HERE / "api.md").exists() else ""
        sys.exit(0 if current == text else 1)
    (HERE / "api.md").write_text(text)
    print("wrote", HERE / "api.md")
