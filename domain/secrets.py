"""The spellings a configured secret can take in text, so that redaction finds them all.

A token put in a URL reaches an access log percent-encoded (`Op3rator%2BT0ken%2F%3D`); a
password in a connection error may be URL-quoted; an `Authorization: Basic` header or a
client's debug output carries base64. Redacting only the raw form missed half of them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

REDACTED = "***"
MIN_LENGTH = 4  # shorter values would blank out ordinary text


def spellings(secret: str) -> set[str]:
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}
    forms |= {re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), f) for f in list(forms)}
    raw = secret.encode()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        text = encode(raw).decode()
        forms |= {text, text.rstrip("=")}
    return {f for f in forms if len(f) >= MIN_LENGTH}


def redact(text: str, secrets: Iterable[str]) -> str:
    """Longest forms first, so a secret containing another is replaced whole."""
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms |= spellings(secret)
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text
