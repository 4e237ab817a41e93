"""Reading spec documents (YAML or JSON text) into plain Python data, with limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from service.exceptions import Problem, SpecError

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
"""Largest spec document read (data included); anything bigger is refused before parsing."""


class _SafeNoAliasLoader(yaml.SafeLoader):
    """YAML's safe loader, minus anchors/aliases: they allow exponential 'billion laughs' documents."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not allowed in specs", event.start_mark
            )
        return super().compose_node(parent, index)


def loads(text: str | bytes, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Parse a YAML or JSON document (JSON is YAML, but JSON's parser is faster for big data)."""
    size = len(text)
    if size > max_bytes:
        raise SpecError([Problem("", f"document is {size} bytes; the limit is {max_bytes}")])
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError([Problem("", f"document is not UTF-8 text: {exc}")]) from None
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass  # YAML flow style also starts with "{"; let the YAML parser report errors
        except RecursionError:
            raise SpecError([Problem("", "document nested too deeply")]) from None
    try:
        return yaml.load(text, Loader=_SafeNoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SpecError([Problem("", f"not valid YAML or JSON: {exc}")]) from None
    except RecursionError:
        raise SpecError([Problem("", "document nested too deeply")]) from None


def load_file(path: str | Path, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise SpecError([Problem("", f"cannot read {p}: {exc.strerror}")]) from None
    if size > max_bytes:
        raise SpecError([Problem("", f"{p} is {size} bytes; the limit is {max_bytes}")])
    return loads(p.read_bytes(), max_bytes=max_bytes)
