"""Reading YAML documents so that every error names file, line and field path."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from federation.errors import InvalidSpec

M = TypeVar("M", bound=BaseModel)

MAX_SPEC_BYTES = 1 << 20  # a spec larger than 1 MiB is refused before parsing


class _Lines:
    """Maps a field path (tuple of keys/indexes) to the YAML line that holds it."""

    def __init__(self, root: yaml.Node | None) -> None:
        self._lines: dict[tuple, int] = {}
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: yaml.Node, path: tuple) -> None:
        self._lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                k = key.value
                self._lines[path + (k,)] = key.start_mark.line + 1
                self._walk(value, path + (k,))
                self._lines[path + (k,)] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, path + (i,))

    @classmethod
    def of(cls, lines: dict[tuple, int]) -> _Lines:
        """From field paths already mapped to lines (a batch script's directives)."""
        out = cls(None)
        out._lines = dict(lines)
        return out

    def line(self, path: tuple) -> int | None:
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return self._lines.get(())


def read_yaml(text: str, source: str) -> tuple[Any, _Lines]:
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise InvalidSpec(f"{source}: file is larger than {MAX_SPEC_BYTES // 1024} KiB")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        raise InvalidSpec(f"{where}: malformed YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise InvalidSpec(f"{source}: malformed YAML: {e}") from None
    return data, _Lines(node)


def read_text(path: str | Path, what: str = "a YAML file") -> str:
    """A spec file's text; InvalidSpec naming the file when it is missing, too big or not UTF-8."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_SPEC_BYTES:
            raise InvalidSpec(f"{p}: file is larger than {MAX_SPEC_BYTES // 1024} KiB")
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidSpec(f"{p}: no such file") from None
    except IsADirectoryError:
        raise InvalidSpec(f"{p}: is a directory, expected {what}") from None
    except UnicodeDecodeError:
        raise InvalidSpec(f"{p}: not UTF-8 text") from None


def read_file(path: str | Path) -> tuple[Any, _Lines, str]:
    source = str(Path(path))
    data, lines = read_yaml(read_text(path), source)
    return data, lines, source


def validate(model: type[M], data: Any, *, source: str = "<spec>", lines: _Lines | None = None) -> M:
    """Validate `data` against `model`; raise InvalidSpec naming where and what."""
    if not isinstance(data, dict):
        kind = "empty document" if data is None else f"a {type(data).__name__}"
        raise InvalidSpec(f"{source}: expected a mapping with apiVersion, kind, metadata and spec, got {kind}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InvalidSpec(describe(e, model, source, lines)) from None


def describe(error: ValidationError, model: type[BaseModel], source: str, lines: _Lines | None) -> str:
    # A typo'd key also makes the real key "missing"; the typo is the error to show.
    errors = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    loc = tuple(first["loc"])
    field = _dotted(loc) or "(document)"
    line = lines.line(loc) if lines else None
    where = f"{source}:{line}" if line else source
    if first["type"] == "extra_forbidden":
        message = f"unknown field '{loc[-1]}'"
        hint = _did_you_mean(model, loc)
        if hint:
            message += f" (did you mean '{hint}'?)"
    elif first["type"] == "missing":
        message = "required field is missing"
    elif first["type"] == "too_long":   # a list or mapping past its max_length (federation.spec.bounds)
        ctx = first.get("ctx", {})
        actual = ctx.get("actual_length")
        actual = len(first["input"]) if actual is None and hasattr(first.get("input"), "__len__") else actual
        got = f" (got {actual})" if actual is not None else ""
        message = f"at most {ctx.get('max_length')} entries{got}"
    else:
        message = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return one_line(f"{where}: {field}: {message}{more}")


def one_line(text: str, limit: int = 500) -> str:
    """Control characters a spec put in a name or value, escaped: an error stays one line."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return out if len(out) <= limit else out[:limit - 1] + "…"


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _did_you_mean(model: type[BaseModel], loc: tuple) -> str | None:
    """Walk the model along loc[:-1] and suggest the closest known field name."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        current = _model_of(fields[part].annotation)
        if current is None:
            return None
    fields = getattr(current, "model_fields", {})
    names = [f.alias or n for n, f in fields.items()]
    match = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    return match[0] if match else None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None
