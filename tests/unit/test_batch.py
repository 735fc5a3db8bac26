"""The batch's pure logic: item validation before spend, per-item ids, compact packing, file names
from items only, the tally and ``max_failed``."""

from __future__ import annotations

import gc
import random
import string
from typing import Any

import pytest

from airflow_provider_kirin.core.batch import (
    CODE_CHARS,
    EVENT_MESSAGE_CHARS,
    MESSAGE_CHARS,
    BatchTally,
    ItemResult,
    LearnedDurations,
    _unzip,
    _zip,
    check_max_failed,
    decode_results,
    encode_results,
    event_budget_bytes,
    item_file_stem,
    pack_items,
    parse_items,
    read_items,
    too_many_failed,
    unpack_items,
)
from airflow_provider_kirin.core.idempotency import derive_external_task_id
from airflow_provider_kirin.exceptions import KirinValidationError

DEFAULTS: dict[str, Any] = {"duration": 5, "mode": "std"}


@pytest.mark.parametrize(
    ("prompts", "expected"),
    [
        ("one prompt", "prompts: prompts='one prompt' is invalid (not a list)"),
        ([], "prompts: prompts=[] is invalid (empty)"),
        (["ok", 42], "prompts[1]: item=42 is invalid; allowed: a prompt string or a dict"),
        (["ok", {"promt": "typo"}], "prompts[1]: promt='typo' is invalid (unknown field); allowed: one of"),
        ([{"prompt": "a", "key": ""}], "prompts[0]: key='' is invalid; allowed: a non-empty string"),
        (
            [{"prompt": "a", "key": "k"}, {"prompt": "b", "key": "k"}],
            "prompts[1]: key='k' is invalid (also the key of prompts[0]); allowed: a key no other item has",
        ),
        ([{"key": "k"}], "prompts[0] (key 'k'): prompt=None is invalid (missing)"),
        (
            ["ok", "ok", {"prompt": "x", "duration": 7}],
            "prompts[2]: Invalid Kirin request: duration='7' is invalid",
        ),
        (["ok", ""], "prompts[1]: Invalid Kirin request: prompt='' is invalid"),
    ],
)
def test_bad_items_name_index_field_value_and_allowed(prompts: Any, expected: str) -> None:
    with pytest.raises(KirinValidationError) as caught:
        parse_items(prompts, DEFAULTS)
    assert expected in str(caught.value)
    assert "allowed:" in str(caught.value)


def test_items_take_defaults_and_override_them() -> None:
    items = parse_items(
        ["a", {"prompt": "b", "mode": "pro", "key": "bee"}], {**DEFAULTS, "aspect_ratio": "1:1"}
    )
    assert [(i.index, i.key, i.request.mode, i.request.aspect_ratio) for i in items] == [
        (0, None, "std", "1:1"),
        (1, "bee", "pro", "1:1"),
    ]
    assert [i.item_id for i in items] == ["0", "bee"]


def test_item_ids_differ_per_item_and_keyed_items_keep_theirs_when_reordered() -> None:
    def ids(prompts: list[Any]) -> list[str]:
        return [
            derive_external_task_id("d", "r", "t", -1, fingerprint=i.request.fingerprint(), item=i.item_id)
            for i in parse_items(prompts, DEFAULTS)
        ]

    same = ids(["same", "same"])
    assert same[0] != same[1]  # same inputs, two items: two generations
    keyed = ids([{"key": "x", "prompt": "p"}, {"key": "y", "prompt": "q"}])
    assert ids([{"key": "y", "prompt": "q"}, {"key": "x", "prompt": "p"}]) == keyed[::-1]
    assert ids([{"key": "x", "prompt": "changed"}])[0] != keyed[0]  # the id follows the inputs
    plain = derive_external_task_id("d", "r", "t", -1, fingerprint="f")
    assert derive_external_task_id("d", "r", "t", -1, fingerprint="f", item=None) == plain  # unchanged


def test_pack_round_trip_keeps_every_request_and_is_compact() -> None:
    items = parse_items(
        [f"clip {i}" for i in range(50)] + [{"prompt": "wide", "aspect_ratio": "9:16", "key": "w"}], DEFAULTS
    ) + parse_items(
        [
            {"prompt": "n", "negative_prompt": "blur"},
            {"prompt": "m"},
            {"prompt": "o", "negative_prompt": "blur"},
        ],
        DEFAULTS,
    )
    packed = pack_items(items)
    assert packed["shared"]["duration"] == "5"
    assert packed["count"] == len(items)
    rows = _unzip(packed["rows"])
    assert rows[0] == [0, None, {"prompt": "clip 0"}]
    assert rows[50] == [50, "w", {"prompt": "wide", "aspect_ratio": "9:16"}]
    assert unpack_items(packed) == items  # also an item without the negative prompt others have
    assert len(str(pack_items(items))) < 20 * len(items)
    mostly_negative = items[-3:]
    assert _unzip(pack_items(mostly_negative)["rows"])[1] == [
        1,
        None,
        {"prompt": "m", "negative_prompt": None},
    ]
    assert unpack_items(pack_items(mostly_negative)) == mostly_negative


def test_the_trigger_holds_its_items_as_rows_the_garbage_collector_does_not_walk() -> None:
    """``read_items`` validates every row at once, then keeps untracked rows (a full collection of
    the triggerer walks every tracked object while its loop waits) and builds each item again,
    the same as ``unpack_items``'s, when it is taken."""
    items = parse_items(
        [f"clip {i}" for i in range(200)] + [{"prompt": "wide", "aspect_ratio": "9:16"}], DEFAULTS
    )
    held = read_items(pack_items(items))
    gc.collect()
    assert not [row for row in held.rows if gc.is_tracked(row)]
    assert (len(held), held.indices) == (len(items), [item.index for item in items])
    assert list(held) == items
    assert held.item(200).request.aspect_ratio == "9:16"

    bad = pack_items(items)
    bad["shared"] = {**bad["shared"], "duration": "7"}
    with pytest.raises(KirinValidationError, match="duration"):
        read_items(bad)  # a bad row fails before anything is spent, not when its turn comes


#: Characters a task id may not hold, mapped to one it may (a random id within TASK_ID_PATTERN).
ID_CHARS = str.maketrans({c: "x" for c in string.printable if not (c.isalnum() or c in "._:-")})


@pytest.mark.parametrize("count", [1, 50, 2000])
def test_results_travel_in_a_fixed_budget_per_item(count: int) -> None:
    """However long and random the server's text, an event's results stay within their budget."""
    rng = random.Random(count)

    def text(n: int) -> str:
        return "".join(rng.choices(string.printable, k=n))

    longest_cost = "1" * 12 + "." + "9" * 12
    results = [  # a hostile server: the longest task ids, costs and codes that get through, random
        ItemResult(
            i, "failed", "k" + text(63).translate(ID_CHARS), longest_cost, text(64), text(5000), True, 7
        )
        for i in range(count)
    ]
    encoded = encode_results(results)
    assert len(encoded) <= event_budget_bytes(count)
    decoded = decode_results(encoded)
    assert [(r.index, r.status, r.task_id, r.cost, r.generation, r.reused) for r in decoded] == [
        (r.index, r.status, r.task_id, r.cost, r.generation, r.reused) for r in results
    ]
    assert all(r.error_code is not None and len(r.error_code) <= CODE_CHARS for r in decoded)
    messages = [r.error_message for r in decoded if r.error_message]
    assert all(len(m) <= MESSAGE_CHARS for m in messages)
    assert sum(map(len, messages)) <= EVENT_MESSAGE_CHARS


@pytest.mark.parametrize(
    ("key", "stem"),
    [(None, "00007"), ("spring_sale", "00007-spring_sale"), ("spring-2026", "00007-spring-2026")],
)
def test_file_names_come_from_the_item(key: str | None, stem: str) -> None:
    assert item_file_stem(7, key) == stem  # plain keys are kept as they are


@pytest.mark.parametrize(
    "key", ["spring sale", "../../etc/passwd", "..", "/", "C:\\x", "é" * 5, "a" * 300, "k\x00"]
)
def test_file_names_from_any_key_stay_inside_the_destination(key: str) -> None:
    stem = item_file_stem(7, key)
    assert stem.startswith("00007")
    assert not any(bad in stem for bad in ("/", "\\", "\x00", ".."))
    assert len(stem) <= 120
    assert stem != item_file_stem(7, key + "x")  # different keys never share a file


def test_max_failed_count_and_fraction() -> None:
    assert not too_many_failed(1, 4, 1)
    assert too_many_failed(2, 4, 1)
    assert not too_many_failed(0, 4, 0)
    assert too_many_failed(1, 4, 0)
    assert not too_many_failed(1, 4, 0.25)
    assert too_many_failed(1, 4, 0.2)
    for bad in (-1, 1.5, -0.1, True, "1", None):
        with pytest.raises(KirinValidationError, match=r"max_failed=.* is invalid; allowed: an int >= 0"):
            check_max_failed(bad)


def test_tally_progress_line_and_hostile_costs() -> None:
    tally = BatchTally(total=500)
    (item,) = parse_items(["x"], DEFAULTS)
    for index in range(312):
        tally.record(ItemResult(index, "completed", cost="0.35"), item)
    for index in range(4):
        tally.record(ItemResult(312 + index, "failed", error_code="002011095"), item)
    tally.record(ItemResult(400, "completed", cost="NaN"), item)  # nothing the server sends is trusted
    tally.record(ItemResult(401, "completed", cost="-5"), item)
    for index in range(450, 472):
        tally.start(index)
    assert tally.progress() == "318/500 done, 4 failed, 22 in flight, $109.20 so far"
    with pytest.raises(ValueError, match="unknown item status"):
        decode_results(_zip([[0, 99, None, None, None, None, None, 0]]))


def test_learned_durations_place_first_checks_per_kind() -> None:
    std5, pro10 = parse_items(["a", {"prompt": "b", "mode": "pro", "duration": 10}], DEFAULTS)
    learned = LearnedDurations()
    assert learned.first_delay(std5.request, 20.0) == 20.0  # nothing seen yet
    learned.ended(std5.request, 64.0)
    learned.ended(std5.request, 71.0)  # slower ones do not move it
    assert learned.first_delay(std5.request, 20.0) == 64.0
    assert learned.first_delay(pro10.request, 20.0) == 20.0  # another kind
    learned.ended(std5.request, 5.0)
    assert learned.first_delay(std5.request, 20.0) == 20.0  # never below first_poll_delay
