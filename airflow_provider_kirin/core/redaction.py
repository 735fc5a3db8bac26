"""Keeping the API key and terminal tricks out of everything the provider produces: the one registry
of secrets, and the cleaning applied where server values enter (``models.KirinTask``, error
bodies), in every exception message, event and log line.

::

    from airflow_provider_kirin.core.redaction import clean_text, redact, register_secret

    register_secret(conn.password)  # done by the hooks as soon as the connection is read
    redact(f"server said {text}")   # the key, plain or JSON/URL-escaped, becomes ***
    clean_text(server_text)         # redacted, control characters escaped, cut to a length

"Plain text" here means no C0/C1 control character (newline, carriage return, ESC, BEL, NUL,
U+0085...) and no U+2028/U+2029 line separator: each is written as a visible escape (``\\n``,
``\\x1b``, ``\\u2028``), so a server's text can neither forge a log line nor move a terminal's
cursor nor split a JSON Lines file, and the reader still sees what was sent.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "MAX_TEXT_CHARS",
    "clean_json",
    "clean_text",
    "escape_controls",
    "has_controls",
    "redact",
    "redact_json",
    "register_secret",
]

_SECRETS: dict[str, re.Pattern[str]] = {}
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
#: Longest server text (error messages, codes) an exception or log line quotes.
MAX_TEXT_CHARS = 500

_CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
#: Each control character and its visible escape (``str.translate``: one pass in C).
_ESCAPES = {
    code: _NAMED.get(code, f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}") for code in _CONTROLS
}
_CONTROL_RE = re.compile("[" + "".join(re.escape(chr(code)) for code in _CONTROLS) + "]")


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
    token replaced by ``***``.

    Cheap on the common case, which every status check pays: a substring test per secret, and the
    regular expressions only where an escape (``\\``, ``%``) or the word "bearer" is present."""
    escaped = "\\" in text or "%" in text
    for secret, pattern in _SECRETS.items():
        if secret in text:
            text = text.replace(secret, "***")
        if escaped:
            text = pattern.sub("***", text)
    if "bearer" in text.lower():
        text = _BEARER.sub(r"\1***", text)
    return text


def has_controls(text: str) -> bool:
    """Whether ``text`` holds a control character or a Unicode line separator."""
    return _CONTROL_RE.search(text) is not None


def escape_controls(text: str) -> str:
    """``text`` with every control character and U+2028/U+2029 written as a visible escape."""
    return text.translate(_ESCAPES)


def clean_text(value: object, limit: int = MAX_TEXT_CHARS) -> str:
    """Server text made safe to quote: redacted, control characters escaped, then cut to ``limit``
    characters (cutting first could leave the head of a key that straddles the cut)."""
    text = escape_controls(redact(str(value)))
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters in all)"
    return text


def redact_json(value: Any, *, escape: bool = False) -> Any:
    """``value`` (JSON-like: dicts, lists, strings...) with every string, keys included, redacted;
    with ``escape``, their control characters escaped too (:func:`clean_json`)."""
    if isinstance(value, str):
        value = redact(value)
        return escape_controls(value) if escape else value
    if isinstance(value, dict):
        return {redact_json(str(k), escape=escape): redact_json(v, escape=escape) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v, escape=escape) for v in value]
    return value


def clean_json(value: Any) -> Any:
    """A server's JSON made safe where it enters: every string redacted and plain text."""
    return redact_json(value, escape=True)
