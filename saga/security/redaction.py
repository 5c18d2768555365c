"""Scrub secrets from error text before it leaves the process.

Error messages end up in failure events, dead-letter headers and logs. Drivers
and HTTP clients like to quote what they were given: query parameters, URLs
with credentials, tokens. :func:`redact` replaces the common shapes with
``[redacted]``.

>>> redact("charge failed for card=4111111111111111 at https://u:pw@bank/x?token=abc")
'charge failed for card=[redacted] at https://[redacted]@bank/x?token=[redacted]'
"""

from __future__ import annotations

import re

_MASK = "[redacted]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Bearer / Basic credentials
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {_MASK}"),
    # user:password@ in URLs and DSNs
    (re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"), _MASK),
    # key=value / key: value for secret-looking keys
    (
        re.compile(
            r"(?i)\b((?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|"
            r"auth(?:orization)?|session|cookie|card|cvv|iban|ssn)\w*)"
            r"(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&)]+)"
        ),
        rf"\1\2{_MASK}",
    ),
    # long digit runs (card numbers, account numbers), with optional separators
    (re.compile(r"\b(?:\d[ -]?){12,19}\b"), _MASK),
)


def redact(text: str) -> str:
    """``text`` with secret-looking parts replaced by ``[redacted]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
