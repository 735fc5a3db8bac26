"""Server-side validation of create bodies, written from the vendor page (not from the client).

Example::

    params = validate_create({"model": "kirin_v2_5_turbo_t2v", "prompt": "a fox"})
    params["duration"]  # -> "5"
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from airflow_provider_kirin.emulator.config import (
    ASPECT_RATIOS,
    DURATIONS,
    MODEL_ID,
    MODES,
    PROMPT_MAX_CHARS,
)

KNOWN_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "negative_prompt",
        "duration",
        "aspect_ratio",
        "mode",
        "watermark_info",
        "callback_url",
        "external_task_id",
    }
)


class CreateValidationError(ValueError):
    """A create body was refused; ``str(exc)`` is ``"<field>: <why>[; <field>: <why>...]"``."""


def validate_create(body: Any, *, reject_unknown: bool = True) -> dict[str, Any]:
    """Check a decoded create body and return normalized parameters (defaults filled in).

    Optional fields must be left out rather than sent as ``null``; a ``null`` is refused, so a
    client that leaks ``None`` values is caught.
    """
    if not isinstance(body, dict):
        raise CreateValidationError("body: must be a JSON object")
    problems: list[str] = []
    if reject_unknown:
        problems.extend(f"{name}: unknown field" for name in sorted(set(body) - KNOWN_FIELDS))

    model = body.get("model")
    if "model" not in body:
        problems.append("model: field required")
    elif model != MODEL_ID:
        problems.append(f"model: must be {MODEL_ID}")

    if "prompt" not in body:
        problems.append("prompt: field required")
    else:
        _check_text(body["prompt"], "prompt", 1, problems)
    if "negative_prompt" in body:
        _check_text(body["negative_prompt"], "negative_prompt", 0, problems)

    duration = body.get("duration", "5")
    if isinstance(duration, int) and not isinstance(duration, bool):
        duration = str(duration)
    if duration not in DURATIONS:
        problems.append("duration: must be one of '5', '10'")
    aspect_ratio = body.get("aspect_ratio", "16:9")
    if aspect_ratio not in ASPECT_RATIOS:
        problems.append(f"aspect_ratio: must be one of {', '.join(ASPECT_RATIOS)}")
    mode = body.get("mode", "std")
    if mode not in MODES:
        problems.append(f"mode: must be one of {', '.join(MODES)}")

    watermark = body.get("watermark_info", {"enabled": False})
    if (
        not isinstance(watermark, dict)
        or set(watermark) != {"enabled"}
        or not isinstance(watermark["enabled"], bool)
    ):
        problems.append('watermark_info: must be {"enabled": true|false} (custom watermarks unsupported)')

    callback_url = body.get("callback_url")
    if "callback_url" in body and not _is_http_url(callback_url):
        problems.append("callback_url: must be an absolute http(s) URL")
    external_task_id = body.get("external_task_id")
    if "external_task_id" in body and (not isinstance(external_task_id, str) or not external_task_id):
        problems.append("external_task_id: must be a non-empty string")

    if problems:
        raise CreateValidationError("; ".join(problems))
    return {
        "model": MODEL_ID,
        "prompt": body["prompt"],
        "negative_prompt": body.get("negative_prompt"),
        "duration": duration,
        "aspect_ratio": aspect_ratio,
        "mode": mode,
        "watermark": bool(watermark["enabled"]),
        "callback_url": callback_url,
        "external_task_id": external_task_id,
    }


def _check_text(value: Any, name: str, minimum: int, problems: list[str]) -> None:
    if not isinstance(value, str):
        problems.append(f"{name}: must be a string")
    elif len(value) < minimum:
        problems.append(f"{name}: must not be empty")
    elif len(value) > PROMPT_MAX_CHARS:
        problems.append(f"{name}: must be at most {PROMPT_MAX_CHARS} characters (got {len(value)})")


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > 2048:
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
