"""YAML read with the line of every node kept, so a problem found in the parsed register
is reported at its `file:line`; a key given twice is refused (PyYAML keeps the last)."""

from __future__ import annotations

from typing import Any

import yaml


def data_path(loc: tuple, data: Any) -> tuple:
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


def line_of(lines: dict[tuple, int], path: tuple) -> int:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1


class DuplicateKey(Exception):
    def __init__(self, key: str, line: int):
        self.line = line
        super().__init__(f"key {key!r} appears twice in the same mapping")


def load_yaml(text: str) -> tuple[Any, dict[tuple, int]]:
    """YAML data plus the line of every key and list item, for `file:line` errors."""
    # libyaml's parser when PyYAML has it: ten times quicker, and every command reads
    # the register; the nodes carry the same marks for file:line errors
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[tuple, int] = {}
        record_lines(node, (), lines)
        return loader.construct_document(node), lines
    finally:
        loader.dispose()


def record_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            record_lines(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            record_lines(item, (*path, i), lines)
