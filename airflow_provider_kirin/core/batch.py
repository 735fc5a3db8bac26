"""Batches of generations, as pure logic shared by the batch operator and the batch trigger.

- :func:`parse_items` turns the operator's ``prompts`` (strings, or dicts overriding request
  fields per item, with an optional stable ``key``) into validated requests, before anything is
  spent; a bad item is named by index (and key), field, value and what is allowed.
- :func:`pack_items` / :func:`unpack_items` keep the trigger's serialized kwargs compact: the
  shared request fields once, per item only what differs, the rows compressed;
  :func:`read_items` gives the trigger the same items as :class:`PackedItems`, validated once and
  then held as rows, each built again when its turn comes.
- :class:`ItemResult` is one item's outcome (one manifest row); :func:`encode_results` /
  :func:`decode_results` carry a batch's results in its trigger event within a fixed budget per
  item (:data:`ROW_BUDGET_BYTES`), whatever the server said. :class:`BatchTally` holds the running
  counts and the ledger (``budget.Budget``) behind the progress lines and the summary.
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from airflow_provider_kirin.core.budget import Budget, kind_of
from airflow_provider_kirin.core.idempotency import generation_id
from airflow_provider_kirin.core.waiting import Outcome
from airflow_provider_kirin.exceptions import (
    KirinError,
    KirinTaskFailedError,
    KirinTaskTimeoutError,
    KirinValidationError,
)
from airflow_provider_kirin.models import ALLOWED, VIDEO_ARGS, KirinVideoRequest, validate_model

#: Request fields a batch item may set for itself (the operator's arguments are the defaults).
ITEM_FIELDS: Final = VIDEO_ARGS
#: Item statuses: the two Kirin outcomes, plus what the batch itself may report.
#: ``timeout``: still unfinished at the deadline (it may still complete, and be billed);
#: ``error``: the item could not be submitted or checked (its typed error's code is recorded);
#: ``not_submitted``: the deadline passed before the item's turn came (nothing was spent);
#: ``over_budget``: its estimated cost did not fit ``max_cost`` (nothing was spent).
ITEM_STATUSES: Final = ("completed", "failed", "timeout", "error", "not_submitted", "over_budget")
#: What one item's result may take in a trigger event at most, besides error text, whatever the
#: server said: a 64-character task id, a 25-character cost and a 32-character code, none of them
#: compressible (a real one takes about 32: task ids and costs repeat their shape).
ROW_BUDGET_BYTES: Final = 256
#: The longest error code a row keeps (Kirin's are 9 digits).
CODE_CHARS: Final = 32
#: Error text carried in an event: at most this much per item, and this much for the whole batch
#: (past it, only the code); the code alone says what happened.
MESSAGE_CHARS: Final = 200
EVENT_MESSAGE_CHARS: Final = 100_000


def event_budget_bytes(items: int) -> int:
    """The most a batch event's results may take, whatever the server said: a fixed budget per item
    and one for all error text (base64 of incompressible text, at worst)."""
    return ROW_BUDGET_BYTES * items + EVENT_MESSAGE_CHARS * 4 // 3 + 1024


MAX_KEY_CHARS: Final = 200
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One validated item: its place in ``prompts``, its stable ``key`` (or None) and its request."""

    index: int
    key: str | None
    request: KirinVideoRequest

    @property
    def item_id(self) -> str:
        """What names the item in its derived ``external_task_id``: the key, else the index, so
        reordering keyed items keeps their ids (and their generations)."""
        return self.key if self.key is not None else str(self.index)

    @property
    def label(self) -> str:
        return f"prompts[{self.index}]" + (f" (key {self.key!r})" if self.key is not None else "")


def with_derived_ids(
    items: Iterable[BatchItem], context: Any, *, variant: str = "", namespace: str = ""
) -> list[BatchItem]:
    """Each item with its derived ``external_task_id``: the task instance of the Airflow
    ``context`` (``context["ti"]``: dag, run, task, map index), the item (its key, else its index)
    and a fingerprint of its inputs (``idempotency.with_derived_external_task_id``)."""
    from dataclasses import replace

    from airflow_provider_kirin.core.idempotency import with_derived_external_task_id

    return [
        replace(
            item,
            request=with_derived_external_task_id(
                item.request, context, variant=variant, namespace=namespace, item=item.item_id
            ),
        )
        for item in items
    ]


def item_file_stem(index: int, key: str | None) -> str:
    """The stem of an item's file names: from the item's index and key only, never from anything
    the server sent (``00042``, ``00042-spring_sale``). Made a plain name, unable to leave the
    destination, by the provider's one file-name function,
    :func:`~airflow_provider_kirin.io.storage.safe_name`."""
    from airflow_provider_kirin.io.storage import safe_name

    return safe_name(f"{index:05d}-{key}" if key else f"{index:05d}", "")


def _fail(where: str, field_name: str, value: object, allowed: str, why: str = "") -> KirinValidationError:
    text = repr(value)
    if len(text) > 80:
        text = f"{text[:60]}...{text[-10:]}"
    reason = f" ({why})" if why else ""
    return KirinValidationError(f"{where}: {field_name}={text} is invalid{reason}; allowed: {allowed}")


def parse_items(prompts: object, defaults: dict[str, Any]) -> list[BatchItem]:
    """Validate every item of ``prompts`` against the vendor's rules; raise on the first bad one.

    :param prompts: A list of prompt strings, or of dicts with any of :data:`ITEM_FIELDS` and an
        optional ``key`` (a unique, non-empty string).
    :param defaults: The shared values of :data:`ITEM_FIELDS` (the operator's arguments).
    """
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise _fail("prompts", "prompts", prompts, "a list of prompt strings or dicts", "not a list")
    if not prompts:
        raise _fail("prompts", "prompts", prompts, "a list of at least one prompt", "empty")
    allowed_keys = ", ".join((*ITEM_FIELDS, "key"))
    items: list[BatchItem] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(prompts):
        where = f"prompts[{index}]"
        if isinstance(raw, str):
            raw = {"prompt": raw}
        if not isinstance(raw, dict):
            raise _fail(where, "item", raw, "a prompt string or a dict of request fields")
        unknown = sorted(str(name) for name in raw if name not in (*ITEM_FIELDS, "key"))
        if unknown:
            raise _fail(
                where, unknown[0], raw[unknown[0]], f"one of the fields {allowed_keys}", "unknown field"
            )
        key = raw.get("key")
        if key is not None:
            if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_CHARS:
                raise _fail(where, "key", key, f"a non-empty string of at most {MAX_KEY_CHARS} characters")
            if key in seen:
                raise _fail(
                    where, "key", key, "a key no other item has", f"also the key of prompts[{seen[key]}]"
                )
            seen[key] = index
            where = f"{where} (key {key!r})"
        fields = {**defaults, **{name: raw[name] for name in ITEM_FIELDS if name in raw}}
        if "prompt" not in raw:
            raise _fail(where, "prompt", None, ALLOWED["prompt"], "missing")
        try:
            request = KirinVideoRequest.build(**fields)
        except KirinValidationError as err:
            raise KirinValidationError(f"{where}: {err.message}") from None
        items.append(BatchItem(index=index, key=key, request=request))
    return items


def _zip(value: Any) -> str:
    return base64.b64encode(zlib.compress(json.dumps(value, separators=(",", ":")).encode(), 6)).decode()


def _unzip(text: str) -> Any:
    return json.loads(zlib.decompress(base64.b64decode(text)))


def pack_items(items: Iterable[BatchItem]) -> dict[str, Any]:
    """The items in a compact, JSON-serializable form for trigger kwargs: the most common value of
    each request field once, then ``[index, key, fields that differ]`` per item, compressed (the
    prompts and derived ids of a batch repeat themselves a lot). Derived ids are kept, not derived
    again in the trigger: an upgrade between the deferral and the trigger's run cannot change them."""
    payloads = [(item, item.request.to_payload()) for item in items]
    shared: dict[str, Any] = {}
    names = {name for _, payload in payloads for name in payload} - {"prompt", "external_task_id"}
    for name in sorted(names):
        values = Counter(json.dumps(payload.get(name), sort_keys=True) for _, payload in payloads)
        common, _ = values.most_common(1)[0]
        if common != "null":
            shared[name] = json.loads(common)
    rows = [
        [
            item.index,
            item.key,
            {
                **{k: v for k, v in payload.items() if k not in shared or shared[k] != v},
                **{k: None for k in shared if k not in payload},  # unset here, though most set it
            },
        ]
        for item, payload in payloads
    ]
    return {"shared": shared, "count": len(rows), "rows": _zip(rows)}


@dataclass(frozen=True, slots=True)
class PackedItems:
    """A batch's items as the trigger holds them: the rows of :func:`pack_items`, each a tuple of
    its index, key and own fields as JSON text, built into its :class:`BatchItem` when iterated.

    Why not the items themselves: a validated item is about eight objects the garbage collector
    tracks, and every full collection of the triggerer walks all of them while its event loop
    waits (measured at 10,000 items: about 0.1 s more per full collection). A tuple of a number and
    strings is not tracked at all. Rebuilding an item when a worker takes it costs one validation,
    well under a millisecond."""

    shared: dict[str, Any]
    rows: list[tuple[int, str | None, str]]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[BatchItem]:
        return (self.item(position) for position in range(len(self.rows)))

    @property
    def indices(self) -> list[int]:
        """Each item's index, in order (nothing built)."""
        return [index for index, _, _ in self.rows]

    def item(self, position: int) -> BatchItem:
        """The item at ``position``, validated."""
        index, key, own = self.rows[position]
        fields = {**self.shared, **json.loads(own)}
        return BatchItem(index=index, key=key, request=validate_model(KirinVideoRequest, fields))


def _rows(packed: dict[str, Any]) -> PackedItems:
    rows = [(int(index), key, json.dumps(own)) for index, key, own in _unzip(packed["rows"])]
    return PackedItems(packed.get("shared") or {}, rows)


def read_items(packed: dict[str, Any]) -> PackedItems:
    """The items of :func:`pack_items`'s output, every one validated now (a bad row fails here,
    before anything is spent), held as :class:`PackedItems`."""
    items = _rows(packed)
    for _ in items:
        pass
    return items


def unpack_items(packed: dict[str, Any]) -> list[BatchItem]:
    """Reverse :func:`pack_items`."""
    return list(_rows(packed))


@dataclass(slots=True)
class ItemResult:
    """One item's outcome. In the trigger event it travels as a short row (:func:`encode_results`)."""

    index: int
    status: str
    task_id: str | None = None
    cost: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    reused: bool = False
    #: Which generation of the item's external id was used: 1 for ``<id>``, N for ``<id>.gN``
    #: (after failed ones). From what this provider asked for, never from the server's echo.
    generation: int = 1

    @classmethod
    def of(cls, item: BatchItem, outcome: Outcome, reused: bool, generation: int = 1) -> ItemResult:
        """The result of an item whose wait ended (``waiting.outcome_of`` decided how): completed
        with a video; ``failed`` (the generation failed, or completed without a video);
        ``timeout`` (still unfinished at the deadline); or ``error`` (its checks failed)."""
        task, error = outcome.task, outcome.error
        task_id = task.task_id if task is not None else None
        if error is None and task is not None:
            return cls(item.index, "completed", task_id, task.cost, reused=reused, generation=generation)
        if isinstance(error, KirinTaskTimeoutError):
            status = "timeout"
        elif isinstance(error, KirinTaskFailedError) and task is not None and task.is_terminal:
            status = "failed"
        else:
            status = "error"
        cost = task.cost if task is not None and task.is_terminal else None
        return cls(item.index, status, task_id, cost, _code(error), _message(error), reused, generation)

    @classmethod
    def not_submitted(cls, item: BatchItem, error: KirinError) -> ItemResult:
        """The item could not be submitted (its typed error's code is recorded)."""
        return cls(item.index, "error", error_code=_code(error), error_message=_message(error))

    @classmethod
    def over_budget(cls, item: BatchItem, reason: str) -> ItemResult:
        """The item's estimated cost did not fit ``max_cost``: not submitted, nothing spent."""
        return cls(item.index, "over_budget", error_code="over_budget", error_message=reason)

    @classmethod
    def cut_short(cls, item: BatchItem, *, started: bool) -> ItemResult:
        """The batch's deadline passed: ``timeout`` for an item in flight (it may still complete,
        and be billed), ``not_submitted`` for one whose turn never came (nothing was spent)."""
        if started:
            return cls(
                item.index, "timeout", error_message="the batch's deadline passed before this item ended"
            )
        return cls(
            item.index, "not_submitted", error_message="the batch's deadline passed before this item's turn"
        )

    def manifest_row(
        self, item: BatchItem, *, video_urls: Sequence[str] = (), stored: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The manifest's row: the item's inputs (key, fingerprint) and its outcome."""
        return {
            "index": self.index,
            "key": item.key,
            "fingerprint": item.request.fingerprint(),
            "external_task_id": generation_id(str(item.request.external_task_id), self.generation),
            "task_id": self.task_id,
            "status": self.status,
            "reused": self.reused,
            "video_urls": list(video_urls),
            "stored": list(stored),
            "cost": self.cost,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "prompt": item.request.prompt,
        }


def encode_results(results: Sequence[ItemResult]) -> str:
    """The results as an event carries them: one short row per item (no envelope, no URL, the
    generation's number instead of its id), error text cut to :data:`MESSAGE_CHARS` per item and
    :data:`EVENT_MESSAGE_CHARS` in all, compressed."""
    left = EVENT_MESSAGE_CHARS
    rows = []
    for result in results:
        message = (result.error_message or "")[:MESSAGE_CHARS] or None
        if message is not None:
            message = message if len(message) <= left else None
            left -= len(message or "")
        status = ITEM_STATUSES.index(result.status)
        code = result.error_code[:CODE_CHARS] if result.error_code else None
        rows.append([result.index, status, result.generation, result.task_id, result.cost, code, message,
                     int(result.reused)])  # fmt: skip
    return _zip(rows)


def decode_results(encoded: str) -> list[ItemResult]:
    """Reverse :func:`encode_results`."""
    results = []
    for index, status, generation, task_id, cost, code, message, reused in _unzip(encoded):
        if not isinstance(status, int) or not 0 <= status < len(ITEM_STATUSES):
            raise ValueError(f"unknown item status {status!r}")
        results.append(
            ItemResult(
                int(index), ITEM_STATUSES[status], task_id, cost, code, message, bool(reused), int(generation)
            )
        )
    return results


def _code(error: KirinError | None) -> str | None:
    """What a manifest row names as the item's error: Kirin's code, else the provider's error class."""
    return None if error is None else error.code or type(error).__name__


def _message(error: KirinError | None) -> str | None:
    return None if error is None else error.message


@dataclass
class BatchTally:
    """Running counts and the ledger of one batch: what the progress lines say and the summary holds."""

    total: int
    budget: Budget = field(default_factory=Budget)
    counts: dict[str, int] = field(default_factory=dict)
    #: Items submitted (or being submitted) and not ended yet.
    running: set[int] = field(default_factory=set)

    def start(self, index: int) -> None:
        self.running.add(index)

    def finish(self, index: int) -> None:
        self.running.discard(index)

    @property
    def in_flight(self) -> int:
        return len(self.running)

    def record(self, result: ItemResult, item: BatchItem) -> None:
        """Count ``result`` and book its cost (a reused generation was paid by an earlier try)."""
        self.counts[result.status] = self.counts.get(result.status, 0) + 1
        self.budget.ended(result.index, kind_of(item.request), result.cost, created=not result.reused)

    @property
    def ended(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return self.ended - self.counts.get("completed", 0)

    def total_cost(self) -> str:
        return self.budget.usd(self.budget.spent)

    def progress(self) -> str:
        """``312/500 done, 4 failed, 22 in flight, $109.20 so far``."""
        return (
            f"{self.ended}/{self.total} done, {self.failed} failed, {self.in_flight} in flight, "
            f"${self.total_cost()} so far"
        )


@dataclass
class LearnedDurations:
    """How long this batch's generations take, learned as they end, to place later items' first check.

    A batch runs many generations of the same kind (mode, duration). Once one has been seen done
    after ``d`` seconds, later items of that kind get their first status check ``d`` seconds after
    their create instead of ``first_poll_delay``: one check instead of several for a typical item.
    ``d`` is at most one poll interval above the fastest true generation time (it is when a check
    saw it done), so a later item that ends no sooner is still noticed within about one interval,
    as with plain polling; one that ends sooner waits at most that long. Never less than
    ``first_poll_delay``.
    """

    fastest: dict[tuple[str, str], float] = field(default_factory=dict)

    def first_delay(self, request: KirinVideoRequest, first_poll_delay: float) -> float:
        return max(first_poll_delay, self.fastest.get((request.mode, request.duration), 0.0))

    def ended(self, request: KirinVideoRequest, seconds: float) -> None:
        """A generation this batch created was seen completed ``seconds`` after its create."""
        kind = (request.mode, request.duration)
        if seconds > 0 and seconds < self.fastest.get(kind, float("inf")):
            self.fastest[kind] = seconds


def check_max_failed(value: object) -> int | float:
    """Validate ``max_failed``: a count (int >= 0) or a fraction of the items (float in [0, 1])."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(
            "max_failed", "max_failed", value, "an int >= 0 (a count) or a float in [0, 1] (a fraction)"
        )
    if isinstance(value, int):
        if value < 0:
            raise _fail(
                "max_failed", "max_failed", value, "an int >= 0 (a count) or a float in [0, 1] (a fraction)"
            )
        return value
    if not 0.0 <= value <= 1.0:
        raise _fail(
            "max_failed", "max_failed", value, "an int >= 0 (a count) or a float in [0, 1] (a fraction)"
        )
    return value


def too_many_failed(failed: int, total: int, max_failed: int | float) -> bool:
    """Whether ``failed`` of ``total`` items is more than ``max_failed`` allows."""
    if isinstance(max_failed, float):
        return total > 0 and failed / total > max_failed
    return failed > max_failed
