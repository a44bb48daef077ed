"""The whole local stack over HTTP: local API front end, src/app.py handler, dynalite.

The interaction log is small enough to rank by hand. u1 has seen A and B. C was seen by three
other users who also saw A and B, while D was seen by one user together with A only, and E
by one user alone. Any item-to-item co-occurrence model therefore ranks C above D for u1,
gives E no score, and never recommends A or B back to u1.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from tests.conftest import LocalTable
    from tools.local_api import LocalApiServer

pytestmark = pytest.mark.http

HISTORY_OF_U1 = ["A", "B"]
INTERACTIONS = {
    "u1": HISTORY_OF_U1,
    "u2": ["A", "B", "C"],
    "u3": ["A", "B", "C"],
    "u6": ["A", "B", "C"],
    "u4": ["A", "D"],
    "u5": ["E"],
    # Ids that need percent-encoding in a URL; same history as u1.
    "a@b.com": HISTORY_OF_U1,
    "jane doe": HISTORY_OF_U1,
    "josé": HISTORY_OF_U1,
    "50%41": HISTORY_OF_U1,  # decoded twice, "50%2541" would turn into "50A"
}
BASE_TIMESTAMP = 1_700_000_000


def get_json(base_url: str, target: str) -> tuple[int, str, Any]:
    """GET `target` verbatim and return (status, Content-Type, decoded JSON body)."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        return (
            response.status,
            response.headers.get("Content-Type", ""),
            json.loads(response.read()),
        )
    finally:
        connection.close()


@pytest.fixture(scope="module")
def interactions(local_table: LocalTable) -> LocalTable:
    """Write INTERACTIONS to the module's table, one rating of 4 per (user, item)."""
    offset = 0
    for user_id, items in INTERACTIONS.items():
        for item_id in items:
            offset += 1
            local_table.client.put_item(
                TableName=local_table.name,
                Item={
                    "user_id": {"S": user_id},
                    "item_id": {"S": item_id},
                    "interaction_type": {"S": "rating"},
                    "timestamp": {"N": str(BASE_TIMESTAMP + offset)},
                    "weight": {"N": "4"},
                },
            )
    return local_table


@pytest.fixture
def base_url(
    interactions: LocalTable,
    load_app: Callable[..., Any],
    serve_api: Callable[..., tuple[LocalApiServer, str]],
) -> Iterator[str]:
    app = load_app(interactions.handler_env())
    server, url = serve_api(app.lambda_handler)
    yield url
    # An exception that escaped the handler became a 502 and was counted here.
    assert server.handler_failures == 0


def test_recommends_unseen_items_ranked(base_url: str) -> None:
    status, content_type, body = get_json(base_url, "/recommendations/u1")

    assert status == 200
    assert content_type.startswith("application/json")
    assert body["user_id"] == "u1"
    item_ids = [entry["item_id"] for entry in body["recommendations"]]
    scores = [entry["score"] for entry in body["recommendations"]]
    assert item_ids[:2] == ["C", "D"]
    assert "A" not in item_ids
    assert "B" not in item_ids
    assert len(item_ids) == len(set(item_ids))
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > scores[1]


def test_limit_honoured(base_url: str) -> None:
    status, _, body = get_json(base_url, "/recommendations/u1?limit=1")

    assert status == 200
    assert [entry["item_id"] for entry in body["recommendations"]] == ["C"]


def test_unknown_user_gets_empty_list(base_url: str) -> None:
    status, _, body = get_json(base_url, "/recommendations/nobody-here")

    assert status == 200
    assert body == {"user_id": "nobody-here", "recommendations": []}


@pytest.mark.parametrize("limit", ["abc", "0", "-1", "1.5", "", "100000"])
def test_bad_limit_is_400(base_url: str, limit: str) -> None:
    status, content_type, body = get_json(base_url, f"/recommendations/u1?limit={limit}")

    assert status == 400
    assert content_type.startswith("application/json")
    assert body["field"] == "limit"
    assert "limit" in body["message"]


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("a%40b.com", "a@b.com"),
        ("jane%20doe", "jane doe"),
        ("jos%C3%A9", "josé"),
        ("50%2541", "50%41"),
    ],
)
def test_encoded_user_id_round_trip(base_url: str, encoded: str, decoded: str) -> None:
    status, _, body = get_json(base_url, f"/recommendations/{encoded}?limit=1")

    assert status == 200
    assert body["user_id"] == decoded
    assert [entry["item_id"] for entry in body["recommendations"]] == ["C"]
