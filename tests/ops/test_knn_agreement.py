"""ops._knn_agreement: neighbour sets and their agreement, against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from diffbio_sc.ops._knn_agreement import knn_agreement, knn_indices


def test_knn_indices_on_a_line():
    X = np.array([[0.0], [1.0], [3.0], [7.0]])
    # neighbours by distance, self excluded, ties (none here) by index
    assert knn_indices(X, 2).tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    assert knn_indices(X, 10).shape == (4, 3)  # at most n - 1
    assert knn_indices(X[:1], 3).shape == (1, 0)


def test_knn_agreement_hand_computed_and_invariances():
    a = np.array([[1, 2], [0, 2], [1, 0], [2, 1]])
    b = np.array([[2, 1], [0, 3], [3, 0], [2, 1]])
    # row 0: both shared; row 1: {0}; row 2: {0}; row 3: both -> (1 + .5 + .5 + 1) / 4
    assert knn_agreement(a, b) == pytest.approx(0.75)
    assert knn_agreement(a, a) == 1.0
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    R = np.linalg.qr(rng.normal(size=(5, 5)))[0]
    # rotation, scaling and translation keep every Euclidean neighbour
    assert knn_agreement(knn_indices(X, 5), knn_indices(3 * X @ R + 1.0, 5)) == 1.0
    # unrelated embeddings share about k / (n - 1) of the neighbours
    far = knn_agreement(knn_indices(X, 5), knn_indices(rng.normal(size=(60, 5)), 5))
    assert far < 0.3
    with pytest.raises(ValueError, match="differ in shape"):
        knn_agreement(a, b[:, :1])
