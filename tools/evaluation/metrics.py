"""Top-k ranking metrics with binary relevance, as the evaluation protocol defines them.

For one user with ranked list R (at most k items) and test items T:

- precision@k = hits / k (k, not len(R): a short list counts its empty slots as misses)
- recall@k = hits / |T|
- nDCG@k = DCG / IDCG, DCG = sum over hits at 1-based rank r of 1 / log2(r + 1),
  IDCG = the DCG of min(|T|, k) hits at ranks 1, 2, ...
- MAP@k = sum over hits of (hits within the first r items / r), divided by |T|
- item coverage = distinct items recommended to any user / items in the catalogue
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

METRIC_NAMES = ("ndcg", "precision", "recall", "map")


@dataclass(frozen=True)
class UserMetrics:
    ndcg: float
    precision: float
    recall: float
    average_precision: float


def user_metrics(ranked: Sequence[str], relevant: Collection[str], k: int) -> UserMetrics:
    """Compute the metrics of one user's ranked list against their test items.

    Only the first `k` items of `ranked` count. `relevant` must not be empty.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k!r}")
    if not relevant:
        raise ValueError("relevant is empty: users without test items are not evaluated")

    hits = 0
    dcg = 0.0
    precision_sum = 0.0
    for rank, item_id in enumerate(ranked[:k], start=1):
        if item_id in relevant:
            hits += 1
            dcg += 1.0 / math.log2(rank + 1)
            precision_sum += hits / rank
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return UserMetrics(
        ndcg=dcg / ideal,
        precision=hits / k,
        recall=hits / len(relevant),
        average_precision=precision_sum / len(relevant),
    )


@dataclass
class MetricTotals:
    """Running sums of per-user metrics and the set of recommended items."""

    k: int
    users: int = 0
    ndcg: float = 0.0
    precision: float = 0.0
    recall: float = 0.0
    average_precision: float = 0.0
    recommended_items: set[str] = field(default_factory=set)

    def add(self, ranked: Sequence[str], relevant: Collection[str]) -> None:
        metrics = user_metrics(ranked, relevant, self.k)
        self.users += 1
        self.ndcg += metrics.ndcg
        self.precision += metrics.precision
        self.recall += metrics.recall
        self.average_precision += metrics.average_precision
        self.recommended_items.update(ranked[: self.k])

    def summary(self, catalogue_size: int) -> dict[str, float | int]:
        """Return the means over users and the item coverage, keyed as in the JSON output."""
        if self.users == 0:
            raise ValueError("no user was evaluated: every user lacks test items")
        if catalogue_size < 1:
            raise ValueError(f"catalogue_size must be at least 1, got {catalogue_size!r}")
        k = self.k
        return {
            f"ndcg@{k}": self.ndcg / self.users,
            f"precision@{k}": self.precision / self.users,
            f"recall@{k}": self.recall / self.users,
            f"map@{k}": self.average_precision / self.users,
            "coverage": len(self.recommended_items) / catalogue_size,
            "users": self.users,
        }
