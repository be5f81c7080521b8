"""Data fields some event types must carry (contact.made's direction), how they read in
words, and how the stored log reads events logged before a field was required."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# CNIL, référentiel « gestion commerciale » (2021): prospects are kept three years from
# collection or from the last contact *coming from the prospect* ("dernier contact émanant
# du prospect"); a click on a link in an e-mail counts, the mere opening of an e-mail does
# not, nor do the shop's own mailings or calls. A contact is only useful to a register
# when it says which way it went, so the event is refused without it, never guessed.
REQUIRED_DATA: dict[str, dict[str, tuple[str, ...]]] = {
    "contact.made": {"direction": ("inbound", "outbound")},
}

# What each allowed value means, for refusals and the art. 30 register.
MEANINGS: dict[tuple[str, str, Any], str] = {
    ("contact.made", "direction", "inbound"): (
        "the person wrote, called, filled a form, replied or clicked through"
    ),
    ("contact.made", "direction", "outbound"): (
        "the shop wrote or called; an e-mail the person only opened is outbound too"
    ),
}

# Words for a rule entry that matches on data ("contact.made from the person").
WORDS: dict[tuple[str, str, Any], str] = {
    ("contact.made", "direction", "inbound"): "from the person",
    ("contact.made", "direction", "outbound"): "by the shop",
}

# Events stored by earlier releases, which did not require the field yet. Read as inbound:
# the only reading that never erases early (an inbound contact renews at least as much as
# an outbound one). New events without it are refused; only the stored log reads this way.
STORED_WITHOUT: dict[str, dict[str, Any]] = {
    "contact.made": {"direction": "inbound"},
}


def missing_data(event_type: str, data: Mapping[str, Any]) -> str | None:
    """Why `data` lacks what `event_type` must carry, or None; never repeats a value sent."""
    for name, allowed in REQUIRED_DATA.get(event_type, {}).items():
        value = data.get(name)
        if value in allowed and isinstance(value, str):
            continue
        choices = " or ".join(
            f"{v} ({MEANINGS[(event_type, name, v)]})" if (event_type, name, v) in MEANINGS else v
            for v in allowed
        )
        problem = (
            f"{event_type} needs data.{name}"
            if value is None
            else f"field data.{name} of {event_type} is not one of {', '.join(allowed)} "
            "(the value sent is not repeated)"
        )
        return f"{problem}: send {choices}; it is never guessed"
    return None


def allowed_values(event_type: str, name: str) -> tuple[str, ...] | None:
    """The values a required data field may take, or None when the field is free."""
    return REQUIRED_DATA.get(event_type, {}).get(name)


def read_stored(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """`data` of a stored event, with what earlier releases did not send filled in."""
    defaults = STORED_WITHOUT.get(event_type)
    if not defaults or all(name in data for name in defaults):
        return data
    return {**defaults, **data}


def entry_words(event_type: str, when: Mapping[str, Any]) -> str:
    """A rule entry in words: `contact.made from the person`, or `T with data.F = V`."""
    known = [WORDS[(event_type, n, v)] for n, v in when.items() if (event_type, n, v) in WORDS]
    other = [f"data.{n} = {v}" for n, v in when.items() if (event_type, n, v) not in WORDS]
    return " ".join([event_type, *known, *(["with " + " and ".join(other)] if other else [])])
