"""Reading a register file: YAML with every node's line kept, the model's checks, and
problems reported as `file:line: message` (what was wrong, where, and what is expected)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from worker.domain.register import END_ACTIONS, Activity, LegalBasis, Register, Target
from worker.domain.strategies import STRATEGIES


@dataclass(frozen=True)
class RegisterProblem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class RegisterError(Exception):
    """The register file cannot be used; `problems` says what and where."""

    def __init__(self, problems: list[RegisterProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    @property
    def summary(self) -> str:
        """The first problem (file:line: message), and how many more: one log line."""
        if not self.problems:
            return str(self)
        more = len(self.problems) - 1
        return f"{self.problems[0]}" + (f" (and {more} more)" if more else "")


def default_register_path() -> Path:
    """The shipped register (NEGOMARKETS'): the repository's registers/ folder, which a
    wheel carries as worker/registers/ (pyproject's package-dir)."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "registers" / "negomarkets.yaml"
    return installed if installed.is_file() else package.parent / "registers" / "negomarkets.yaml"


def load_register(path: str | Path) -> Register:
    """Load and check a register file; raises RegisterError listing every problem."""
    path = Path(path)
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegisterError(
            [RegisterProblem(shown, 0, f"cannot read the register: {exc.strerror}")]
        ) from None
    except UnicodeDecodeError as exc:
        raise RegisterError(
            [RegisterProblem(shown, _undecodable_line(path, exc), not_utf8_message(exc))]
        ) from None
    return parse_register(text, shown)


def not_utf8_message(exc: UnicodeDecodeError) -> str:
    """Why a text file was refused, and what to do; shared by every file Lethe reads."""
    return (
        f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} cannot be decoded): "
        "save the file as UTF-8 and try again"
    )


def _undecodable_line(path: Path, exc: UnicodeDecodeError) -> int:
    # Positions in `exc` are relative to what the decoder was given, which the io
    # layer may have cut in chunks: decode the whole file again to name the line.
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as again:
        return again.object[: again.start].count(b"\n") + 1
    except OSError:
        pass
    return 0


def parse_register(text: str, shown: str = "<register>") -> Register:
    try:
        data, lines = _load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise RegisterError(
            [RegisterProblem(shown, line, f"not valid YAML: {exc.problem}")]
        ) from None
    except _DuplicateKey as exc:
        raise RegisterError([RegisterProblem(shown, exc.line, str(exc))]) from None
    if not isinstance(data, dict):
        raise RegisterError(
            [RegisterProblem(shown, 1, "a register is a mapping with 'name', 'activities', ...")]
        )
    try:
        register = Register.model_validate(data)
    except ValidationError as exc:
        raise RegisterError(
            [_problem_from_pydantic(err, data, lines, shown) for err in exc.errors()]
        ) from None
    problems = [
        RegisterProblem(shown, _line_of(lines, where), message)
        for where, message in _semantic_problems(register)
    ]
    if problems:
        raise RegisterError(problems)
    return register


def _semantic_problems(register: Register) -> Iterator[tuple[tuple, str]]:
    known_events = set(register.events)
    kinds = set(register.subject_kinds)

    def unknown(types: Iterable[str], where: tuple, field: str) -> Iterator[tuple[tuple, str]]:
        for i, event_type in enumerate(types):
            if event_type not in known_events:
                yield (
                    (*where, field, i),
                    f"unknown event type {event_type!r} in {field}: declare it under 'events' "
                    f"or fix the name (known: {', '.join(sorted(known_events))})",
                )

    yield from unknown(register.holds.place, ("holds",), "place")
    yield from unknown(register.holds.lift, ("holds",), "lift")
    seen: dict[str, int] = {}
    for a, activity in enumerate(register.activities):
        where = ("activities", a)
        if activity.id in seen:
            yield (
                (*where, "id"),
                f"duplicate activity id {activity.id!r} (first used by activity "
                f"#{seen[activity.id] + 1}): each activity needs its own id",
            )
        seen.setdefault(activity.id, a)
        for k, kind in enumerate(activity.subjects):
            if kind not in kinds:
                yield (
                    (*where, "subjects", k),
                    f"activity {activity.id!r}: unknown subject kind {kind!r} "
                    f"(declared kinds: {', '.join(register.subject_kinds)})",
                )
        if not activity.retention:
            yield (
                (*where, "retention"),
                f"activity {activity.id!r} has no retention rule: "
                "art. 5(1)(e) needs a storage limit for every activity",
            )
        targets: set[str] = set()
        for r, rule in enumerate(activity.retention):
            rule_where = (*where, "retention", r)
            for field in ("clock", "opens_on", "ends_on", "reopens_on"):
                yield from unknown(getattr(rule, field) or [], rule_where, field)
            for e, event_type in enumerate(rule.reopens_on or []):
                if event_type not in rule.clock:
                    yield (
                        (*rule_where, "reopens_on", e),
                        f"activity {activity.id!r}: reopens_on {event_type!r} is not one of "
                        f"the rule's clock events ({', '.join(rule.clock) or 'none'})",
                    )
            if rule.consent:
                yield from unknown(rule.consent.given_by, (*rule_where, "consent"), "given_by")
                yield from unknown(
                    rule.consent.otherwise_ends_on, (*rule_where, "consent"), "otherwise_ends_on"
                )
            if not (rule.clock or rule.opens_on or rule.ends_on):
                yield (
                    rule_where,
                    f"activity {activity.id!r}: a retention rule needs a clock, "
                    "opens_on or ends_on event, or nothing ever starts it",
                )
            for t, target in enumerate(rule.targets):
                yield from _target_problems(activity, target, (*rule_where, "targets", t))
                if rule.then == "delete" and target.columns and not target.keeps:
                    # the art. 30 register and the forecast say "delete": a target that
                    # only anonymises would keep rows the DPO believes gone
                    yield (
                        (*rule_where, "targets", t),
                        f"activity {activity.id!r}: the rule says then: delete, but target "
                        f"{target.name!r} keeps its rows (it anonymises columns, and keeps "
                        "none by law): give it delete_rows: true, or say then: anonymise",
                    )
                if target.name in targets:
                    # the sweep, its audit and the dry run know a target by this name alone
                    yield (
                        (*rule_where, "targets", t),
                        f"activity {activity.id!r}: a second target {target.name!r} (same "
                        "table and kinds): a sweep would apply only one of them; give each "
                        "its own kinds, or merge them into one target (one table keyed by "
                        "two columns for the same kinds, a sender and a recipient, is not "
                        "supported yet)",
                    )
                targets.add(target.name)


def _target_problems(
    activity: Activity, target: Target, where: tuple
) -> Iterator[tuple[tuple, str]]:
    """What can be told about a target without the shop (the schema check is in
    worker/shop/binding.py)."""

    label = f"activity {activity.id!r}, target {target.table!r}"
    for column, strategy in target.columns.items():
        if strategy not in STRATEGIES:
            yield (
                (*where, "columns", column),
                f"{label}: unknown strategy {strategy!r} for column {column!r} "
                f"(known: {', '.join(STRATEGIES)})",
            )
    if target.key in target.columns:
        yield (
            (*where, "columns", target.key),
            f"{label}: the key column {target.key!r} cannot be anonymised: "
            "the sweep finds the subject's rows by it",
        )
    for column in sorted(set(target.keeps) & set(target.columns)):
        yield (
            (*where, "keeps"),
            f"{label}: column {column!r} is both kept and anonymised: choose one",
        )
    if target.delete_rows and (target.columns or target.keeps):
        yield (
            (*where, "delete_rows"),
            f"{label}: delete_rows removes whole rows, so columns and keeps mean nothing here: "
            "drop them, or drop delete_rows",
        )
    if not (target.columns or target.delete_rows or target.keeps):
        yield (
            where,
            f"{label}: says nothing to do: give columns with strategies, delete_rows: true, "
            "or keeps (columns a legal duty keeps)",
        )
    if target.keeps and not target.note:
        yield (
            (*where, "keeps"),
            f"{label}: columns kept by law need a note naming the legal duty (art. 17(3)(b))",
        )
    for column in target.suppress:
        if not (target.delete_rows or column in target.columns):
            yield (
                (*where, "suppress"),
                f"{label}: suppress {column!r} only makes sense when the column is erased",
            )
    for kind in target.kinds:
        if kind not in activity.subjects:
            yield (
                (*where, "kinds"),
                f"{label}: kind {kind!r} is not one of the activity's subjects "
                f"({', '.join(activity.subjects)})",
            )


def register_line(path: str | Path, where: tuple) -> int:
    """The line of `where` (a data path such as ("activities", 3, "retention", 0)) in a file."""
    try:
        _, lines = _load_yaml(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, _DuplicateKey):
        return 0
    return _line_of(lines, where)


def _problem_from_pydantic(
    err: dict[str, Any], data: Any, lines: dict[tuple, int], shown: str
) -> RegisterProblem:
    loc = tuple(err["loc"])
    # pydantic puts the member name of a union/literal branch in loc; keep the data path only
    path = _data_path(loc, data)
    context = ""
    if len(path) >= 2 and path[0] == "activities" and isinstance(path[1], int):
        try:
            context = f"activity {data['activities'][path[1]]['id']!r}: "
        except (KeyError, IndexError, TypeError):
            context = f"activity #{path[1] + 1}: "
    field = (
        ".".join(str(p) for p in path[2:] if not isinstance(p, int))
        if context
        else ".".join(str(p) for p in path)
    )
    message = _friendly(err, path)
    return RegisterProblem(shown, _line_of(lines, path), f"{context}{field}: {message}".strip())


def _friendly(err: dict[str, Any], path: tuple) -> str:
    kind = err["type"]
    last = path[-1] if path else ""
    if last == "retention" and (kind == "missing" or err.get("input") is None):
        # `retention:` left empty reads as null: the same mistake as no key at all.
        return "missing: every activity needs a retention rule (art. 5(1)(e))"
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return f"unknown field {last!r} (check its spelling)"
    if kind == "literal_error" and last == "then":
        return f"unknown end action {err['input']!r}: use one of {', '.join(END_ACTIONS)}"
    if kind == "literal_error" and last == "role":
        return f"unknown role {err['input']!r}: use controller or processor"
    if kind == "enum" and last == "legal_basis":
        return (
            f"unknown legal basis {err['input']!r}: use one of "
            f"{', '.join(b.value for b in LegalBasis)}"
        )
    message = err["msg"]
    return message.removeprefix("Value error, ")


def _data_path(loc: tuple, data: Any) -> tuple:
    path: list[Any] = []
    node = data
    for part in loc:
        present = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        )
        if present:
            node = node[part]
            path.append(part)
        elif isinstance(node, dict) or isinstance(part, int):
            path.append(part)
            node = None
    return tuple(path)


def _line_of(lines: dict[tuple, int], path: tuple) -> int:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int):
        self.line = line
        super().__init__(f"key {key!r} appears twice in the same mapping")


def _load_yaml(text: str) -> tuple[Any, dict[tuple, int]]:
    """YAML data plus the line of every key and list item, for `file:line` errors."""
    # libyaml's parser when PyYAML has it: ten times quicker, and every command reads
    # the register; the nodes carry the same marks for file:line errors
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[tuple, int] = {}
        _record_lines(node, (), lines)
        return loader.construct_document(node), lines
    finally:
        loader.dispose()


def _record_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _record_lines(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _record_lines(item, (*path, i), lines)
