"""What looks like an e-mail address or a phone number, wherever Lethe would keep a text.

The shop sends ids, never contact details: these checks refuse them at the
door (event data, subjects, hold reasons). A name cannot be told apart from
other words, so names are not caught here.
"""

from __future__ import annotations

import re

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[a-zA-Z]{2,}")
# A whole value that is a phone number: digits and separators, 9 digits or more.
PHONE = re.compile(r"^\+?[\d .()-]{9,}$")
# In free text: digits with optional separators, not part of a longer token (uuid, float,
# date). A colon before them is a label (`phone:0612345678`) unless a digit precedes it
# (a time).
PHONE_CANDIDATE = re.compile(r"(?<![\w./-])(?<!\d:)\+?\(?\d[\d .()/-]{6,}\d(?![\w.:/-])")


def looks_like_phone(candidate: str) -> bool:
    """Whether a PHONE_CANDIDATE match is a phone number: 9 to 15 digits, in one run or in
    short groups (`06 12 34 56 78`); a case number (`2026-000123`, `2026/14332`), a float
    or a timestamp has a long group next to a separator."""
    digits = sum(c.isdigit() for c in candidate)
    if not 9 <= digits <= 15:
        return False
    groups = re.findall(r"\d+", candidate)
    return len(groups) == 1 or all(len(g) <= 4 for g in groups)


def is_contact_detail(value: str) -> bool:
    """Whether a value (an id, a field) holds an e-mail address or is a phone number."""
    return bool(EMAIL.search(value) or PHONE.match(value))


def id_is_contact_detail(value: str) -> bool:
    """Whether an id (a subject's, an event's) is an e-mail address or a written phone
    number; bare digits are taken for the shop's own numbering (customer:100000042)."""
    return bool(EMAIL.search(value) or (PHONE.match(value) and not value.isdigit()))


def mentions_contact_details(text: str) -> bool:
    """Whether free text holds an e-mail address or a phone number (what the logs mask)."""
    if EMAIL.search(text):
        return True
    return any(looks_like_phone(m.group(0)) for m in PHONE_CANDIDATE.finditer(text))


# An id shorter than this is taken for a number among others (a count, a day) when it
# stands alone in free text; with its kind before it (`customer 42`) it is always the subject.
_SHORTEST_BARE_ID = 3


def subject_mention(subject: str) -> re.Pattern[str]:
    """What names `subject` (KIND:ID) in free text, whatever the case: `customer:42`,
    `customer 42`, `customer #42`, and the id alone as a word of its own from three
    characters on (not inside a code such as LIT-2026-42 or 2026/42)."""
    kind, _, local_id = subject.partition(":")
    before = r"(?<![\w./-])"
    after = r"(?![\w/-]|\.\w)"
    named = rf"{re.escape(kind)}\s*[:#]?\s*{re.escape(local_id)}"
    if len(local_id) >= _SHORTEST_BARE_ID:
        named = rf"(?:{named}|{re.escape(local_id)})"
    return re.compile(before + named + after, re.IGNORECASE)


def is_free_text(value: str) -> bool:
    """Words rather than a code: what a note or a comment is, and an order number is not."""
    return len(value.split()) > 1


def value_has_contact_details(value: str) -> bool:
    """Whether an event's data value is an address or phone number, or a note holding one
    ("call back on 06 11 22 33 44"); a code's digits are not taken for a number inside words."""
    return is_contact_detail(value) or (is_free_text(value) and mentions_contact_details(value))
