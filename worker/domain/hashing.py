"""Keyed hashes: how Lethe refers to people in logs, audit rows and the suppression list.

HMAC-SHA256, so a hash cannot be reversed by hashing a list of known ids or
addresses without the key. Each purpose has its own key, derived from
LETHE_SECRET with a label (HMAC(secret, "lethe/v2/" + purpose), HKDF-Expand's
one-block form): the audit's subject references, the suppression list's
hashes and the shop's pseudonyms cannot be joined with one another, and one
leaked purpose key reveals nothing of the others (EDPB Guidelines 01/2025 on
pseudonymisation: separate secrets per pseudonymisation domain).

Releases before the per-purpose keys hashed with LETHE_SECRET itself (`s-` and
`hmac-sha256:` prefixes). Their audit rows and suppression entries stay in the
store as written: lookups ask for both forms (`subject_refs`, `value_hashes`),
new rows are written in the current form only.
"""

from __future__ import annotations

import hmac
from functools import lru_cache

AUDIT = "audit"
SUPPRESSION = "suppression"
PSEUDONYMS = "pseudonyms"

SUBJECT_REF_PREFIX = "s2-"
VALUE_HASH_PREFIX = "hmac-sha256-v2:"
LEGACY_SUBJECT_REF_PREFIX = "s-"
LEGACY_VALUE_HASH_PREFIX = "hmac-sha256:"


@lru_cache(maxsize=32)
def purpose_key(secret: bytes, purpose: str) -> bytes:
    """The key for one purpose (AUDIT, SUPPRESSION, PSEUDONYMS), derived from the secret."""
    return hmac.digest(secret, b"lethe/v2/" + purpose.encode(), "sha256")


def subject_ref(secret: bytes, subject: str) -> str:
    """The keyed hash that stands for a subject (`customer:42`) outside the store."""
    digest = hmac.digest(purpose_key(secret, AUDIT), subject.encode(), "sha256")
    return SUBJECT_REF_PREFIX + digest.hex()[:32]


def legacy_subject_ref(secret: bytes, subject: str) -> str:
    """What releases before the per-purpose keys wrote for a subject (audit rows, logs)."""
    return LEGACY_SUBJECT_REF_PREFIX + hmac.digest(secret, subject.encode(), "sha256").hex()[:32]


def subject_refs(secret: bytes, subject: str) -> tuple[str, str]:
    """Every reference the store may hold for a subject: the current one first."""
    return subject_ref(secret, subject), legacy_subject_ref(secret, subject)


def value_hash(secret: bytes, value: str) -> str:
    """A keyed hash of a value matched later (an e-mail address), normalised first."""
    digest = hmac.digest(purpose_key(secret, SUPPRESSION), _normalised(value), "sha256")
    return VALUE_HASH_PREFIX + digest.hex()


def legacy_value_hash(secret: bytes, value: str) -> str:
    """What releases before the per-purpose keys wrote for a value (suppression entries)."""
    return LEGACY_VALUE_HASH_PREFIX + hmac.digest(secret, _normalised(value), "sha256").hex()


def value_hashes(secret: bytes, value: str) -> tuple[str, str]:
    """Every hash the suppression list may hold for a value: the current one first."""
    return value_hash(secret, value), legacy_value_hash(secret, value)


def _normalised(value: str) -> bytes:
    return value.strip().lower().encode()
