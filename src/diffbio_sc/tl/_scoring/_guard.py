"""The regression guard: save benchmark scores as a JSON baseline, compare new scores with it.

A promotion review that fails closed: no baseline, an empty one, a newer
format, or a metric that is gone all fail rather than pass.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ... import _uns
from ..._logging import logger
from ..._schema import report_of, results_frame
from ..._validate import DfmInputError, check_bool, check_float
from ...io._atomic import atomic_path
from ...io._embeddings import make_parent_dirs

_BASELINE_FORMAT = "diffbio_sc.benchmark_baseline"
_BASELINE_FORMAT_VERSION = 1


class BaselineRegressionError(ValueError):
    """Raised by :func:`compare_to_baseline` with ``raise_on_regression=True``."""


def _json_float(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def save_baseline(results, path: str | os.PathLike, *, name: str = "default") -> Path:
    """Write benchmark scores to a JSON baseline for :func:`compare_to_baseline`.

    Parameters
    ----------
    results
        The DataFrame returned by :func:`benchmark`, a report dict, or an AnnData
        holding the report ``name``.
    path
        JSON file to write (parent folders are created; an existing file is replaced).
    name
        Report name when ``results`` is an AnnData.

    Returns
    -------
    pathlib.Path
        The path written. The file holds ``format``, ``format_version``,
        ``higher_is_better`` (true), ``created_by``, ``versions`` (when the
        report has them) and ``scores`` (a list of ``{embedding, metric, group,
        value, sd}``; NaN is written as null).
    """
    from anndata import AnnData

    path = _output_path(path)
    df = results_frame(results, name=name)
    versions = None
    report = report_of(results, name) if isinstance(results, AnnData) else results
    if isinstance(report, Mapping) and "versions" in report:
        versions = {str(k): str(v) for k, v in report["versions"].items()}
    payload = {
        "format": _BASELINE_FORMAT,
        "format_version": _BASELINE_FORMAT_VERSION,
        "higher_is_better": True,
        "created_by": _uns.provenance("tl.save_baseline"),
        "versions": versions,
        "scores": [
            {
                "embedding": r.embedding,
                "metric": r.metric,
                "group": r.group,
                "value": _json_float(r.value),
                "sd": _json_float(r.sd),
            }
            for r in df.itertuples(index=False)
        ],
    }
    text = json.dumps(payload, indent=2)
    make_parent_dirs(path)
    with atomic_path(path, what="benchmark baseline") as tmp:
        tmp.write_text(text)
    logger.info("wrote benchmark baseline %s (%d scores)", path, len(df))
    return path


def _output_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or Path), got {type(path).__name__}.")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"Cannot write the benchmark baseline {os.fspath(path)!r}: it is a directory. "
            "Pass a file name such as baseline.json."
        )
    return path


def _read_baseline(path: Path) -> pd.DataFrame:
    if path.is_dir():
        raise DfmInputError(
            f"Baseline {os.fspath(path)!r} is a directory; pass the JSON file written by "
            "dfm.tl.save_baseline."
        )
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DfmInputError(
            f"Baseline {os.fspath(path)!r} is not a JSON text file ({type(err).__name__}: "
            f"{err}); pass the file written by dfm.tl.save_baseline."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != _BASELINE_FORMAT:
        raise DfmInputError(
            f"{path} is not a diffbio_sc benchmark baseline (format "
            f"{payload.get('format') if isinstance(payload, dict) else None!r}); write one "
            "with dfm.tl.save_baseline."
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > _BASELINE_FORMAT_VERSION:
        raise DfmInputError(
            f"Baseline {path} has format_version {version!r}; this diffbio_sc reads up to "
            f"{_BASELINE_FORMAT_VERSION}. Upgrade diffbio_sc or rewrite the baseline."
        )
    rows = payload.get("scores") or []
    if not rows:
        # An empty baseline would pass every review: fail closed instead.
        raise DfmInputError(
            f"Baseline {path} holds no scores, so nothing can be compared; rewrite it with "
            "dfm.tl.save_baseline from a non-empty benchmark."
        )
    df = pd.DataFrame(rows, columns=["embedding", "metric", "group", "value", "sd"])
    df["value"] = pd.to_numeric(df["value"]).astype(float)
    _check_unique(df, f"Baseline {path}")
    return df


def _check_unique(df: pd.DataFrame, what: str) -> None:
    dup = df[df.duplicated(["embedding", "metric"])]
    if not dup.empty:
        pairs = ", ".join(
            f"{e}/{m}" for e, m in dup[["embedding", "metric"]].head(5).itertuples(index=False)
        )
        raise DfmInputError(
            f"{what} has several scores for the same embedding and metric ({pairs}); "
            "compare one benchmark (or results with distinct embedding names) at a time."
        )


def compare_to_baseline(
    results,
    baseline_path: str | os.PathLike,
    *,
    tolerance: float = 0.02,
    bootstrap: bool = False,
    name: str = "default",
    raise_on_regression: bool = False,
) -> pd.DataFrame:
    """Compare benchmark scores with a saved baseline and flag what got worse.

    Every metric is "higher is better". A metric is ``'worse'`` when
    ``current < baseline - tolerance`` (absolute difference; all scores lie in
    [0, 1]), ``'improved'`` when ``current > baseline + tolerance``, ``'ok'``
    otherwise. A metric of the baseline that is absent (or NaN) now is
    ``'missing'``; one that is new, or NaN in the baseline, is ``'new'``. The
    review passes only with no ``'worse'`` and no ``'missing'`` metric.

    The review fails closed: without a baseline file it raises
    :class:`FileNotFoundError`, unless ``bootstrap=True`` is passed explicitly, in
    which case the current scores are written as the baseline, every row is
    ``'bootstrapped'`` and the result says so (``attrs['bootstrapped']``). A
    baseline with no scores, of a newer format, or with several scores for one
    embedding and metric is an error rather than a pass.

    Parameters
    ----------
    results
        The DataFrame returned by :func:`benchmark`, a report dict, or an AnnData
        holding the report ``name``.
    baseline_path
        JSON file written by :func:`save_baseline`.
    tolerance
        Largest allowed drop of a metric (absolute, >= 0).
    bootstrap
        Write the baseline when none exists instead of failing.
    name
        Report name when ``results`` is an AnnData.
    raise_on_regression
        Raise a :class:`BaselineRegressionError` when the review fails instead of
        returning the table.

    Returns
    -------
    pandas.DataFrame
        One row per embedding x metric with ``embedding``, ``metric``, ``group``,
        ``baseline``, ``current``, ``delta`` (current - baseline) and ``status``.
        ``attrs`` holds ``passed`` (bool), ``reason`` (str), ``bootstrapped``
        (bool), ``tolerance`` and ``baseline_path``.
    """
    tolerance = check_float("tolerance", tolerance, minimum=0.0)
    bootstrap = check_bool("bootstrap", bootstrap)
    raise_on_regression = check_bool("raise_on_regression", raise_on_regression)
    if not isinstance(baseline_path, (str, os.PathLike)):
        raise TypeError(
            f"baseline_path must be a file path (str or Path), got {type(baseline_path).__name__}."
        )
    current = results_frame(results, name=name)
    _check_unique(current, "The results")
    if current.empty:
        raise DfmInputError("The results hold no scores; nothing to compare.")
    path = Path(baseline_path)
    if not path.exists():
        if not bootstrap:
            raise FileNotFoundError(
                f"No benchmark baseline at {path}: the promotion review fails closed. Pass "
                "bootstrap=True to write the current scores as the first baseline, or point "
                "baseline_path at an existing one."
            )
        save_baseline(results, path, name=name)
        out = current.rename(columns={"value": "current"})[
            ["embedding", "metric", "group", "current"]
        ]
        out.insert(3, "baseline", out["current"])
        out["delta"] = 0.0
        out["status"] = "bootstrapped"
        reason = f"no baseline existed; bootstrapped {path} from the current scores"
        logger.warning("compare_to_baseline: %s", reason)
        out.attrs.update(
            passed=True,
            reason=reason,
            bootstrapped=True,
            tolerance=float(tolerance),
            baseline_path=str(path),
        )
        return out
    base = _read_baseline(path)
    merged = base[["embedding", "metric", "group", "value"]].merge(
        current[["embedding", "metric", "group", "value"]],
        on=["embedding", "metric"],
        how="outer",
        suffixes=("_base", "_cur"),
        indicator=True,
    )
    merged["group"] = merged["group_cur"].fillna(merged["group_base"])
    out = pd.DataFrame(
        {
            "embedding": merged["embedding"],
            "metric": merged["metric"],
            "group": merged["group"],
            "baseline": merged["value_base"].astype(float),
            "current": merged["value_cur"].astype(float),
        }
    )
    out["delta"] = out["current"] - out["baseline"]
    b_ok = np.isfinite(out["baseline"].to_numpy())
    c_ok = np.isfinite(out["current"].to_numpy())
    delta = out["delta"].to_numpy()
    compared = np.where(delta < -tolerance, "worse", np.where(delta > tolerance, "improved", "ok"))
    # A baseline score that is gone or NaN now is a failure (fail closed); a score
    # that was NaN in the baseline and is NaN (or absent) now has nothing to compare.
    status = np.select(
        [b_ok & c_ok, b_ok & ~c_ok, ~b_ok & c_ok],
        [compared, "missing", "new"],
        default="ok",
    )
    out["status"] = status
    out = out.sort_values(["embedding", "metric"], kind="stable").reset_index(drop=True)
    worse = out[out["status"] == "worse"]
    missing = out[out["status"] == "missing"]
    passed = worse.empty and missing.empty
    if passed:
        reason = f"no metric dropped by more than {tolerance} against {path}"
    else:
        parts = []
        if not worse.empty:
            parts.append(
                f"{len(worse)} metric(s) worse by more than {tolerance}: "
                + ", ".join(
                    f"{e}/{m} {b:.3f}->{c:.3f}"
                    for e, m, b, c in worse[
                        ["embedding", "metric", "baseline", "current"]
                    ].itertuples(index=False)
                )
            )
        if not missing.empty:
            parts.append(
                f"{len(missing)} baseline metric(s) missing or NaN now: "
                + ", ".join(
                    f"{e}/{m}" for e, m in missing[["embedding", "metric"]].itertuples(index=False)
                )
            )
        reason = "; ".join(parts)
    out.attrs.update(
        passed=bool(passed),
        reason=reason,
        bootstrapped=False,
        tolerance=float(tolerance),
        baseline_path=str(path),
    )
    if not passed:
        logger.warning("compare_to_baseline failed: %s", reason)
        if raise_on_regression:
            raise BaselineRegressionError(reason)
    return out
