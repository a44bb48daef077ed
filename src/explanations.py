"""Explanations: which history item contributed most to each recommendation.

Pure Python, like the core. For a recommended item j the contribution of seed
item i is ``affinity_i * sim_ij``; ``sim_ij`` shares the factor ``pop_j ** -beta``
across all seeds, so comparing ``affinity_i * C_ij / pop_i ** alpha`` is enough.
Only the recommended items are visited, so the cost is small next to scoring.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from recommender import CooccurrenceIndex


def strongest_seeds(
    index: CooccurrenceIndex, affinities: Mapping[str, float], recommended: Iterable[str]
) -> dict[str, str]:
    """Map each recommended item to the seed item with the largest contribution.

    Ties go to the smaller seed id. An item that no seed co-occurs with is left out.
    """
    alpha = index.config.alpha
    seed_weight = {
        item_id: affinity / index.popularity(item_id) ** alpha
        for item_id, affinity in affinities.items()
        if affinity > 0 and index.popularity(item_id) > 0
    }

    strongest: dict[str, str] = {}
    for item_id in recommended:
        contributions: dict[str, float] = defaultdict(float)
        for user_id in index.item_users.get(item_id, ()):
            user_weight = index.user_weight[user_id]
            for seed in index.user_items[user_id]:
                if seed in seed_weight and seed != item_id:
                    contributions[seed] += user_weight * seed_weight[seed]
        if contributions:
            strongest[item_id] = min(contributions, key=lambda seed: (-contributions[seed], seed))
    return strongest
