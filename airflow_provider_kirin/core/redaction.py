"""Keeping the API key out of everything the provider produces: the one registry of secrets, and
the redaction applied where server values enter (``models.KirinTask``), in every exception
message, event and log line.

::

    from airflow_provider_kirin.core.redaction import clean_text, redact, register_secret

    register_secret(conn.password)  # done by the hooks as soon as the connection is read
    redact(f"server said {text}")   # the key, plain or JSON/URL-escaped, becomes ***
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MAX_TEXT_CHARS", "clean_text", "redact", "redact_json", "register_secret"]

_SECRETS: dict[str, re.Pattern[str]] = {}
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
#: Longest server text (error messages, codes) an exception or log line quotes.
MAX_TEXT_CHARS = 500


def _secret_pattern(secret: str) -> re.Pattern[str]:
    """``secret`` as written, or with any of its characters escaped the way JSON (``\\u002d``,
    ``\\/``) or a URL (``%2D``) may write it: a server that echoes the key in an escaped form
    must not get it past :func:`redact`."""
    parts = []
    for char in secret:
        code = ord(char)
        forms = [re.escape(char)]
        if code < 0x10000:
            forms.append(rf"\\u{code:04x}")
        if code < 0x80:
            forms.append(f"%{code:02x}")
        if char == "/":
            forms.append(r"\\/")
        parts.append(f"(?:{'|'.join(forms)})")
    return re.compile("".join(parts), re.IGNORECASE if secret.isascii() else 0)


def register_secret(secret: str | None) -> None:
    """Remember a secret (the API key) so that :func:`redact` removes it from any text we produce."""
    if secret and len(secret) >= 4 and secret not in _SECRETS:
        _SECRETS[secret] = _secret_pattern(secret)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret (also JSON- or URL-escaped) and every bearer
    token replaced by ``***``."""
    for secret, pattern in _SECRETS.items():
        if secret in text:
            text = text.replace(secret, "***")
        if "\\" in text or "%" in text:
            text = pattern.sub("***", text)
    return _BEARER.sub(r"\1***", text)


def clean_text(value: object, limit: int = MAX_TEXT_CHARS) -> str:
    """Server text made safe to quote: redacted first, then cut to ``limit`` characters (cutting
    first could leave the head of a key that straddles the cut)."""
    text = redact(str(value))
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters in all)"
    return text


def redact_json(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, strings...) with :func:`redact` applied to every string."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): redact_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    return value
