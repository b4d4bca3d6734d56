"""Reading the YAML files people write (studies, cell configs, cluster profiles), strictly.

PyYAML keeps the last of two equal keys in a mapping without a word, so a study that sets
``epochs`` twice silently runs with one of them; and a file that is not text (a PNG passed by
mistake) raises a ``UnicodeDecodeError`` deep in the reader. Every such file goes through
:func:`read_yaml_file`, which reports either as one line naming the file, the key path and the
line numbers. Stdlib and PyYAML only: the study planner loads it on machines without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlFileError(ValueError):
    """A file that cannot be read as YAML; the message names the file and what is wrong."""


class _DuplicateKey(yaml.YAMLError):
    """Raised while composing; carries the finished one-line message."""


class UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a mapping holding the same key twice (PyYAML keeps the last)."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _refuse_duplicate_keys(node, "")
        return self.construct_document(node)


def _child_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _refuse_duplicate_keys(node: Node, path: str) -> None:
    if isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(item, f"{path}[{index}]")
        return
    if not isinstance(node, MappingNode):
        return
    first_line: dict[str, int] = {}
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:  # ``<<: *anchor`` merges; later keys may override it
            continue
        key = key_node.value if isinstance(key_node, ScalarNode) else str(key_node.value)
        line = key_node.start_mark.line + 1
        if key in first_line:
            raise _DuplicateKey(
                f"{_child_path(path, key)}: duplicate key {key!r} (lines {first_line[key]} "
                f"and {line}); write each key once"
            )
        first_line[key] = line
        _refuse_duplicate_keys(value_node, _child_path(path, key))


def _one_line(error: yaml.YAMLError) -> str:
    """PyYAML's multi-line report as one line: what is wrong and where."""
    problem = getattr(error, "problem", None)
    mark = getattr(error, "problem_mark", None)
    if problem is None:
        return " ".join(str(error).split())
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"


def read_yaml_file(path: str | Path, what: str = "YAML file") -> Any:
    """The parsed content of ``path``; :class:`YamlFileError` (one line) on any problem."""
    path = Path(path)
    if not path.exists():
        raise YamlFileError(f"{what} {path} does not exist")
    if not path.is_file():
        raise YamlFileError(f"{what} {path} is not a file")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise YamlFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        byte = raw[error.start]
        raise YamlFileError(
            f"{path}: not a text file (byte 0x{byte:02x} at offset {error.start} is not UTF-8); "
            f"a {what} is UTF-8 YAML text"
        ) from None
    if "\x00" in text:
        raise YamlFileError(f"{path}: not a text file (it holds NUL bytes); a {what} is YAML text")
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except _DuplicateKey as error:
        raise YamlFileError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise YamlFileError(f"{path}: not valid YAML: {_one_line(error)}") from None
