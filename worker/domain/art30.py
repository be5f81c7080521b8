"""The art. 30 GDPR register, rendered from the same file Lethe enforces.

One source for the register the DPO hands to the CNIL and for the deadlines the
worker applies, so the two cannot drift apart. Activities as controller
(art. 30(1)) and as processor (art. 30(2)) are listed apart, as the regulation
asks for two records. The columns are the seed's: data collected, purposes,
legal basis, retention.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from html import escape

from worker.domain.event_data import entry_words
from worker.domain.linkability import then_text
from worker.domain.register import (
    LEGAL_BASIS_LABELS,
    Activity,
    Entry,
    Purpose,
    Register,
    Rule,
)

FORMATS = ("md", "csv", "html")

_TITLE = "Register of processing activities (GDPR art. 30)"
_SECTIONS = (
    ("controller", "Activities as controller (art. 30(1))"),
    ("processor", "Activities as processor (art. 30(2))"),
)
CSV_COLUMNS = (
    "role",
    "activity_id",
    "activity",
    "controller",
    "data_categories",
    "purpose",
    "legal_basis",
    "retention",
    "retention_source",
    "end_action",
)


def render(register: Register, fmt: str) -> str:
    """The art. 30 register as Markdown, CSV or a printable HTML page."""
    renderers: dict[str, Callable[[Register], str]] = {
        "md": _markdown,
        "csv": _csv,
        "html": _html,
    }
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    return renderers[fmt](register)


def _sections(register: Register) -> Iterator[tuple[str, str, list[Activity]]]:
    for role, heading in _SECTIONS:
        yield role, heading, [a for a in register.activities if a.role == role]


def _legal_basis(purpose: Purpose, *, with_label: bool) -> str:
    label = LEGAL_BASIS_LABELS[purpose.legal_basis]
    if not purpose.legal_basis_text:
        return label
    # The register's own wording is what the DPO signed; the art. 6 label lets
    # a reader who does not read French check which basis it is.
    return f"{purpose.legal_basis_text} — {label}" if with_label else purpose.legal_basis_text


def _duration(rule: Rule) -> str:
    if not rule.keep_by or not rule.keep_by.durations:
        return str(rule.keep)
    each = ", ".join(f"{name}: {keep}" for name, keep in rule.keep_by.durations.items())
    return f"{rule.keep} by default; per {rule.keep_by.field}: {each}"


def _clock(rule: Rule) -> str:
    phrases = []
    if rule.clock:
        latest = "the latest of " if len(rule.clock) > 1 else "the last "
        phrases.append(f"after {latest}{', '.join(map(_words, rule.clock))}")
    if rule.opens_on:
        phrases.append(
            f"opened by {' or '.join(map(_words, rule.opens_on))}, "
            "with no deadline until the clock starts"
        )
    if rule.consent:
        given = [*rule.consent.given_by]
        if rule.consent.flag:
            given.append(f"an event with data.{rule.consent.flag} true")
        otherwise = " or ".join(rule.consent.otherwise_ends_on) or "the end of the process"
        phrases.append(
            f"kept only with consent ({' or '.join(given)}), otherwise ended at once by {otherwise}"
        )
    if rule.ends_on:
        phrases.append(f"ended at once by {' or '.join(map(_words, rule.ends_on))}")
    return "; ".join(phrases)


def _words(entry: Entry) -> str:
    """A rule entry as the art. 30 register says it: `contact.made from the person`."""
    return entry_words(entry.type, entry.when)


def _retention(rule: Rule) -> str:
    return f"{_duration(rule)} {_clock(rule)}".strip()


def _controller_line(register: Register) -> str:
    org = register.controller
    details = [d for d in (org.address, org.contact) if d]
    line = f"{org.name} ({', '.join(details)})" if details else org.name
    return f"{line}; DPO: {org.dpo}" if org.dpo else line


def _holds_line(register: Register) -> str | None:
    if not register.holds.place:
        return None
    lift = " or ".join(register.holds.lift) or "a manual lift"
    return f"{' or '.join(register.holds.place)} suspends every erasure for the person until {lift}"


def _events_used(register: Register) -> list[tuple[str, str]]:
    used = set().union(*(a.event_types for a in register.activities))
    return [(name, text) for name, text in register.events.items() if name in used]


# --- Markdown ---------------------------------------------------------------


def _cell(text: str) -> str:
    # A pipe or a line break would end the table cell early.
    return " ".join(text.split("\n")).replace("|", "\\|")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _markdown(register: Register) -> str:
    out = [f"# {_TITLE}: {register.name}", ""]
    out.append(f"- Controller: {_controller_line(register)}")
    out.append(f"- Dates and durations reckoned in the time zone {register.timezone}")
    if holds := _holds_line(register):
        out.append(f"- Legal holds: {holds}")
    out.append("")
    for role, heading, activities in _sections(register):
        out += [f"## {heading}", ""]
        if not activities:
            out += ["None.", ""]
        for activity in activities:
            out += _markdown_activity(register, activity, role)
    out += ["## Events that start or end retention", ""]
    out += _table(("Event", "Meaning"), [(f"`{n}`", t) for n, t in _events_used(register)])
    return "\n".join(out)


def _markdown_activity(register: Register, activity: Activity, role: str) -> list[str]:
    out = [f"### `{activity.id}` — {_cell(activity.name)}", ""]
    facts = [
        ("Seed section", activity.section or ""),
        ("On behalf of" if role == "processor" else "Controller", activity.controller),
        ("Data subjects", ", ".join(activity.subjects)),
        ("Data collected", "; ".join(activity.data)),
    ]
    if activity.recipients:
        facts.append(("Recipients", "; ".join(activity.recipients)))
    out += _table(("Field", "Value"), facts)
    out += _table(
        ("Purpose", "Legal basis"),
        [(p.purpose, _legal_basis(p, with_label=True)) for p in activity.purposes],
    )
    out += _table(
        ("Retention", "Clock", "Then", "Source"),
        [
            (_duration(r), _clock(r), then_text(register, activity, r), r.source)
            for r in activity.retention
        ],
    )
    return out


# --- CSV --------------------------------------------------------------------


def _csv(register: Register) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for role, _, activities in _sections(register):
        for activity in activities:
            # One row per purpose, as each purpose carries its own legal basis;
            # the activity's retention repeats on each row so a row stands alone.
            retention = " | ".join(_retention(r) for r in activity.retention)
            sources = " | ".join(r.source for r in activity.retention)
            # the end action alone, as a spreadsheet filters it; md and html say what it means
            then = " | ".join(r.then for r in activity.retention)
            for purpose in activity.purposes:
                writer.writerow(
                    (
                        role,
                        activity.id,
                        activity.name,
                        activity.controller,
                        "; ".join(activity.data),
                        purpose.purpose,
                        _legal_basis(purpose, with_label=False),
                        retention,
                        sources,
                        then,
                    )
                )
    return buffer.getvalue()


# --- HTML -------------------------------------------------------------------

# Printed on paper for an authority, so: no script, no external asset, tables
# that repeat their header and do not cut a row across pages.
_CSS = """
@page { size: A4 landscape; margin: 1.5cm; }
body { font: 10pt/1.4 system-ui, sans-serif; color: #111; margin: 1.5em; }
h1 { font-size: 16pt; } h2 { font-size: 13pt; border-bottom: 2px solid #333; margin-top: 2em; }
h3 { font-size: 11pt; margin: 1.5em 0 .3em; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .1em 1em; margin: .3em 0; }
dt { font-weight: 600; } dd { margin: 0; }
table { border-collapse: collapse; width: 100%; margin: .4em 0 1em; }
th, td { border: 1px solid #999; padding: .3em .5em; text-align: left; vertical-align: top; }
th { background: #eee; } thead { display: table-header-group; } tr { break-inside: avoid; }
ul { margin: 0; padding-left: 1.1em; } p { margin: 0 0 .3em; }
.source { font-style: italic; color: #333; }
"""


def _dl(facts: list[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts if v)
    return f"<dl>{items}</dl>"


def _html(register: Register) -> str:
    title = f"{_TITLE}: {register.name}"
    facts = [
        ("Register", register.name),
        ("Controller", _controller_line(register)),
        ("Time zone of dates and durations", register.timezone),
        ("Legal holds", _holds_line(register) or ""),
    ]
    out = [
        "<!DOCTYPE html>",
        '<html lang="fr">',
        '<head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<header><h1>{escape(title)}</h1>{_dl(facts)}</header>",
    ]
    for role, heading, activities in _sections(register):
        out.append(f"<section><h2>{escape(heading)}</h2>")
        if not activities:
            out.append("<p>None.</p>")
        out += [_html_activity(register, a, role) for a in activities]
        out.append("</section>")
    out.append("<section><h2>Events that start or end retention</h2><table>")
    out.append("<thead><tr><th>Event</th><th>Meaning</th></tr></thead><tbody>")
    out += [
        f"<tr><td><code>{escape(n)}</code></td><td>{escape(t)}</td></tr>"
        for n, t in _events_used(register)
    ]
    out += ["</tbody></table></section>", "</body>", "</html>", ""]
    return "\n".join(out)


def _html_activity(register: Register, activity: Activity, role: str) -> str:
    facts = [
        ("Seed section", activity.section or ""),
        ("On behalf of" if role == "processor" else "Controller", activity.controller),
        ("Data subjects", ", ".join(activity.subjects)),
        ("Recipients", "; ".join(activity.recipients)),
    ]
    # Data and retention span every purpose row, as in the seed's table.
    span = len(activity.purposes)
    data = "<ul>" + "".join(f"<li>{escape(d)}</li>" for d in activity.data) + "</ul>"
    retention = "".join(
        f"<p><strong>{escape(_duration(r))}</strong> {escape(_clock(r))}</p>"
        f"<p>Then: {escape(then_text(register, activity, r))}</p>"
        f'<p class="source">{escape(r.source)}</p>'
        for r in activity.retention
    )
    rows = []
    for i, purpose in enumerate(activity.purposes):
        cells = f"<td>{escape(purpose.purpose)}</td>"
        cells += f"<td>{escape(_legal_basis(purpose, with_label=True))}</td>"
        if i == 0:
            cells = f'<td rowspan="{span}">{data}</td>{cells}<td rowspan="{span}">{retention}</td>'
        rows.append(f"<tr>{cells}</tr>")
    return (
        f'<article id="{escape(activity.id)}">'
        f"<h3><code>{escape(activity.id)}</code> — {escape(activity.name)}</h3>"
        f"{_dl(facts)}"
        "<table><thead><tr><th>Data collected</th><th>Purpose</th><th>Legal basis</th>"
        "<th>Retention</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></article>"
    )
