"""The numbers of ``metarl analyze``: how well a model's features separate classes it was not
trained on, how similar two models' layers are, and how much adaptation moves each layer.

Pure functions on tensors; scikit-learn supplies the linear probe and the silhouette score.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from metarl.reports import ERROR_BAR_SCALE


class Estimate(NamedTuple):
    """A mean over episodes and its 95% interval half-width ``1.96 σ / √n``."""

    mean: float
    ci95: float


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear centred kernel alignment between two representations of the same ``n`` inputs,
    ``x (n, p)`` and ``y (n, q)`` (Kornblith et al. 2019, "Similarity of Neural Network
    Representations Revisited", Eq. 5):

    ``CKA = ‖Yᵀ X‖_F² / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F)`` on column-centred ``X, Y``.

    1 for a representation with itself (or any rotation and scaling of it), near 0 for
    unrelated ones.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same inputs: {x.shape[0]} and {y.shape[0]} rows")
    x = x.double().flatten(1)
    y = y.double().flatten(1)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    cross = (y.T @ x).square().sum()
    return float(cross / ((x.T @ x).norm() * (y.T @ y).norm()).clamp_min(1e-300))


def nearest_centroid_accuracy(
    features: Tensor,
    labels: Tensor,
    n_way: int,
    k_shot: int,
    n_query: int,
    episodes: int,
    generator: torch.Generator,
) -> Estimate:
    """Few-shot accuracy of ``features (M, d)`` without any training: in each N-way K-shot
    episode drawn from the labels present, a query is given the class of the nearest support
    centroid (Euclidean; prototypical networks' rule, Snell et al. 2017)."""
    classes = labels.unique()
    if len(classes) < n_way:
        raise ValueError(
            f"{n_way}-way episodes need {n_way} classes; the features have {len(classes)}"
        )
    by_class = [torch.nonzero(labels == c).flatten() for c in classes]
    scores = []
    for _ in range(episodes):
        chosen = torch.randperm(len(classes), generator=generator)[:n_way]
        support, query = [], []
        for c in chosen:
            pool = by_class[int(c)]
            pick = pool[torch.randperm(len(pool), generator=generator)[: k_shot + n_query]]
            support.append(features[pick[:k_shot]])
            query.append(features[pick[k_shot:]])
        centroids = torch.stack([s.mean(dim=0) for s in support])  # (N, d)
        queries = torch.cat(query)  # (N·Q, d)
        truth = torch.arange(n_way).repeat_interleave(n_query)
        predicted = torch.cdist(queries, centroids).argmin(dim=1)
        scores.append(float((predicted == truth).float().mean()))
    values = torch.tensor(scores)
    half_width = ERROR_BAR_SCALE["ci95"] * float(values.std()) / math.sqrt(len(values))
    return Estimate(float(values.mean()), half_width)


def linear_probe_accuracy(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor
) -> float:
    """Test accuracy of a logistic regression fitted on standardised training features (the
    representation is kept fixed; scikit-learn's L-BFGS, C = 1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train_features.double().numpy(), train_labels.numpy())
    return float(probe.score(test_features.double().numpy(), test_labels.numpy()))


def silhouette(points: Tensor, labels: Tensor) -> float:
    """Mean silhouette of ``points (n, d)`` grouped by ``labels``: ``(b − a) / max(a, b)`` per
    point, ``a`` its mean distance within its class and ``b`` to the nearest other class
    (Rousseeuw 1987); 1 is perfectly separated clusters, 0 overlapping."""
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(points.double().numpy(), labels.numpy()))


def relative_change(before: dict[str, Tensor], after: dict[str, Tensor]) -> dict[str, float]:
    """``‖θ'_l − θ_l‖ / ‖θ_l‖`` per parameter tensor, averaged over tasks: ``after`` has a
    leading task dimension, ``before`` none."""
    return {
        name: float(
            (
                (after[name] - before[name]).flatten(1).norm(dim=1)
                / before[name].norm().clamp_min(1e-30)
            ).mean()
        )
        for name in before
    }
