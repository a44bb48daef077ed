"""src/model_store.py on moto: versioned writes, the CURRENT flip, batch reads, retries and the Scan.

The model and interactions tables are created from template.yaml. Faults that
moto cannot produce (unprocessed keys, throttling, call order) come from a
proxy around the moto client that changes chosen calls.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from interaction_store import ReadStats, StoreError, StoreUnavailableError
from item_model import InteractionRecord, ItemModel, build_item_model, similarity_config
from model_store import (
    CURRENT_KEY,
    ModelStore,
    ModelWriter,
    RetryPolicy,
    StaleVersionError,
    TokenBucket,
    item_key,
    meta_key,
    new_version_id,
    popular_key,
    scan_interactions,
)
from tools.template_table import (
    DEFAULT_MODEL_TABLE_NAME,
    create_model_table,
    create_table,
    function_settings,
    model_table_create_kwargs,
)

MODEL_TABLE = "ModelTableTest"
INTERACTIONS_TABLE = "InteractionsTest"
EXPIRES_AT = 1_900_000_000
NO_WAIT = RetryPolicy(max_attempts=4, base_delay_seconds=0.0, max_delay_seconds=0.0)


class ClientProxy:
    """Forwards every call to a boto3 client; `hooks[name](real_method, **kwargs)` replaces one."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.hooks: dict[str, Callable[..., dict[str, Any]]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method) or name.startswith("_"):
            return method

        def call(**kwargs: Any) -> Any:
            with self._lock:
                self.calls.append((name, kwargs))
            hook = self.hooks.get(name)
            return hook(method, **kwargs) if hook else method(**kwargs)

        return call

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def client_error(code: str, operation: str = "BatchGetItem") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"simulated {code}"}}, operation)


@pytest.fixture(scope="module")
def moto_client() -> Iterator[Any]:
    """One moto backend for the module: starting moto and creating tables costs about 1 s."""
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_model_table(client, MODEL_TABLE)
        create_table(client, INTERACTIONS_TABLE)
        yield client


@pytest.fixture
def dynamodb(moto_client: Any) -> Iterator[Any]:
    """The module's moto client, with both tables emptied after each test."""
    yield moto_client
    for table, key_names in ((MODEL_TABLE, ["pk"]), (INTERACTIONS_TABLE, ["user_id", "item_id"])):
        keys = [
            {name: item[name] for name in key_names}
            for page in moto_client.get_paginator("scan").paginate(TableName=table)
            for item in page["Items"]
        ]
        for start in range(0, len(keys), 25):
            requests = [{"DeleteRequest": {"Key": key}} for key in keys[start : start + 25]]
            moto_client.batch_write_item(RequestItems={table: requests})


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


def small_log(
    seed: int, users: int = 30, items: int = 250, rows: int = 900
) -> list[InteractionRecord]:
    rng = random.Random(seed)
    return [
        InteractionRecord(f"u{rng.randrange(users)}", f"item-{rng.randrange(items):04d}")
        for _ in range(rows)
    ]


def small_model(seed: int = 1, **kwargs: int) -> ItemModel:
    return build_item_model(small_log(seed, **kwargs), similarity_config(8))


def write(
    client: Any,
    version: str,
    model: ItemModel,
    *,
    publish: bool = True,
    writer: ModelWriter | None = None,
) -> None:
    writer = writer or ModelWriter(client, MODEL_TABLE, sleep=lambda _: None)
    writer.write_version(
        version, model.items(), model.most_popular(), {"items": len(model.item_ids)}, EXPIRES_AT
    )
    if publish:
        writer.publish(version, "2025-01-01T00:00:00+00:00", EXPIRES_AT)


def reader(client: Any, executor: ThreadPoolExecutor, **kwargs: Any) -> ModelStore:
    options: dict[str, Any] = {"cache_seconds": 0, "retry": NO_WAIT, "sleep": lambda _: None}
    options.update(kwargs)
    return ModelStore(client, MODEL_TABLE, executor, **options)


# --------------------------------------------------------------------------- writing


def test_version_ids_sort_by_time() -> None:
    start = datetime(2025, 1, 31, 12, 0, 0, tzinfo=UTC)
    times = [start + timedelta(milliseconds=step) for step in (0, 1, 999, 1000, 86_400_000)]

    versions = [new_version_id(moment) for moment in times]

    assert versions == sorted(versions)
    assert re.fullmatch(r"20250131T120000000Z-[0-9a-f]{6}", versions[0])
    assert len({new_version_id(start) for _ in range(50)}) == 50


def test_version_written_and_read_back(dynamodb: Any, executor: ThreadPoolExecutor) -> None:
    model = small_model()
    write(dynamodb, "20250101T000000Z-aaaaaa", model)
    store = reader(dynamodb, executor)
    stats = ReadStats()

    pointer = store.current_version(stats)
    assert pointer is not None
    lists = store.neighbour_lists(pointer.version, model.item_ids, stats)

    assert pointer.version == "20250101T000000Z-aaaaaa"
    assert pointer.model_expires_at == EXPIRES_AT
    assert set(lists) == set(model.item_ids)
    for item_id in model.item_ids:
        assert lists[item_id] == model.neighbours(item_id), item_id
    assert store.popular_items(pointer.version, stats) == model.most_popular()
    assert store.similar_items(pointer.version, model.item_ids[0], stats) == model.neighbours(
        model.item_ids[0]
    )
    assert store.version_meta(pointer.version, stats) == {
        "items": float(len(model.item_ids)),
        "expires_at": float(EXPIRES_AT),
    }


def test_every_versioned_item_expires(dynamodb: Any) -> None:
    model = small_model(items=40)
    write(dynamodb, "20250101T000000Z-aaaaaa", model)

    items = dynamodb.scan(TableName=MODEL_TABLE)["Items"]
    by_key = {item["pk"]["S"]: item for item in items}

    assert len(items) == len(model.item_ids) + 3  # items, popular, meta, CURRENT
    for key, item in by_key.items():
        if key == CURRENT_KEY:
            assert "expires_at" not in item
        else:
            assert item["expires_at"] == {"N": str(EXPIRES_AT)}, key
    assert popular_key("20250101T000000Z-aaaaaa") in by_key
    assert meta_key("20250101T000000Z-aaaaaa") in by_key
    assert by_key[item_key("20250101T000000Z-aaaaaa", model.item_ids[0])]["popularity"] == {
        "N": str(model.popularity(model.item_ids[0]))
    }


def test_model_table_has_ttl_from_template(dynamodb: Any) -> None:
    description = dynamodb.describe_time_to_live(TableName=MODEL_TABLE)["TimeToLiveDescription"]

    assert description["TimeToLiveStatus"] == "ENABLED"
    assert description["AttributeName"] == "expires_at"


def test_model_table_kwargs_from_template() -> None:
    kwargs = model_table_create_kwargs()

    assert kwargs["TableName"] == DEFAULT_MODEL_TABLE_NAME
    assert kwargs["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert kwargs["BillingMode"] == "PAY_PER_REQUEST"
    assert "TimeToLiveSpecification" not in kwargs  # applied by UpdateTimeToLive instead
    assert model_table_create_kwargs(table_name="Other")["TableName"] == "Other"


def test_function_env_names_model_table() -> None:
    without = function_settings(table_name="T").environment
    with_name = function_settings(table_name="T", model_table_name="M").environment

    assert "MODEL_TABLE_NAME" not in without
    assert with_name["MODEL_TABLE_NAME"] == "M"
    assert with_name["TABLE_NAME"] == "T"


def test_current_written_after_every_batch(dynamodb: Any) -> None:
    proxy = ClientProxy(dynamodb)
    model = small_model(items=120)

    write(
        proxy,
        "20250101T000000Z-aaaaaa",
        model,
        writer=ModelWriter(proxy, MODEL_TABLE, concurrency=3),
    )

    names = proxy.names()
    assert names.count("batch_write_item") == -(-(len(model.item_ids) + 2) // 25)
    assert names[-1] == "put_item"
    assert names.count("put_item") == 1
    assert all(
        len(kwargs["RequestItems"][MODEL_TABLE]) <= 25
        for name, kwargs in proxy.calls
        if name == "batch_write_item"
    )


def test_failed_write_leaves_current(dynamodb: Any, executor: ThreadPoolExecutor) -> None:
    write(dynamodb, "20250101T000000Z-aaaaaa", small_model(1))
    proxy = ClientProxy(dynamodb)
    calls = 0

    def fail_third(method: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise client_error("ValidationException", "BatchWriteItem")
        return method(**kwargs)

    proxy.hooks["batch_write_item"] = fail_third

    with pytest.raises(StoreError, match="ValidationException"):
        write(
            proxy,
            "20250102T000000Z-bbbbbb",
            small_model(2),
            writer=ModelWriter(proxy, MODEL_TABLE, concurrency=1),
        )

    assert "put_item" not in proxy.names()
    pointer = reader(dynamodb, executor).current_version(ReadStats())
    assert pointer is not None
    assert pointer.version == "20250101T000000Z-aaaaaa"


def test_readers_see_old_version_until_flip(dynamodb: Any, executor: ThreadPoolExecutor) -> None:
    old, new = small_model(1), small_model(2)
    write(dynamodb, "20250101T000000Z-aaaaaa", old)
    store = reader(dynamodb, executor)
    writer = ModelWriter(dynamodb, MODEL_TABLE)

    write(dynamodb, "20250102T000000Z-bbbbbb", new, publish=False)
    before = store.current_version(ReadStats())
    writer.publish("20250102T000000Z-bbbbbb", "2025-01-02T00:00:00+00:00", EXPIRES_AT)
    after = store.current_version(ReadStats())

    assert before is not None
    assert after is not None
    assert before.version == "20250101T000000Z-aaaaaa"
    assert after.version == "20250102T000000Z-bbbbbb"
    item_id = old.item_ids[0]
    assert old.neighbours(item_id) != new.neighbours(item_id)  # the test needs differing rows
    old_lists = store.neighbour_lists(before.version, [item_id], ReadStats())
    new_lists = store.neighbour_lists(after.version, [item_id], ReadStats())
    assert old_lists[item_id] == old.neighbours(item_id)
    assert new_lists[item_id] == new.neighbours(item_id)


def test_older_version_not_published(dynamodb: Any, executor: ThreadPoolExecutor) -> None:
    write(dynamodb, "20250102T000000Z-bbbbbb", small_model(2))
    writer = ModelWriter(dynamodb, MODEL_TABLE)

    with pytest.raises(StaleVersionError, match="20250101T000000Z-aaaaaa"):
        writer.publish("20250101T000000Z-aaaaaa", "2025-01-01T00:00:00+00:00", EXPIRES_AT)

    pointer = reader(dynamodb, executor).current_version(ReadStats())
    assert pointer is not None
    assert pointer.version == "20250102T000000Z-bbbbbb"


def unprocess_half(method: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """BatchWriteItem hook: write the first half of the batch, return the rest unprocessed."""
    ((table, requests),) = kwargs["RequestItems"].items()
    if len(requests) < 2:
        return method(**kwargs)
    half = len(requests) // 2
    response = method(**{**kwargs, "RequestItems": {table: requests[:half]}})
    response["UnprocessedItems"] = {table: requests[half:]}
    return response


def test_unprocessed_items_retried(dynamodb: Any, executor: ThreadPoolExecutor) -> None:
    proxy = ClientProxy(dynamodb)
    proxy.hooks["batch_write_item"] = unprocess_half
    model = small_model(items=60)
    writer = ModelWriter(proxy, MODEL_TABLE, retry=RetryPolicy(10, 0.0, 0.0), sleep=lambda _: None)

    stats = writer.write_version(
        "20250101T000000Z-aaaaaa", model.items(), model.most_popular(), {}, EXPIRES_AT
    )

    assert stats.items_written == len(model.item_ids) + 2
    assert stats.unprocessed_retries > 0
    stored = dynamodb.scan(TableName=MODEL_TABLE, Select="COUNT")["Count"]
    assert stored == len(model.item_ids) + 2


def test_unprocessed_items_left_raise(dynamodb: Any) -> None:
    proxy = ClientProxy(dynamodb)

    def never(method: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        return {"UnprocessedItems": kwargs["RequestItems"]}

    proxy.hooks["batch_write_item"] = never
    sleeps: list[float] = []
    writer = ModelWriter(proxy, MODEL_TABLE, retry=RetryPolicy(3, 0.01, 0.02), sleep=sleeps.append)
    model = small_model(items=10)

    with pytest.raises(StoreUnavailableError, match="after 3 BatchWriteItem attempts"):
        writer.write_version("20250101T000000Z-aaaaaa", model.items(), [], {}, EXPIRES_AT)

    assert len(sleeps) == 2
    assert all(0 <= delay <= 0.02 for delay in sleeps)


# --------------------------------------------------------------------------- reading


def test_batch_get_split_into_100_keys(dynamodb: Any, executor: ThreadPoolExecutor) -> None:
    model = small_model(users=60, items=400, rows=3000)
    write(dynamodb, "20250101T000000Z-aaaaaa", model)
    proxy = ClientProxy(dynamodb)
    wanted = model.item_ids[:230] + ["missing-1", "missing-2"] + model.item_ids[:5]  # repeats too
    stats = ReadStats()

    lists = reader(proxy, executor).neighbour_lists("20250101T000000Z-aaaaaa", wanted, stats)

    sizes = sorted(
        len(kwargs["RequestItems"][MODEL_TABLE]["Keys"])
        for name, kwargs in proxy.calls
        if name == "batch_get_item"
    )
    assert sizes == [32, 100, 100]
    assert set(lists) == set(model.item_ids[:230])
    assert "missing-1" not in lists
    assert stats.batch_get_calls == 3
    assert stats.items_read == 230
    assert stats.consumed_capacity > 0


def test_unprocessed_keys_retried(dynamodb: Any, executor: ThreadPoolExecutor) -> None:
    model = small_model()
    write(dynamodb, "20250101T000000Z-aaaaaa", model)
    proxy = ClientProxy(dynamodb)

    def unprocess_some(method: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        ((table, request),) = kwargs["RequestItems"].items()
        keys = request["Keys"]
        if len(keys) < 3:
            return method(**kwargs)
        kept, left = keys[: len(keys) // 3], keys[len(keys) // 3 :]
        response = method(**{**kwargs, "RequestItems": {table: {**request, "Keys": kept}}})
        response["UnprocessedKeys"] = {table: {**request, "Keys": left}}
        return response

    proxy.hooks["batch_get_item"] = unprocess_some
    sleeps: list[float] = []
    store = reader(proxy, executor, retry=RetryPolicy(10, 0.001, 0.002), sleep=sleeps.append)
    stats = ReadStats()

    lists = store.neighbour_lists("20250101T000000Z-aaaaaa", model.item_ids[:60], stats)

    assert set(lists) == set(model.item_ids[:60])
    assert lists[model.item_ids[0]] == model.neighbours(model.item_ids[0])
    assert len(sleeps) >= 3
    assert stats.batch_get_calls == len(sleeps) + 1
    assert stats.items_read == 60


def test_unprocessed_keys_left_raise(dynamodb: Any, executor: ThreadPoolExecutor) -> None:
    proxy = ClientProxy(dynamodb)

    def never(method: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        return {"Responses": {}, "UnprocessedKeys": kwargs["RequestItems"]}

    proxy.hooks["batch_get_item"] = never

    with pytest.raises(StoreUnavailableError, match="stayed unprocessed after 4"):
        reader(proxy, executor).neighbour_lists("v", ["a", "b"], ReadStats())


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        ("ProvisionedThroughputExceededException", StoreUnavailableError),
        ("ThrottlingException", StoreUnavailableError),
        ("AccessDeniedException", StoreError),
    ],
)
def test_client_errors_translated(
    dynamodb: Any, executor: ThreadPoolExecutor, code: str, error_class: type[StoreError]
) -> None:
    proxy = ClientProxy(dynamodb)

    def fail(method: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        raise client_error(code)

    proxy.hooks["batch_get_item"] = fail
    proxy.hooks["get_item"] = fail
    store = reader(proxy, executor)

    with pytest.raises(error_class) as batch_error:
        store.neighbour_lists("v", ["a"], ReadStats())
    with pytest.raises(error_class) as get_error:
        store.current_version(ReadStats())

    assert batch_error.value.error_code == code
    assert get_error.value.error_code == code
    assert type(batch_error.value) is error_class


def test_missing_table_named(dynamodb: Any, executor: ThreadPoolExecutor) -> None:
    store = ModelStore(dynamodb, "NoSuchModels", executor, cache_seconds=0)

    with pytest.raises(StoreError, match="NoSuchModels") as error:
        store.current_version(ReadStats())

    assert not isinstance(error.value, StoreUnavailableError)


def test_no_current_version(dynamodb: Any, executor: ThreadPoolExecutor) -> None:
    assert reader(dynamodb, executor).current_version(ReadStats()) is None


def test_absent_item_and_version(dynamodb: Any, executor: ThreadPoolExecutor) -> None:
    write(dynamodb, "20250101T000000Z-aaaaaa", small_model())
    store = reader(dynamodb, executor)

    assert store.similar_items("20250101T000000Z-aaaaaa", "no-such-item", ReadStats()) is None
    assert store.popular_items("19990101T000000Z-000000", ReadStats()) == []
    assert store.version_meta("19990101T000000Z-000000", ReadStats()) is None
    assert store.neighbour_lists("20250101T000000Z-aaaaaa", [], ReadStats()) == {}


def test_corrupt_neighbours_raise_store_error(dynamodb: Any, executor: ThreadPoolExecutor) -> None:
    dynamodb.put_item(
        TableName=MODEL_TABLE,
        Item={"pk": {"S": item_key("v1", "bad")}, "neighbours": {"S": "{not json"}},
    )

    with pytest.raises(StoreError, match="'bad' has an invalid neighbours attribute"):
        reader(dynamodb, executor).neighbour_lists("v1", ["bad"], ReadStats())


def test_current_cached_for_cache_seconds(dynamodb: Any, executor: ThreadPoolExecutor) -> None:
    write(dynamodb, "20250101T000000Z-aaaaaa", small_model(1))
    now = [1000.0]
    store = reader(dynamodb, executor, cache_seconds=60, clock=lambda: now[0])
    stats = ReadStats()

    first = store.current_version(stats)
    ModelWriter(dynamodb, MODEL_TABLE).publish("20250102T000000Z-bbbbbb", "b", EXPIRES_AT)
    now[0] += 59
    cached = store.current_version(stats)
    now[0] += 2
    fresh = store.current_version(stats)

    assert first is not None
    assert cached is not None
    assert fresh is not None
    assert cached.version == "20250101T000000Z-aaaaaa"
    assert fresh.version == "20250102T000000Z-bbbbbb"
    assert stats.query_calls == 2  # one GetItem per refresh, none for the cached result


# --------------------------------------------------------------------------- Scan


def put_interactions(client: Any, count: int) -> set[tuple[str, str]]:
    keys = set()
    for start in range(0, count, 25):
        requests = []
        for row in range(start, min(start + 25, count)):
            user, item = f"u{row % 37}", f"i{row:05d}"
            keys.add((user, item))
            attributes = {
                "user_id": {"S": user},
                "item_id": {"S": item},
                "interaction_type": {"S": "view"},
                "timestamp": {"N": str(1_700_000_000 + row)},
            }
            if row % 5 == 0:
                attributes["weight"] = {"N": "4.5"}
            requests.append({"PutRequest": {"Item": attributes}})
        client.batch_write_item(RequestItems={INTERACTIONS_TABLE: requests})
    return keys


@pytest.mark.parametrize("segments", [1, 4])
def test_scan_returns_every_row_once(dynamodb: Any, segments: int) -> None:
    expected = put_interactions(dynamodb, 300)
    stats = ReadStats()

    rows = list(
        scan_interactions(
            dynamodb, INTERACTIONS_TABLE, segments, 1_000_000, stats=stats, page_size=40
        )
    )

    keys = [(row.user_id, row.item_id) for row in rows]
    assert len(keys) == len(expected)
    assert set(keys) == expected
    assert stats.items_read == 300
    assert stats.query_calls >= 300 // 40
    weighted = [row for row in rows if row.item_id == "i00005"]
    assert weighted == [InteractionRecord("u5", "i00005", "view", 1_700_000_005, 4.5)]


def test_scan_request_shape(dynamodb: Any) -> None:
    put_interactions(dynamodb, 10)
    proxy = ClientProxy(dynamodb)

    list(scan_interactions(proxy, INTERACTIONS_TABLE, 2, 1_000_000))

    requests = [kwargs for name, kwargs in proxy.calls if name == "scan"]
    assert sorted(request["Segment"] for request in requests) == [0, 1]
    assert all(request["TotalSegments"] == 2 for request in requests)
    assert all(request["ConsistentRead"] is False for request in requests)
    assert all(request["ReturnConsumedCapacity"] == "TOTAL" for request in requests)
    assert all("ProjectionExpression" in request for request in requests)


def test_scan_of_missing_table_raises(dynamodb: Any) -> None:
    with pytest.raises(StoreError, match="NoSuchTable"):
        list(scan_interactions(dynamodb, "NoSuchTable", 3, 100))


class FakeClock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
            self.slept += seconds


class PagedScanClient:
    """Serves `pages` Scan pages per segment, each consuming `capacity` units; logs request times."""

    def __init__(self, clock: FakeClock, pages: int, capacity: float) -> None:
        self.clock = clock
        self.pages = pages
        self.capacity = capacity
        self.requests: list[tuple[float, float]] = []  # (time, capacity consumed before it)
        self.consumed = 0.0
        self._lock = threading.Lock()

    def scan(self, **request: Any) -> dict[str, Any]:
        with self._lock:
            self.requests.append((self.clock(), self.consumed))
            self.consumed += self.capacity
        page = request.get("ExclusiveStartKey", {}).get("page", 0)
        response: dict[str, Any] = {
            "Items": [{"user_id": {"S": f"u{request['Segment']}"}, "item_id": {"S": f"i{page}"}}],
            "ConsumedCapacity": {"TableName": "t", "CapacityUnits": self.capacity},
        }
        if page + 1 < self.pages:
            response["LastEvaluatedKey"] = {"page": page + 1}
        return response


def test_scan_rate_limited_exactly() -> None:
    clock = FakeClock()
    client = PagedScanClient(clock, pages=20, capacity=5.0)

    rows = list(scan_interactions(client, "t", 1, 10.0, clock=clock, sleep=clock.sleep))

    # Burst 10 units, then 10 units/s: the 20th page (95 units consumed before it)
    # may start at (95 - 10) / 10 = 8.5 s and not earlier.
    assert len(rows) == 20
    last_time, consumed_before = client.requests[-1]
    assert consumed_before == 95.0
    assert last_time == pytest.approx(8.5)
    for time_sent, consumed in client.requests:
        assert consumed <= 10.0 + 10.0 * time_sent + 1e-9


def test_scan_rate_limit_shared_by_segments() -> None:
    clock = FakeClock()
    client = PagedScanClient(clock, pages=10, capacity=4.0)

    rows = list(scan_interactions(client, "t", 3, 20.0, clock=clock, sleep=clock.sleep))

    assert len(rows) == 30
    # Each segment may have one request in flight beyond the bucket's balance.
    for time_sent, consumed in client.requests:
        assert consumed <= 20.0 + 20.0 * time_sent + 3 * 4.0 + 1e-9
    assert client.requests[-1][0] >= (120.0 - 20.0 - 3 * 4.0) / 20.0


def test_token_bucket_rejects_bad_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0)


def test_scan_stops_when_consumer_stops() -> None:
    clock = FakeClock()
    client = PagedScanClient(clock, pages=10_000, capacity=0.0)

    rows = scan_interactions(client, "t", 2, 100.0, clock=clock, sleep=clock.sleep)
    first = [next(rows) for _ in range(3)]
    rows.close()  # joins the segment threads

    assert len(first) == 3
    assert len(client.requests) < 10_000 * 2
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("scan-")]
