"""Peak memory and CPU time of the atlas-scale path at growing cell counts.

For each atlas (a backed ``.h5ad`` from ``benchmarks/make_atlas.py``), every step
runs in its own child process, and the parent reads the child's peak resident
memory (``ru_maxrss``) and CPU seconds (user + system) from ``os.wait4``:

* ``open``: nothing but opening the backed atlas (Python, NumPy, anndata, the
  package and the backed AnnData's ``.obs``/``.var``: the floor under every step);
* ``medians_hist``: ``dfm.pp.gene_medians(backed, method='histogram')`` (flat memory);
* ``medians_exact``: ``dfm.pp.gene_medians(backed, method='exact')`` (histograms,
  then the values in each gene's median bins; when those hold more than
  ``CANDIDATE_BUDGET`` values, sub-bin histograms of the median bins and a third
  pass keeping the median sub-bins' values); reports the passes and the
  median-bin values;
* ``tokenize``: ``dfm.pp.tokenize(backed, gene_medians=<exact medians>,
  tokens_store=<zarr>)``, Geneformer V1 recipe (2,048 tokens), tokens written
  out of core;
* ``pretrain``: ``dfm.tl.pretrain(backed, stream=True, max_steps=300)`` with a
  small model (hidden 32, 2 layers, 64 tokens, batch 256, 2,000 HVGs): both
  passes over the file (statistics; tokens and targets written to chunk files),
  a fixed budget of 300 optimizer steps (76,800 cells drawn chunk by chunk in a
  seeded random order from the whole atlas: a step costs the same at every
  size) and one validation pass over the held-out 10% of the cells. The
  per-phase CPU seconds and peak RSS are reported too;
* ``embed``: ``dfm.tl.embed(backed, model)`` of every cell (output ``n x 32`` in memory).

``pretrain`` and ``embed`` run with JAX's persistent compilation cache off
(``DFM_COMPILATION_CACHE=0``): every size then compiles its programs, and
the peak RSS includes the compilation at every size. With the cache on, a
step whose programs an earlier run compiled peaks about 300 MiB lower
(measured: ``pretrain`` at 100k cells, 20 steps: 1,471 MiB compiling,
1,157 MiB from the cache), which made sizes measured in one run look as if
memory grew with the cells.

The relative error of the histogram medians against the exact ones is
reported too. Results are appended as JSON lines to ``--results``.

Rows are labelled ``generated`` or ``tiled`` (from the atlas name, or ``--label``).

Usage::

    python benchmarks/bench_atlas.py /work/scratch/atlas_100000.h5ad [more.h5ad ...]
    python benchmarks/bench_atlas.py --table benchmarks/results/atlas.jsonl --label generated
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

STEPS = ("open", "medians_hist", "medians_exact", "tokenize", "pretrain", "embed")
#: Optimizer steps of the ``pretrain`` step at every atlas size (a fixed budget).
PRETRAIN_STEPS = 300


def _open(path):
    import anndata as ad

    return ad.read_h5ad(path, backed="r")


def run_step(step: str, atlas: str, work: Path) -> dict:
    """Run one step in this process (the child); return what it wants to report."""
    import json

    import numpy as np

    import diffbio_sc as dfm

    dfm.settings.progress_bar = False
    adata = _open(atlas)
    out: dict = {}
    med_file = work / "medians_exact.json"
    if step == "open":
        pass
    elif step in ("medians_hist", "medians_exact"):
        method = {"medians_hist": "histogram", "medians_exact": "exact"}[step]
        from diffbio_sc.ops import _medians as om

        start_refine = om.HistogramMedianAccumulator.start_refine

        def refine_report(acc):  # how much the two-pass exact method would keep
            start_refine(acc)
            out["median_bin_values"] = acc.median_bin_values
            out["passes"] = 3 if acc.needs_select() else 2

        om.HistogramMedianAccumulator.start_refine = refine_report
        dfm.pp.gene_medians(adata, method=method)
        med = adata.var["dfm_median"].to_numpy()
        np.save(work / f"{step}.npy", med)
        if method == "exact":
            table = {
                g: float(m) for g, m in zip(adata.var_names, med, strict=True) if np.isfinite(m)
            }
            med_file.write_text(json.dumps(table))
    elif step == "tokenize":
        dfm.pp.tokenize(adata, gene_medians=str(med_file), tokens_store=work / "tokens.zarr")
        out["mean_tokens"] = float(adata.obs["dfm_n_tokens"].mean())
    elif step == "pretrain":
        from diffbio_sc.models import MaskedExpressionConfig

        adata.var["dfm_median"] = np.load(work / "medians_exact.npy")
        cfg = MaskedExpressionConfig(hidden_dim=32, n_layers=2, n_heads=2, max_tokens=64)
        with _phases() as phases:
            model = dfm.tl.pretrain(
                adata,
                config=cfg,
                max_steps=PRETRAIN_STEPS,
                batch_size=256,
                n_top_genes=2000,
                stream=True,
                stream_dir=str(work),
                seed=0,
            )
        model.save(work / "model")
        out["val_loss"] = model.history["val_loss"][-1]
        out["steps"] = model.metadata["training"]["steps"]
        out["phases"] = phases.report(out["steps"])
    elif step == "embed":
        from diffbio_sc.models import load

        dfm.tl.embed(adata, load(work / "model"), batch_size=256)
        emb = adata.obsm["X_dfm"]
        out["embedding_shape"] = list(emb.shape)
    return out


class _PhaseClock:
    """CPU seconds and peak RSS at the boundaries of ``tl.pretrain``'s streamed phases."""

    def __init__(self):
        self.marks: dict[str, tuple[float, float]] = {}
        self.batch_cpu: list[float] = []

    def mark(self, name: str) -> None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.marks[name] = (time.process_time(), peak)

    def report(self, steps: int) -> dict:
        """Per phase: CPU s and the peak RSS (MiB) reached by its end; CPU per training step.

        ``train_steps`` is the CPU time from the 2nd to the last training batch
        request divided by the steps between them (no compilation, no validation);
        ``validation`` is from the first validation batch request to the end of
        training (forward passes over the held-out cells).
        """
        m, t = self.marks, self.batch_cpu
        out = {}
        prev = "start"
        for name in ("scan", "write_chunks", "train"):
            if name in m and prev in m:
                out[name] = {
                    "cpu_s": round(m[name][0] - m[prev][0], 1),
                    "peak_rss_mib": round(m[name][1], 1),
                }
            prev = name
        if len(t) > steps >= 3:
            out["cpu_per_step_ms"] = round(1e3 * (t[steps - 1] - t[1]) / (steps - 2), 1)
            out["validation_cpu_s"] = round(m["train"][0] - t[steps], 1)
            out["first_step_cpu_s"] = round(t[1] - t[0], 1)  # includes compilation
        return out


class _phases:
    """Context manager: wrap the streamed pretraining phases with a :class:`_PhaseClock`."""

    def __enter__(self):
        import diffbio_sc.tl._model_data as md
        import diffbio_sc.tl._pretrain as pt
        import diffbio_sc.tl._stream as st

        self.clock = clock = _PhaseClock()
        self.saved = [
            (md, "scan", md.scan),
            (st, "write_chunks", st.write_chunks),
            (pt, "_train", pt._train),
            (st.ChunkStore, "get_batch", st.ChunkStore.get_batch),
        ]

        def timed(name, fn):
            def wrapper(*args, **kwargs):
                result = fn(*args, **kwargs)
                clock.mark(name)
                return result

            return wrapper

        def get_batch(store, idx):
            clock.batch_cpu.append(time.process_time())
            return self.saved[3][2](store, idx)

        for mod, name, fn in self.saved[:3]:
            setattr(mod, name, timed({"_train": "train"}.get(name, name), fn))
        st.ChunkStore.get_batch = get_batch
        clock.mark("start")
        return clock

    def __exit__(self, *exc):
        for mod, name, fn in self.saved:
            setattr(mod, name, fn)
        return False


def measure(step: str, atlas: str, work: Path) -> dict:
    """Run ``step`` in a child process; peak RSS (MiB) and CPU seconds from wait4."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", step, "--work", str(work), atlas],
        stdout=subprocess.PIPE,
        env={
            **os.environ,
            "PYTHONWARNINGS": "ignore",
            # every size compiles: peaks comparable whatever ran before
            **({"DFM_COMPILATION_CACHE": "0"} if step in ("pretrain", "embed") else {}),
        },
    )
    stdout = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"step {step} failed ({proc.returncode})")
    extra = json.loads(stdout.decode().strip().splitlines()[-1])
    return {
        "step": step,
        "peak_rss_mib": round(ru.ru_maxrss / 1024, 1),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        **extra,
    }


def median_error(work: Path) -> dict:
    import numpy as np

    ex = np.load(work / "medians_exact.npy")
    ap = np.load(work / "medians_hist.npy")
    ok = np.isfinite(ex)
    rel = np.abs(ap[ok] / ex[ok] - 1)
    return {
        "step": "median_error",
        "genes": int(ok.sum()),
        "rel_err_median": float(np.median(rel)),
        "rel_err_p99": float(np.quantile(rel, 0.99)),
        "rel_err_max": float(rel.max()),
    }


def row_label(row: dict) -> str:
    """A result row's atlas kind: its ``label``, else ``tiled`` or ``generated`` from the path."""
    return row.get("label") or ("tiled" if "tiled" in Path(row["atlas"]).name else "generated")


def table(paths: list[str], label: str | None = None) -> str:
    """Markdown table (steps x cell counts) of peak RSS and CPU seconds from result files.

    ``label`` keeps the rows whose :func:`row_label` is ``label`` (e.g.
    ``generated``); the latest row of a (step, cell count) wins.
    """
    rows = [json.loads(line) for p in paths for line in open(p) if line.strip()]
    if label is not None:
        rows = [r for r in rows if row_label(r) == label]
    cells = sorted({r["n_cells"] for r in rows})
    head = "| step | " + " | ".join(f"{n:,} cells: peak RSS MiB / CPU s" for n in cells) + " |"
    out = [head, "|---|" + "---|" * len(cells)]
    for step in STEPS:
        got = {r["n_cells"]: r for r in rows if r["step"] == step}
        if got:
            vals = [
                f"{got[n]['peak_rss_mib']:,.0f} / {got[n]['cpu_s']:,.1f}" if n in got else "-"
                for n in cells
            ]
            out.append(f"| {step} | " + " | ".join(vals) + " |")
    pre = {r["n_cells"]: r.get("phases", {}) for r in rows if r["step"] == "pretrain"}
    if any(pre.values()):
        for label, fmt in (
            ("pretrain: CPU ms per training step", lambda p: f"{p['cpu_per_step_ms']:,.0f}"),
            (
                "pretrain: CPU s scan / write chunks / train (of which validation)",
                lambda p: (
                    f"{p['scan']['cpu_s']:,.0f} / {p['write_chunks']['cpu_s']:,.0f} / "
                    f"{p['train']['cpu_s']:,.0f} ({p['validation_cpu_s']:,.0f})"
                ),
            ),
            (
                "pretrain: peak RSS MiB after scan / write chunks / train",
                lambda p: (
                    f"{p['scan']['peak_rss_mib']:,.0f} / "
                    f"{p['write_chunks']['peak_rss_mib']:,.0f} / {p['train']['peak_rss_mib']:,.0f}"
                ),
            ),
        ):
            vals = []
            for n in cells:
                try:
                    vals.append(fmt(pre[n]))
                except (KeyError, TypeError):
                    vals.append("-")
            out.append(f"| {label} | " + " | ".join(vals) + " |")
    err = {r["n_cells"]: r for r in rows if r["step"] == "median_error"}
    if err:
        vals = [
            f"{err[n]['rel_err_median']:.2%} / {err[n]['rel_err_p99']:.2%} / "
            f"{err[n]['rel_err_max']:.2%}"
            if n in err
            else "-"
            for n in cells
        ]
        out.append(
            "| histogram medians: relative error median / p99 / max | " + " | ".join(vals) + " |"
        )
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("atlases", nargs="+")
    ap.add_argument("--steps", default=",".join(STEPS))
    ap.add_argument("--work", default=None, help="scratch directory (default: beside the atlas)")
    ap.add_argument("--results", default="benchmarks/results/atlas.jsonl")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--table", action="store_true", help="print the table of the result files")
    ap.add_argument(
        "--label",
        default=None,
        help="label of the result rows (default: 'tiled' or 'generated' from the atlas name); "
        "with --table: show only the rows of this label",
    )
    a = ap.parse_args(argv)
    if a.table:
        print(table(a.atlases, a.label))
        return
    if a.child:
        print(json.dumps(run_step(a.child, a.atlases[0], Path(a.work))))
        return
    import anndata as ad

    for atlas in a.atlases:
        work = Path(a.work or (str(atlas) + ".bench"))
        work.mkdir(parents=True, exist_ok=True)
        shape = ad.read_h5ad(atlas, backed="r").shape
        for step in a.steps.split(","):
            row = {"atlas": str(atlas), "n_cells": shape[0], "n_genes": shape[1]}
            row["label"] = a.label or row_label(row)
            row.update(measure(step, atlas, work))
            print(json.dumps(row), flush=True)
            with open(a.results, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        if {"medians_hist", "medians_exact"} <= set(a.steps.split(",")):
            row = {"atlas": str(atlas), "n_cells": shape[0], **median_error(work)}
            row["label"] = a.label or row_label(row)
            print(json.dumps(row), flush=True)
            with open(a.results, "a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
