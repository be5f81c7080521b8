"""The right of access (GDPR art. 15): what the register, Lethe's store and the live shop
rows say about one person, as JSON or as an HTML page the DPO can send them.

For each activity of the subject's kind that holds anything about them: the purposes and
legal bases (art. 15(1)(a)), the data categories (b), the recipients (c), the retention
and its deadline (d), holds, the suppression list, the erasures already done (from the
audit) and the rows the register's targets hold in the shop, read live: the target's
columns, and every column of a table whose rows the target deletes. Nothing here is
logged: the report is the person's data, and goes only to the caller.
"""

from __future__ import annotations

import html
from typing import Any

import pendulum
import sqlalchemy as sa
from sqlalchemy import select

from worker.domain.hashing import value_hash
from worker.domain.register import LEGAL_BASIS_LABELS, Register
from worker.pipeline.queries import deadline_rows
from worker.settings import Settings
from worker.shop.binding import (
    BoundTarget,
    ShopUnavailable,
    bind_targets,
    shop_engine,
    unreachable,
)
from worker.store.audit import audit_rows
from worker.store.schema import Hold, Suppression
from worker.store.sessions import reading
from worker.store.suppression import in_force

# Rows shown per target: a person with more orders than this is told how many there are.
MAX_ROWS = 500


def access_report(
    settings: Settings, register: Register, subject: str, matches: dict[str, str]
) -> dict[str, Any]:
    """The art. 15 answer for `subject`; `matches` are values the suppression list may hold
    as keyed hashes (`email`). `activities` is empty when nothing is held about them."""
    now = pendulum.now("UTC")
    kind = subject.split(":", 1)[0]
    lifecycles = {
        r["activity"]: r for r in deadline_rows(settings.database_url, register, now, subject)
    }
    erasures: dict[str, list[dict[str, Any]]] = {}
    for row in audit_rows(settings.database_url, settings.secret, subject=subject):
        erasures.setdefault(row["activity"], []).append(
            {k: row[k] for k in ("erased_at", "target", "columns", "strategy", "outcome", "rows")}
        )
    with reading(settings.database_url) as session:
        holds = [
            {"reason": h.reason, "placed_at": h.placed_at.isoformat()}
            for h in session.scalars(
                select(Hold).where(Hold.subject == subject, Hold.lifted_at.is_(None))
            )
        ]
        suppressed = {}
        for name, value in matches.items():
            entry = session.get(Suppression, value_hash(settings.secret, value))
            suppressed[name] = bool(entry and in_force(entry.opposed_at, entry.subscribed_at))
    engine = shop_engine(settings.shop_database_url)
    # no trigger warning: it would be a log line about this request, and stdout is the report
    bound = bind_targets(
        register, settings.register_path, engine, settings.secret, log_triggers=False
    )
    activities = []
    for activity in register.activities:
        if kind not in activity.subjects:
            continue
        shop_rows = _shop_rows(engine, bound.get(activity.id, []), subject, kind)
        lifecycle = lifecycles.get(activity.id)
        done = erasures.get(activity.id, [])
        if lifecycle is None and not done and not any(t["rows"] for t in shop_rows):
            continue
        activities.append(
            {
                "activity": activity.id,
                "name": activity.name,
                "controller": activity.controller,
                "role": activity.role,
                "purposes": [
                    {
                        "purpose": p.purpose,
                        "legal_basis": p.legal_basis.value,
                        "legal_basis_label": LEGAL_BASIS_LABELS[p.legal_basis],
                        "legal_basis_text": p.legal_basis_text,
                    }
                    for p in activity.purposes
                ],
                "data": list(activity.data),
                "recipients": list(activity.recipients),
                "retention": [
                    {"keep": str(rule.keep), "then": rule.then, "source": rule.source}
                    for rule in activity.retention
                ],
                "lifecycle": lifecycle and {k: v for k, v in lifecycle.items() if k != "subject"},
                "erasures": done,
                "shop_rows": shop_rows,
            }
        )
    return {
        "subject": subject,
        "controller": register.controller.model_dump(),
        "generated_at": now.in_timezone(register.tz).isoformat(),
        "holds": holds,
        "suppression_list": suppressed,
        "activities": activities,
    }


def _shop_rows(
    engine: Any, bound: list[BoundTarget], subject: str, kind: str
) -> list[dict[str, Any]]:
    found = []
    for target in bound:
        if not target.target.applies_to(kind):
            continue
        key = target.key_for(subject)
        table = target.table
        if target.target.delete_rows:
            columns = list(table.c)
        else:
            names = [target.target.key, *target.target.columns, *target.target.keeps]
            columns = [table.c[n] for n in dict.fromkeys(names)]
        rows: list[dict[str, Any]] = []
        total = 0
        if key is not None:
            key_column = table.c[target.target.key]
            try:
                with engine.connect() as connection:
                    total = connection.execute(
                        select(sa.func.count()).select_from(table).where(key_column == key)
                    ).scalar_one()
                    query = select(*columns).where(key_column == key).limit(MAX_ROWS)
                    rows = [
                        {k: _plain(v) for k, v in r.items()}
                        for r in connection.execute(query).mappings()
                    ]
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                raise ShopUnavailable(unreachable(engine, exc)) from None
        found.append(
            {
                "table": table.name,
                "target": target.name,
                "columns": [c.name for c in columns],
                "kept_by_law": list(target.target.keeps),
                "note": target.target.note,
                "rows": total,
                "values": rows,
            }
        )
    return found


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


_LABELS = {
    "title": ("Vos données personnelles", "Your personal data"),
    "intro": (
        "Réponse à votre demande d'accès (article 15 du RGPD)",
        "Answer to your access request (GDPR article 15)",
    ),
    "controller": ("Responsable du traitement", "Controller"),
    "purposes": ("Finalités et bases légales", "Purposes and legal bases"),
    "data": ("Catégories de données", "Categories of data"),
    "recipients": ("Destinataires", "Recipients"),
    "retention": ("Durée de conservation", "Retention"),
    "state": ("État", "State"),
    "anchor": ("Point de départ", "Counted from"),
    "deadline": ("Échéance", "Deadline"),
    "then": ("Ensuite", "Then"),
    "erasures": ("Effacements effectués", "Erasures done"),
    "rows": ("Données détenues", "Data held"),
    "holds": ("Conservation pour litige", "Legal holds"),
    "suppression": ("Liste d'opposition", "Suppression list"),
    "nothing": (
        "Nous ne détenons aucune donnée vous concernant.",
        "We hold no data about you.",
    ),
    "kept": ("Conservé par obligation légale", "Kept by legal obligation"),
}


def _label(name: str) -> str:
    french, english = _LABELS[name]
    return f'{html.escape(french)} <span lang="en">/ {html.escape(english)}</span>'


def render_html(register: Register, report: dict[str, Any]) -> str:
    """The report as one self-contained page, French and English labels side by side; the
    register's own wording (its names, purposes, data categories) as the register gives it."""
    e = html.escape
    parts = [
        '<!doctype html><html lang="fr"><head><meta charset="utf-8">',
        f"<title>{_LABELS['title'][0]} / {_LABELS['title'][1]}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}"
        "span[lang=en]{color:#555}</style></head><body>",
        f"<h1>{_label('title')}</h1><p>{_label('intro')}</p>",
        f"<p><strong>{_label('controller')}</strong>: {e(register.controller.name)}"
        + (f", {e(register.controller.contact)}" if register.controller.contact else "")
        + "</p>",
    ]
    if not report["activities"]:
        parts.append(f"<p>{_label('nothing')}</p>")
    if report["holds"]:
        parts.append(f"<h2>{_label('holds')}</h2><ul>")
        parts += [f"<li>{e(h['placed_at'])}: {e(h['reason'])}</li>" for h in report["holds"]]
        parts.append("</ul>")
    for name, listed in report["suppression_list"].items():
        parts.append(f"<p><strong>{_label('suppression')}</strong> ({e(name)}): {listed}</p>")
    for a in report["activities"]:
        parts.append(f"<h2>{e(a['name'])}</h2>")
        parts.append(f"<h3>{_label('purposes')}</h3><ul>")
        for p in a["purposes"]:
            basis = p["legal_basis_text"] or p["legal_basis_label"]
            parts.append(f"<li>{e(p['purpose'])} — {e(basis)}</li>")
        parts.append(f"</ul><h3>{_label('data')}</h3><ul>")
        parts += [f"<li>{e(d)}</li>" for d in a["data"]]
        parts.append("</ul>")
        if a["recipients"]:
            parts.append(f"<h3>{_label('recipients')}</h3><ul>")
            parts += [f"<li>{e(r)}</li>" for r in a["recipients"]]
            parts.append("</ul>")
        parts.append(f"<h3>{_label('retention')}</h3><ul>")
        parts += [
            f"<li>{e(r['keep'])}, {e(r['then'])} — {e(r['source'])}</li>" for r in a["retention"]
        ]
        parts.append("</ul>")
        lifecycle = a["lifecycle"]
        if lifecycle:
            parts.append("<table>")
            for field, label in (
                ("state", "state"),
                ("anchor_at", "anchor"),
                ("deadline_at", "deadline"),
                ("then", "then"),
            ):
                value = e(str(lifecycle.get(field) or "-"))
                parts.append(f"<tr><th>{_label(label)}</th><td>{value}</td></tr>")
            parts.append("</table>")
        if a["erasures"]:
            parts.append(f"<h3>{_label('erasures')}</h3><ul>")
            parts += [
                f"<li>{e(x['erased_at'])}: {e(x['target'])} ({e(x['strategy'])}, "
                f"{e(x['outcome'])})</li>"
                for x in a["erasures"]
            ]
            parts.append("</ul>")
        for t in a["shop_rows"]:
            if not t["rows"]:
                continue
            parts.append(f"<h3>{_label('rows')}: {e(t['table'])}</h3>")
            if t["kept_by_law"]:
                parts.append(f"<p>{_label('kept')}: {e(t['note'] or '')}</p>")
            parts.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in t["columns"]))
            for row in t["values"]:
                cells = "".join(f"<td>{e(str(row.get(c, '')))}</td>" for c in t["columns"])
                parts.append(f"</tr><tr>{cells}")
            parts.append("</tr></table>")
    parts.append("</body></html>")
    return "\n".join(parts)
