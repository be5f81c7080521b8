"""Keyed hashes: how Lethe refers to people in logs, audit rows and the suppression list.

HMAC-SHA256 with the secret from settings, so a hash cannot be reversed by
hashing a list of known ids or addresses without the key.
"""

from __future__ import annotations

import hmac


def subject_ref(secret: bytes, subject: str) -> str:
    """The keyed hash that stands for a subject (`customer:42`) outside the store."""
    return "s-" + hmac.digest(secret, subject.encode(), "sha256").hex()[:32]


def value_hash(secret: bytes, value: str) -> str:
    """A keyed hash of a value matched later (an e-mail address), normalised first."""
    normalised = value.strip().lower()
    return "hmac-sha256:" + hmac.digest(secret, normalised.encode(), "sha256").hex()
