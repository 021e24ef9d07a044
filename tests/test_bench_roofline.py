"""The roofline benchmark's FLOP count (bench_checkpoints prints achieved GFLOP per CPU-s with it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_roofline.py"


@pytest.fixture(scope="module")
def br():
    if not _PATH.is_file():
        pytest.skip(f"{_PATH} not found (benchmarks/ is not shipped with the package)")
    spec = importlib.util.spec_from_file_location("bench_roofline", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_forward_flops_by_hand(br):
    # two cells of 2 and 3 tokens, d = 4, intermediate 8, 2 layers:
    # dense per token 2 * (4 * 16 + 2 * 4 * 8) = 256; attention per cell 4 * T^2 * 4 = 16 T^2
    f = br.forward_flops([2, 3], d=4, inter=8, layers=2)
    assert f["dense"] == 2 * 256 * (2 + 3)
    assert f["attention"] == 2 * 16 * (4 + 9)
    assert f["total"] == f["dense"] + f["attention"]


def test_forward_flops_geneformer_v2_layer(br):
    # one V2-104M layer at 2,048 tokens: dense 2 * 2048 * (4 * 768^2 + 2 * 768 * 3072),
    # attention 4 * 2048^2 * 768 (QK^T and PV over 12 heads of 64)
    f = br.forward_flops([2048], d=768, inter=3072, layers=1)
    assert f["dense"] == pytest.approx(28.99e9, rel=1e-3)
    assert f["attention"] == pytest.approx(12.885e9, rel=1e-3)
