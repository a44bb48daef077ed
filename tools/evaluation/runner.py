"""Evaluation loop: ask a scorer for each test user's top k and average the metrics."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence

from tqdm import tqdm

from tools.evaluation.data import Split
from tools.evaluation.metrics import MetricTotals
from tools.evaluation.scorers import Scorer

logger = logging.getLogger(__name__)


def sample_users(users: Sequence[str], size: int | None, seed: int) -> list[str]:
    """Return `size` users drawn by `random.Random(seed)`, in their original order (all if None)."""
    if size is None or size >= len(users):
        return list(users)
    if size < 1:
        raise ValueError(f"sample size must be at least 1, got {size!r}")
    chosen = set(random.Random(seed).sample(list(users), size))
    return [user_id for user_id in users if user_id in chosen]


def evaluate_scorer(
    scorer: Scorer,
    split: Split,
    users: Sequence[str],
    catalogue_size: int,
    top_k: int,
    label: str,
    progress: bool = True,
) -> dict[str, float | int]:
    """Rank `top_k` items for each of `users` and return the mean metrics and the wall time.

    Every user must have test items. The wall time includes nothing but the
    recommendations of this loop.
    """
    totals = MetricTotals(k=top_k)
    started = time.perf_counter()
    for user_id in tqdm(users, desc=label, unit="user", disable=not progress, leave=False):
        ranked = scorer.recommend(user_id, split.train[user_id], top_k)
        totals.add(ranked, split.test[user_id])
    seconds = time.perf_counter() - started
    summary = totals.summary(catalogue_size)
    summary["seconds"] = seconds
    logger.info(
        "%s: %d users in %.1f s, nDCG@%d %.4f",
        label,
        totals.users,
        seconds,
        top_k,
        summary[f"ndcg@{top_k}"],
    )
    return summary
