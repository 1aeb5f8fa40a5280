"""Every `fedctl ...` line in the README's and docs' code blocks parses with the real parser: a command the
docs promise exists, with the options they show.

Read the way a person reads them: CAPITALS (ID, NAME) and <angle> words are placeholders, `# ...` is a
comment, a trailing `&` or `&&`, `;`, `>` ends the command, `cordon|uncordon|drain` is one of each,
`[--opt VALUE]` is optional (the line must parse without it, and with it for at least one of the choices),
and `training list | show ID | cancel ID` is one command per alternative after the last subcommand.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from federation.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*|<[^<>]+>)$")
PLACEHOLDER_VALUE = "1"  # parses as a name, an id or a number
COMMAND_ENDS = {"&", "&&", "||", ";", ">", ">>", "2>", "2>&1", "<"}


def fenced_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of each line inside a ``` fence."""
    out, inside = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            out.append((number, line))
    return out


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote: words between blanks, up to a comment
        return line.split(" #")[0].split()


def commands(line: str) -> list[list[str]]:
    """The words after each `fedctl` on a line (several may share one), up to what ends a shell command."""
    out: list[list[str]] = []
    current: list[str] | None = None
    for word in _words(line):
        if word == "fedctl" or word.endswith("/fedctl"):
            current = []
            out.append(current)
        elif word in COMMAND_ENDS:
            current = None
        elif current is not None:
            current.append(word)
    return out


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _split_at_bars(words: list[str]) -> list[list[str]]:
    """Words split at each `|` word that is outside [brackets]."""
    segments: list[list[str]] = [[]]
    depth = 0
    for word in words:
        if word == "|" and depth == 0:
            segments.append([])
            continue
        depth += word.count("[") - word.count("]")
        segments[-1].append(word)
    return segments


def alternatives(words: list[str], parser: argparse.ArgumentParser) -> list[list[str]]:
    """`training list | show ID`: each segment after a `|` replaces the words from the first segment's last
    subcommand on. A segment that does not start with a subcommand of that level is a shell pipe: the end."""
    first, *rest = _split_at_bars(words)
    start, level, choices = 0, parser, _subcommands(parser)
    for i, word in enumerate(first):
        if word in _subcommands(level):
            start, choices, level = i, _subcommands(level), _subcommands(level)[word]
    out = [first]
    for segment in rest:
        if not segment or segment[0] not in choices:
            break
        out.append(first[:start] + segment)
    return out


@dataclass
class Template:
    """A command's words: each a list of choices (`a|b` gives two), and its optional [groups], each a list
    of alternatives (`[--a | --b]` gives two), each a list of words."""
    words: list[list[str]]
    groups: list[list[list[str]]]
    group_at: list[int]  # where each group goes among the words

    def expand(self, group: int | None = None, choice: int = 0) -> list[list[str]]:
        """Every argv with the optional groups left out, but for alternative `choice` of `group`."""
        items = [list(w) for w in self.words]
        if group is not None:
            at = self.group_at[group]
            items[at:at] = [_choices(w) for w in self.groups[group][choice]]
        return [[_fill(w) for w in argv] for argv in itertools.product(*items)]


def _choices(word: str) -> list[str]:
    return word.split("|") if "|" in word.strip("|") else [word]


def _fill(word: str) -> str:
    if "=" in word and word.startswith("--"):
        option, _, value = word.partition("=")
        return f"{option}={_fill(value)}"
    return PLACEHOLDER_VALUE if PLACEHOLDER.match(word) else word


def template(words: list[str]) -> Template:
    out = Template([], [], [])
    group: list[str] | None = None
    for word in words:
        if group is None and word.startswith("["):
            group, word = [], word[1:]
        if group is None:
            out.words.append(_choices(word))
            continue
        closes = word.endswith("]")
        word = word[:-1] if closes else word
        if word:
            group.append(word)
        if closes:
            out.groups.append([[w for w in part if w] for part in _split_group(group)])
            out.group_at.append(len(out.words))
            group = None
    if group is not None:  # an unclosed bracket: read as literal words
        out.words += [_choices(w) for w in group]
    return out


def _split_group(words: list[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for word in words:
        if word == "|":
            parts.append([])
        else:
            parts[-1].append(word)
    return parts


def parse_error(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """None when `fedctl ARGV` parses (nothing is run); else the parser's message."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            if e.code not in (0, None):
                lines = err.getvalue().strip().splitlines()
                return lines[-1] if lines else f"exit {e.code}"
    return None


def problems(line: str, parser: argparse.ArgumentParser) -> list[str]:
    """What does not parse on a documented line: each required form, and each optional part with none of
    the forms it may join."""
    found = []
    for words in commands(line):
        for alternative in alternatives(words, parser):
            t = template(alternative)
            for argv in t.expand():
                if error := parse_error(parser, argv):
                    found.append(f"fedctl {shlex.join(argv)}\n    {error}")
            for g, group in enumerate(t.groups):
                for c in range(len(group)):
                    tried = t.expand(g, c)
                    errors = [parse_error(parser, argv) for argv in tried]
                    if all(errors):
                        found.append(f"fedctl {shlex.join(tried[0])}\n    {errors[0]}"
                                     + (f" (and in the {len(tried) - 1} other forms)" if len(tried) > 1 else ""))
    return found


def documented_lines() -> list[tuple[str, str]]:
    out = []
    for path in DOCUMENTS:
        if path.exists():
            for number, line in fenced_lines(path.read_text()):
                if commands(line):
                    out.append((f"{path.relative_to(ROOT)}:{number}", line))
    return out


DOCUMENTED = documented_lines()


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


def test_the_docs_show_commands_to_check():
    assert any(where.startswith("README.md:") for where, _ in DOCUMENTED)


@pytest.mark.parametrize(("where", "line"), DOCUMENTED, ids=[where for where, _ in DOCUMENTED])
def test_a_documented_command_parses(where, line, parser):
    found = problems(line, parser)
    assert not found, f"{where}: {line.strip()}\n  " + "\n  ".join(found)


# ------------------------------------------------------------------ the reading itself


def test_a_line_may_hold_several_commands_comments_and_background():
    line = ".venv/bin/fedctl status ID    fedctl logs ID [-f] &   # see `fedctl`"
    assert commands(line) == [["status", "ID"], ["logs", "ID", "[-f]"]]
    assert commands("$ fedctl jobs | head") == [["jobs", "|", "head"]]
    assert commands("echo no command here") == []


def test_bars_between_words_are_alternatives_after_the_last_subcommand(parser):
    words = commands("fedctl training list | show ID | model ID --out m.npz")[0]
    assert alternatives(words, parser) == [["training", "list"], ["training", "show", "ID"],
                                           ["training", "model", "ID", "--out", "m.npz"]]
    assert alternatives(["jobs", "|", "head"], parser) == [["jobs"]]  # a shell pipe


def test_bars_in_a_word_and_optional_brackets_expand():
    t = template(["site", "cordon|drain", "NAME", "[--handover]", "[--a", "X", "|", "--b]"])
    assert t.expand() == [["site", "cordon", "1"], ["site", "drain", "1"]]
    assert t.expand(0) == [["site", "cordon", "1", "--handover"], ["site", "drain", "1", "--handover"]]
    assert t.expand(1, 0)[0] == ["site", "cordon", "1", "--a", "1"]
    assert t.expand(1, 1)[0] == ["site", "cordon", "1", "--b"]


def test_what_does_not_parse_is_reported_with_the_parsers_error(parser):
    assert problems("fedctl site cordon|uncordon|drain NAME [--handover]", parser) == []
    [missing] = problems("fedctl site cordon NAME [--handover]", parser)
    assert "--handover" in missing and "unrecognized arguments" in missing
    [unknown] = problems("fedctl nosuchcommand", parser)
    assert "invalid choice" in unknown
    assert problems("fedctl logs ID [-f] [--bogus]", parser)[0].startswith("fedctl logs 1 --bogus")
