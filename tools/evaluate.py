"""Measure recommendation quality offline on a rating log, with the service's own scoring code.

Usage: python -m tools.evaluate --ratings PATH [--format auto|movielens|udata|csv|jsonl]
       [--mode full|budgeted] [--source online|model] [--model-neighbours N] [--compare]
       [--users N] [--seed 42] [--train-fraction 0.75]
       [--top-k 10] [model flags] [budget flags] [--no-progress] [--verbose]

Protocol: each user's interactions are shuffled with one seeded generator, and
round(0.75 n) of them train. For every user with a test item, the top k items
with training items removed are scored against the held-out items: nDCG,
precision, recall and MAP at k, and item coverage. tools/evaluation/ has the
details.

Modes:
- full: the core model of src/recommender.py fitted on the whole training
  split, every training user a neighbour (the unbounded model).
- budgeted: the real request path, service.RecommendationService, on an
  in-memory copy of the training split and within config.Budgets. It also
  reports the items read and DynamoDB calls per request. --source model first
  builds the item-similarity model from the training split, as the model
  builder would, and serves from it.

Progress goes to stderr; stdout ends with one JSON line holding the result.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import tools.evaluation  # noqa: F401  (puts src/ on the path before the imports below)
from config import Budgets
from item_model import DEFAULT_NEIGHBOURS_PER_ITEM, ITEM_MODEL_BASE
from recommender import ModelConfig
from tools.evaluation.data import DatasetError, read_ratings, split_per_user
from tools.evaluation.runner import evaluate_scorer, sample_users
from tools.evaluation.scorers import (
    CoreScorer,
    JaccardScorer,
    PopularScorer,
    Scorer,
    ServedScorer,
    baseline_configs,
)

logger = logging.getLogger(__name__)

DECIMALS = 4
MODES = ("full", "budgeted")
SOURCES = ("online", "model")
# Order of the rows of --compare, the chosen model last.
BASELINES = ("most_popular", "raw_counts", "jaccard", "cosine")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _event_weight(text: str) -> tuple[str, float]:
    interaction_type, separator, weight = text.partition("=")
    if not separator or not interaction_type.strip():
        raise argparse.ArgumentTypeError(f"expected TYPE=WEIGHT such as purchase=3, got {text!r}")
    try:
        return interaction_type.strip(), float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"weight of {interaction_type!r} is not a number: {weight!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    defaults = ModelConfig()
    budgets = Budgets()
    parser = argparse.ArgumentParser(
        prog="python -m tools.evaluate",
        description="Evaluate the recommendation model offline on a MovieLens-style rating log.",
    )
    parser.add_argument(
        "--ratings", required=True, type=Path, help="ratings.csv (with header) or u.data"
    )
    parser.add_argument(
        "--format",
        default="auto",
        choices=("auto", "movielens", "udata", "csv", "jsonl"),
        help="input format (default: detected from the first line)",
    )
    parser.add_argument("--mode", default="full", choices=MODES, help="full (default) or budgeted")
    parser.add_argument(
        "--source",
        default="online",
        choices=SOURCES,
        help="request path of --mode budgeted: online (default) or model (precomputed item model)",
    )
    parser.add_argument(
        "--model-neighbours",
        type=_positive_int,
        default=DEFAULT_NEIGHBOURS_PER_ITEM,
        help="neighbours per item of the model that --source model builds"
        f" (default: {DEFAULT_NEIGHBOURS_PER_ITEM})",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also evaluate most popular, raw counts, Jaccard and cosine on the same split"
        " (full mode only)",
    )
    parser.add_argument(
        "--users",
        type=_positive_int,
        help="evaluate a seeded random sample of this many test users (default: all)",
    )
    parser.add_argument(
        "--seed", type=int, default=42, help="seed of the split and the user sample (default: 42)"
    )
    parser.add_argument(
        "--train-fraction",
        type=float,
        default=0.75,
        help="share of each user's interactions that trains (default: 0.75)",
    )
    parser.add_argument(
        "--top-k", type=_positive_int, default=10, help="length of each ranked list (default: 10)"
    )

    model = parser.add_argument_group("model (defaults: the service's ModelConfig)")
    model.add_argument(
        "--alpha", type=float, default=defaults.alpha, help="exponent of seed item popularity"
    )
    model.add_argument(
        "--beta", type=float, default=defaults.beta, help="exponent of candidate popularity"
    )
    model.add_argument(
        "--user-weight-exponent",
        type=float,
        default=defaults.user_weight_exponent,
        help="exponent q of the 1/|H_u|**q weight of each user",
    )
    model.add_argument(
        "--overlap-exponent",
        type=float,
        default=defaults.overlap_exponent,
        help="exponent p of each user's overlap with the target (1 = item-based)",
    )
    model.add_argument(
        "--neighbours-per-item",
        type=_positive_int,
        default=defaults.neighbours_per_item,
        help="keep this many most similar items per seed (needs --overlap-exponent 1)",
    )
    model.add_argument(
        "--half-life-days",
        type=float,
        default=defaults.half_life_days,
        help="time decay half-life in days",
    )
    model.add_argument(
        "--rating-as-weight", action="store_true", help="multiply each affinity by the rating value"
    )
    model.add_argument(
        "--event-weight",
        type=_event_weight,
        action="append",
        metavar="TYPE=WEIGHT",
        help="weight of one interaction type, repeatable; replaces the default mapping",
    )
    model.add_argument(
        "--default-event-weight",
        type=float,
        default=defaults.default_event_weight,
        help="weight of interaction types without their own weight",
    )

    served = parser.add_argument_group(
        "request budgets of --mode budgeted (defaults: config.Budgets)"
    )
    for name in (field.name for field in dataclasses.fields(Budgets)):
        served.add_argument(
            "--" + name.replace("_", "-"),
            type=_positive_int,
            default=getattr(budgets, name),
            help=f"default: {getattr(budgets, name)}",
        )

    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--verbose", action="store_true", help="log at DEBUG level")
    return parser


def model_config(args: argparse.Namespace) -> ModelConfig:
    """Build the ModelConfig of the flags; raise ValueError naming a bad value."""
    options: dict[str, Any] = {
        "alpha": args.alpha,
        "beta": args.beta,
        "user_weight_exponent": args.user_weight_exponent,
        "overlap_exponent": args.overlap_exponent,
        "neighbours_per_item": args.neighbours_per_item,
        "half_life_days": args.half_life_days,
        "rating_as_weight": args.rating_as_weight,
        "default_event_weight": args.default_event_weight,
    }
    if args.event_weight:
        options["event_weights"] = dict(args.event_weight)
    return ModelConfig(**options)


EXPONENT_FLAGS = ("--alpha", "--beta", "--user-weight-exponent")


def item_model_base(args: argparse.Namespace) -> ModelConfig:
    """Return the exponents of the precomputed model, as the deployed builder uses them.

    The builder has its own defaults (item_model.ITEM_MODEL_BASE); exponents given
    on the command line replace them, as the same environment variables would.
    """
    given = set(getattr(args, "explicit_flags", ()))
    return replace(
        ITEM_MODEL_BASE,
        alpha=args.alpha if "--alpha" in given else ITEM_MODEL_BASE.alpha,
        beta=args.beta if "--beta" in given else ITEM_MODEL_BASE.beta,
        user_weight_exponent=(
            args.user_weight_exponent
            if "--user-weight-exponent" in given
            else ITEM_MODEL_BASE.user_weight_exponent
        ),
    )


def budgets_of(args: argparse.Namespace) -> Budgets:
    budgets = Budgets(
        **{field.name: getattr(args, field.name) for field in dataclasses.fields(Budgets)}
    )
    if budgets.max_seed_items > budgets.max_history_items:
        raise ValueError(
            f"--max-seed-items ({budgets.max_seed_items}) must not exceed"
            f" --max-history-items ({budgets.max_history_items})"
        )
    return budgets


def _rounded(summary: dict[str, Any]) -> dict[str, Any]:
    # Metrics to DECIMALS places; times, which vary far more between runs, to 0.1.
    return {
        key: (round(value, 1) if "seconds" in key or "_ms" in key else round(value, DECIMALS))
        if isinstance(value, float)
        else value
        for key, value in summary.items()
    }


def _table_row(name: str, summary: dict[str, Any], top_k: int) -> str:
    return (
        f"{name:<14} {summary[f'ndcg@{top_k}']:.4f}  {summary[f'precision@{top_k}']:.4f}"
        f"  {summary[f'recall@{top_k}']:.4f}  {summary[f'map@{top_k}']:.4f}"
        f"  {summary['coverage']:.4f}  {summary['seconds']:7.1f}"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation that the parsed flags describe and return the JSON result."""
    started = time.perf_counter()
    config = model_config(args)
    budgets = budgets_of(args) if args.mode == "budgeted" else None
    if args.compare and args.mode != "full":
        raise ValueError(
            "--compare runs the baselines in full mode only; drop --compare or use --mode full"
        )
    if args.source != "online" and args.mode != "budgeted":
        raise ValueError("--source applies to --mode budgeted only; add --mode budgeted")

    log = read_ratings(args.ratings, args.format)
    split = split_per_user(log.histories, seed=args.seed, train_fraction=args.train_fraction)
    catalogue_size = len(log.catalogue())
    test_users = split.test_users()
    if not test_users:
        raise DatasetError(
            f"{args.ratings}: no user has a test item; a user needs at least 3 interactions"
            " to keep one for testing"
        )
    users = sample_users(test_users, args.users, args.seed)
    progress = not args.no_progress
    top_k = args.top_k

    header = (
        f"{'model':<14} nDCG@{top_k:<3} P@{top_k:<5} R@{top_k:<5} MAP@{top_k:<3} cover  seconds"
    )
    print(
        f"{log.path}: {log.interactions} interactions, {len(log.histories)} users,"
        f" {catalogue_size} items;"
        f" {len(users)} of {len(test_users)} test users, mode {args.mode}"
    )
    print(header)

    baselines: dict[str, dict[str, Any]] = {}
    if args.compare:
        for name in BASELINES:
            scorer = _baseline_scorer(name, split)
            baselines[name] = evaluate_scorer(
                scorer, split, users, catalogue_size, top_k, name, progress
            )
            print(_table_row(name, baselines[name], top_k), flush=True)

    scorer: Scorer
    if budgets is None:
        scorer = CoreScorer(split.train, config)
    else:
        model_neighbours = args.model_neighbours if args.source == "model" else None
        scorer = ServedScorer(
            split.train, config, budgets, model_neighbours, item_model_base=item_model_base(args)
        )
    summary = evaluate_scorer(scorer, split, users, catalogue_size, top_k, "model", progress)
    print(_table_row("model", summary, top_k))

    result: dict[str, Any] = _rounded(summary)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["scoring_seconds"] = round(summary["seconds"], 1)
    result["mode"] = args.mode
    result["dataset"] = {
        "name": log_name(Path(log.path)),
        "path": log.path,
        "format": log.file_format,
        "interactions": log.interactions,
        "users": len(log.histories),
        "items": catalogue_size,
        "rows_rejected": log.rows_rejected,
        "duplicates_merged": log.duplicates_merged,
    }
    result["split"] = {"seed": args.seed, "train_fraction": args.train_fraction, "top_k": top_k}
    result["users_evaluated"] = (
        f"all {len(test_users)} test users"
        if len(users) == len(test_users)
        else f"seeded sample of {len(users)} of {len(test_users)} test users (seed {args.seed})"
    )
    result["model"] = dataclasses.asdict(config)
    if isinstance(scorer, ServedScorer):
        result["budgets"] = dataclasses.asdict(scorer.budgets)
        result["budgets"]["max_items_read"] = scorer.budgets.max_items_read()
        result["served"] = _rounded(scorer.totals.summary())
        result["served"]["source"] = args.source
        result["served"]["sources_used"] = dict(scorer.sources)
        if scorer.model_store is not None:
            result["served"]["model_neighbours_per_item"] = args.model_neighbours
    if baselines:
        result["baselines"] = {name: _rounded(values) for name, values in baselines.items()}
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    return result


def _baseline_scorer(name: str, split: Any) -> Scorer:
    if name == "most_popular":
        return PopularScorer(split.train)
    if name == "jaccard":
        return JaccardScorer(split.train)
    return CoreScorer(split.train, baseline_configs()[name])


def log_name(path: Path) -> str:
    """Name a data set after its folder (ml-latest-small/ratings.csv gives ml-latest-small)."""
    return path.resolve().parent.name or path.stem


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    raw_args = sys.argv[1:] if argv is None else list(argv)
    args.explicit_flags = [flag for flag in EXPONENT_FLAGS if any(a == flag or a.startswith(flag + "=") for a in raw_args)]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        result = run(args)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        parser.error(str(error))
    print(json.dumps(result, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
