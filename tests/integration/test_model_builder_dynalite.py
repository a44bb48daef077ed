"""The model builder against dynalite: load a generated log, build with the CLI, read the model back."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from interaction_store import ReadStats
from item_model import InteractionRecord, ItemModel, build_item_model, similarity_config
from model_builder import BuilderSettings, build_model
from model_store import ModelStore
from tools.generate_interactions import GeneratorSettings, write_csv
from tools.interaction_formats import ParsedRow, read_csv
from tools.loader import load_file
from tools.template_table import create_model_table

if TYPE_CHECKING:
    from conftest import LocalTable

REPO_ROOT = Path(__file__).resolve().parents[2]
NEIGHBOURS = 10


@pytest.fixture(scope="module")
def generated_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "interactions.csv"
    write_csv(GeneratorSettings(interactions=1500, items=120, median_history=8, seed=7), path)
    return path


@pytest.fixture(scope="module")
def loaded_table(local_table: LocalTable, generated_log: Path) -> LocalTable:
    report = load_file(generated_log, local_table.name, client=local_table.client, progress=False)
    assert report.rows_written == 1500
    return local_table


@pytest.fixture
def model_table(local_table: LocalTable) -> Iterator[str]:
    name = f"models-{uuid.uuid4().hex[:8]}"
    create_model_table(local_table.client, name)
    yield name
    local_table.client.delete_table(TableName=name)


def expected_model(path: Path) -> ItemModel:
    with path.open(encoding="utf-8") as stream:
        rows = [row.interaction for row in read_csv(stream) if isinstance(row, ParsedRow)]
    log = [
        InteractionRecord(row.user_id, row.item_id, row.interaction_type, row.timestamp)
        for row in rows
    ]
    return build_item_model(log, similarity_config(NEIGHBOURS))


def run_cli(table: LocalTable, model_table: str) -> dict[str, object]:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.build_model",
            "--endpoint-url",
            table.endpoint_url,
            "--table",
            table.name,
            "--model-table",
            model_table,
            "--neighbours",
            str(NEIGHBOURS),
            "--segments",
            "3",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    summary: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return summary


def test_cli_build_read_back(
    loaded_table: LocalTable, model_table: str, generated_log: Path
) -> None:
    expected = expected_model(generated_log)

    summary = run_cli(loaded_table, model_table)

    assert summary["published"] is True
    assert summary["interactions"] == 1500
    assert summary["items"] == len(expected.item_ids)
    with ThreadPoolExecutor(max_workers=4) as executor:
        store = ModelStore(loaded_table.client, model_table, executor, cache_seconds=0)
        stats = ReadStats()
        pointer = store.current_version(stats)
        assert pointer is not None
        lists = store.neighbour_lists(pointer.version, expected.item_ids + ["not-an-item"], stats)
        popular = store.popular_items(pointer.version, stats)
    assert pointer.version == summary["version"]
    assert set(lists) == set(expected.item_ids)
    for item_id in expected.item_ids:
        assert lists[item_id] == expected.neighbours(item_id), item_id
    assert popular == expected.most_popular()
    assert stats.batch_get_calls >= 2  # more than 100 items


def test_model_table_on_dynalite(local_table: LocalTable, model_table: str) -> None:
    description = local_table.client.describe_table(TableName=model_table)["Table"]
    ttl = local_table.client.describe_time_to_live(TableName=model_table)

    assert description["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    # dynalite 4.0.0 has no UpdateTimeToLive, so create_model_table skipped it.
    assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] == "DISABLED"


def test_second_build_flips_current(loaded_table: LocalTable, model_table: str) -> None:
    settings = BuilderSettings(
        table_name=loaded_table.name,
        model_table_name=model_table,
        neighbours_per_item=NEIGHBOURS,
        model=similarity_config(NEIGHBOURS),
    )
    first = build_model(loaded_table.client, settings)

    second = build_model(loaded_table.client, settings)

    with ThreadPoolExecutor(max_workers=2) as executor:
        store = ModelStore(loaded_table.client, model_table, executor, cache_seconds=0)
        pointer = store.current_version(ReadStats())
        old_popular = store.popular_items(str(first["version"]), ReadStats())
    assert pointer is not None
    assert pointer.version == second["version"]
    assert old_popular  # the previous version stays readable until its TTL
