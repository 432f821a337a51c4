"""One redactor for every output: logs, /status and the status page, dead-letter headers, tracing attributes.

Secrets reach outputs in two ways: the config's own values (shown back, e.g. a URL on /status), and a service's
words (an error body that echoes the request's headers lands in ``streamcar-error``, on /status and in spans).
:class:`Redactor` removes both:

* every secret the config holds (:meth:`streamcar.config.Config.secrets`), in each form it travels in: as it is,
  URL-encoded (``%40`` for ``@``, ``+`` for a space), and base64 (``Authorization: Basic`` carries
  ``base64(user:password)``; the config adds that pair for credentials in a URL);
* anything shaped like a credential, whatever its value: ``Bearer``/``Basic`` tokens, ``password=...``-style
  pairs, a password in a URL's userinfo, and query parameters named like credentials (``?token=...``).

Where untrusted text enters (a reply's error), the engine scrubs it once, so every output downstream of it is
clean; the admin server scrubs its whole document as well, and the log handler every line.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "***"
MIN_SECRET = 4
"""Shorter values would blank out ordinary words; they are left to the shape rules."""

_CREDENTIAL_NAMES = r"(?:sasl\.)?password|passwd|secret|token|api[_-]?key|apikey|access[_-]?key|auth|signature|sig"
_SHAPED = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), rf"\1 {REDACTED}"),
    # query parameters named like credentials, in a URL or a query string
    (re.compile(rf"(?i)([?&;](?:[a-z0-9_.-]*?)(?:{_CREDENTIAL_NAMES})=)[^&;\s#\"'<>]+"), rf"\1{REDACTED}"),
    (
        re.compile(
            rf"(?i)\b((?:[a-z0-9_.-]*?)(?:{_CREDENTIAL_NAMES})(?:-value)?)(\"?\s*[=:]\s*\"?)(?!\*\*\*)([^\s\",;&]+)"
        ),
        rf"\1\2{REDACTED}",
    ),
    (re.compile(r"(://[^/\s:@]+):[^/\s@]+@"), rf"\1:{REDACTED}@"),
]


def forms(secret: str) -> set[str]:
    """The forms a secret travels in: as it is, URL-encoded, and base64 (with and without padding)."""
    found = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}
    encoded = base64.b64encode(secret.encode("utf-8", "surrogateescape")).decode()
    found |= {encoded, encoded.rstrip("=")}
    return {form for form in found if len(form) >= MIN_SECRET}


class Redactor:
    """Replaces secrets and credential-shaped text in strings, and in every string of a JSON-like document."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        # longest first, so that a secret containing another one is replaced whole
        known = set(self._secrets)
        for secret in secrets:
            if len(secret) >= MIN_SECRET:
                known |= forms(secret)
        self._secrets = sorted(known, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in _SHAPED:
            text = pattern.sub(replacement, text)
        return text

    def scrub_all(self, document: Any) -> Any:
        """``document`` (dicts, lists, tuples, strings and scalars) with every string scrubbed, keys included."""
        if isinstance(document, str):
            return self.scrub(document)
        if isinstance(document, dict):
            return {self.scrub_all(k): self.scrub_all(v) for k, v in document.items()}
        if isinstance(document, list | tuple):
            return [self.scrub_all(item) for item in document]
        return document


NOTHING = Redactor()
"""Shape rules only: for a pipeline or server built without a config's secrets (tests, embedding)."""
