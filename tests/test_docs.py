"""The README and docs/ name only things that exist.

Fast, no network, no TensorFlow: the checks read Markdown and compare what it names with
the sources of truth -

- `deepfake-audio <subcommand> [<action>] [--option]` in code (spans, fenced and indented
  blocks) against `deepfake_audio.cli.build_parser()`, walked through argparse;
- `make <target>` in code against the target lines of the Makefile;
- params keys - `-S [+]key=value` overrides, and backticked dotted names whose first part
  is a top-level key of params.yaml (`tune.max_trials`, `features.kind: image`) - against
  params.yaml, or, for a key params.yaml leaves out, against what the params parser
  accepts (`deepfake_audio.config.params.parse_params`);
- every relative link (file and `#anchor`) against the repository;
- the README's size (the five-minute read) and that it links every docs page.

Each extractor is checked on a fake name as well, so a check that can no longer fail
fails here.
"""

from __future__ import annotations

import argparse
import copy
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_BYTES = 12_000  # "<= 12 KB", whichever way a kilobyte is counted


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if ROOT in path.parents else str(path)


# --- Markdown -> code and prose ---

_FENCE = re.compile(r"^ {0,3}(```+|~~~+)[^\n]*\n(.*?)^ {0,3}\1[ \t]*$", re.M | re.S)
_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


@dataclass(frozen=True)
class Code:
    """One piece of code in a Markdown file: a span, or a block (continuations joined)."""

    text: str
    line: int
    block: bool


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _join_continuations(block: str) -> str:
    return re.sub(r"\\[ \t]*\n", " ", block)


def split_markdown(text: str) -> tuple[list[Code], str]:
    """Code spans and blocks of `text`, and the prose left when they are blanked out.

    Blocks: fenced ones, and runs of lines indented by four or more spaces that start
    after a blank line (a list item's code too; an indented line right after text is that
    paragraph's continuation, as in Markdown).
    """
    codes: list[Code] = []
    chars = list(text)

    def blank(start: int, end: int) -> None:
        for i in range(start, end):
            if chars[i] != "\n":
                chars[i] = " "

    for match in _FENCE.finditer(text):
        codes.append(Code(_join_continuations(match.group(2)), _line_of(text, match.start()), True))
        blank(match.start(), match.end())
    rest = "".join(chars)
    offset, run, run_start, after_blank = 0, [], 0, True
    for line in rest.splitlines(keepends=True):
        if line.startswith(("    ", "\t")) and line.strip() and (run or after_blank):
            if not run:
                run_start = offset
            run.append(line)
        elif run and not line.strip():
            run.append(line)  # a blank line inside an indented block
        elif run:
            codes.append(Code(_join_continuations("".join(run)), _line_of(text, run_start), True))
            blank(run_start, run_start + sum(map(len, run)))
            run = []
        after_blank = not line.strip()
        offset += len(line)
    if run:
        codes.append(Code(_join_continuations("".join(run)), _line_of(text, run_start), True))
        blank(run_start, run_start + sum(map(len, run)))
    rest = "".join(chars)
    for match in _SPAN.finditer(rest):
        span = " ".join(match.group(2).split())
        codes.append(Code(span, _line_of(text, match.start()), False))
        blank(match.start(), match.end())
    return codes, "".join(chars)


# --- shell words ---

_SEPARATORS = {"|", "||", "&&", ";", "&", ">", ">>", "2>", "2>&1", "<", "#"}
_PUNCTUATION = "()[]{},.;:'\"`"


def _words(command: str) -> list[str]:
    """Shell words of the rest of one line, up to a separator or a comment."""
    command = command.split("\n", 1)[0]
    try:
        words = shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote in a span cut short: plain words will do
        words = command.split()
    out = []
    for word in words:
        if word in _SEPARATORS or word.startswith("#"):
            break
        out.append(word)
        if re.search(r"[`;,]|\)$", word):  # `(stop: deepfake-audio server stop)`, prose after
            break
    return out


def _clean(word: str) -> str:
    return word.strip(_PUNCTUATION)


# --- deepfake-audio subcommands and options ---

_TOOL = re.compile(r"(?<![\w./'\"-])deepfake-audio[ \t]+(?=[A-Za-z<\[-])")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option(parser: argparse.ArgumentParser, word: str) -> argparse.Action | None:
    return parser._option_string_actions.get(word.split("=", 1)[0])


def check_command(words: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """What in `deepfake-audio <words>` the parser does not know (empty: all of it exists)."""
    problems: list[str] = []
    current, prog = parser, "deepfake-audio"
    positionals = [a for a in current._actions if not a.option_strings]
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word.startswith("-") and word not in ("-", "--"):
            name = _clean(word).split("=", 1)[0]  # `[--force]`, `--format=json`
            action = _option(current, name)
            if action is None:
                problems.append(f"{prog} has no option {name}")
                continue
            if action.nargs != 0 and "=" not in word:
                i += 1  # its value
            continue
        if not positionals:
            continue
        action = positionals[0]
        if isinstance(action, argparse._SubParsersAction):
            choices = _subparsers(current)
            names = [_clean(n) for n in word.split("|")]
            unknown = [n for n in names if n not in choices]
            if unknown:
                problems += [f"{prog} has no subcommand {n!r}" for n in unknown]
                return problems
            if len(names) > 1:
                return problems  # `server|dataset|...`: nothing more to follow
            current, prog = choices[names[0]], f"{prog} {names[0]}"
            positionals = [a for a in current._actions if not a.option_strings]
            continue
        if action.choices is not None:
            names = [_clean(n) for n in word.split("|")]
            problems += [
                f"{prog} has no {action.dest} {n!r}" for n in names if n not in action.choices
            ]
        if action.nargs not in ("+", "*"):
            positionals = positionals[1:]
    return problems


def commands_in(code: Code) -> Iterator[list[str]]:
    for match in _TOOL.finditer(code.text):
        yield _words(code.text[match.end() :])


# --- make targets ---

_MAKE = re.compile(r"(?<![\w./-])make[ \t]+(?=[A-Za-z-])")
_TARGET_LINE = re.compile(r"^([^\s:=#$][^:=#$]*?)[ \t]*::?(?!=)")


def make_targets(makefile: str) -> set[str]:
    """Names on the left of `name:` rule lines (not recipes, variables or `define` bodies)."""
    targets: set[str] = set()
    in_define = False
    for line in makefile.splitlines():
        word = line.split("#", 1)[0].strip()
        if in_define:
            in_define = word != "endef"
            continue
        if re.match(r"^(?:override\s+)?define\b", word):
            in_define = True
            continue
        match = _TARGET_LINE.match(line)
        if match:
            targets.update(name for name in match.group(1).split() if not name.startswith("."))
    return targets


def targets_in(code: Code) -> Iterator[str]:
    for line in code.text.splitlines() or [""]:
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0]  # `make` in a shell comment is prose
        for match in _MAKE.finditer(line):
            for word in _words(line[match.end() :]):
                if word.startswith("-") or "=" in word:
                    continue  # an option of make, or VAR=value
                yield _clean(word)


# --- params keys ---

_KEY = r"[a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*"
_DOTTED_SPAN = re.compile(rf"^({_KEY}\.[a-z0-9_]+)(\.\*)?(?:\s*[:=]\s*.*)?$")
# Dotted names that are files, not keys: `tune.py`, `model.keras`, `registry.json`.
_FILE_SUFFIXES = {
    "py", "json", "yaml", "yml", "keras", "csv", "txt", "md", "lock", "npy", "png",
    "html", "toml", "ini", "db", "log", "dvc", "pid", "wav", "flac", "tmp",
}  # fmt: skip
_OVERRIDE_KEY = re.compile(r"^(?:[\w./-]+\.ya?ml:)?(?:\+\+|\+|~)?(" + _KEY + r")(?:=|$)")


def params_keys_in(code: Code, top_level: set[str]) -> Iterator[str]:
    """`-S key=value` keys anywhere in code; a span that is a dotted params key itself."""
    for match in re.finditer(r"(?:^|[\s(])(?:-S|--set-param)(?=[ \t])", code.text):
        words = _words(code.text[match.end() :])
        if words:
            key = _OVERRIDE_KEY.match(words[0])
            yield key.group(1) if key else words[0]
    if not code.block:
        match = _DOTTED_SPAN.match(code.text)
        if match:
            key = match.group(1)
            parts = key.split(".")
            if parts[0] in top_level and parts[-1] not in _FILE_SUFFIXES:
                yield key


class ParamsKeys:
    """Which dotted keys params.yaml has, or the params parser accepts with a default."""

    PROBE = "__docs_probe__"

    def __init__(self, raw: dict) -> None:
        from deepfake_audio.config.params import parse_params

        self.raw = raw
        self.parse = parse_params
        parse_params(copy.deepcopy(raw))  # the probe needs a params.yaml that parses

    @property
    def top_level(self) -> set[str]:
        return set(self.raw)

    def exists(self, key: str) -> bool:
        from deepfake_audio.config.params import ParamsError

        node, parts = self.raw, key.split(".")
        for part in parts:
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return True
        probe = copy.deepcopy(self.raw)
        node = probe
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                return False  # below a leaf: `data.path.x`, `features.fmax.x` (null)
            node = child
        node[parts[-1]] = self.PROBE
        try:
            self.parse(probe)
        except ParamsError as exc:
            return "unknown key" not in str(exc)
        return True


@pytest.fixture(scope="module")
def params_keys() -> ParamsKeys:
    return ParamsKeys(yaml.safe_load((ROOT / "params.yaml").read_text()))


def benchmark_figures() -> set[str]:
    """Figure keys of `reports/benchmarks.json` and their dotted prefixes: `features.*`,
    `train.*` and `tune.*` figures share a first part with params keys but are not ones."""
    import json

    path = ROOT / "reports" / "benchmarks.json"
    figures = json.loads(path.read_text()).get("figures", {}) if path.is_file() else {}
    names = set()
    for key in figures:
        parts = key.split(".")
        names.update(".".join(parts[:n]) for n in range(2, len(parts) + 1))
    return names


# --- links ---

_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)


def links_in(prose: str) -> Iterator[str]:
    yield from (m.group(1) for m in _LINK.finditer(prose))
    yield from (m.group(1) for m in _REF_LINK.finditer(prose))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    _, prose = split_markdown(path.read_text())  # a `# comment` in a code block is no heading
    found: set[str] = set()
    seen: dict[str, int] = {}
    for match in re.finditer(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", prose, re.M):
        base = slug(match.group(1))
        n = seen.get(base, 0)
        found.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return found


def check_link(target: str, source: Path) -> str | None:
    """None when `target`, written in `source`, names an existing file (and heading)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
        return None  # http:, https:, mailto:
    path_part, _, fragment = target.partition("#")
    if not path_part:
        path = source  # an anchor on the same page
    else:
        path = (source.parent / path_part).resolve()
        if ROOT not in path.parents and path != ROOT:
            return f"{target}: outside the repository"
    if not path.exists():
        return f"{target}: no such file"
    if fragment and path.suffix == ".md" and fragment not in anchors(path):
        return f"{target}: {_rel(path)} has no heading #{fragment}"
    return None


# --- the checks ---


def _parser() -> argparse.ArgumentParser:
    from deepfake_audio.cli import build_parser

    return build_parser()


def _codes() -> Iterator[tuple[Path, Code]]:
    for path in doc_files():
        codes, _ = split_markdown(path.read_text())
        for code in codes:
            yield path, code


def test_docs_exist() -> None:
    assert README.is_file()
    pages = sorted(DOCS.glob("*.md"))
    assert len(pages) >= 5, f"docs/ holds {len(pages)} pages"


def test_readme_is_a_five_minute_read() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail to docs/"


def test_readme_links_every_docs_page() -> None:
    _, prose = split_markdown(README.read_text())
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links_in(prose)}
    orphans = [_rel(p) for p in sorted(DOCS.rglob("*.md")) if p.resolve() not in linked]
    assert not orphans, f"docs pages the README does not link: {orphans}"


def test_every_deepfake_audio_command_exists() -> None:
    parser = _parser()
    problems, seen = [], 0
    for path, code in _codes():
        for words in commands_in(code):
            seen += 1
            problems += [
                f"{_rel(path)}:{code.line}: {p} (in `deepfake-audio {' '.join(words)}`)"
                for p in check_command(words, parser)
            ]
    assert seen >= 10, f"only {seen} deepfake-audio commands found: is the extraction broken?"
    assert not problems, "\n".join(problems)


def test_every_make_target_exists() -> None:
    targets = make_targets((ROOT / "Makefile").read_text())
    missing, seen = [], 0
    for path, code in _codes():
        for target in targets_in(code):
            seen += 1
            if target not in targets:
                missing.append(f"{_rel(path)}:{code.line}: make {target}")
    assert seen >= 5, f"only {seen} make targets found: is the extraction broken?"
    assert not missing, (
        f"not targets of the Makefile ({', '.join(sorted(targets))}):\n" + "\n".join(missing)
    )


def test_every_params_key_exists(params_keys: ParamsKeys) -> None:
    figures = benchmark_figures()
    missing, seen = [], 0
    for path, code in _codes():
        for key in params_keys_in(code, params_keys.top_level):
            seen += 1
            if not params_keys.exists(key) and not (path.name == "speed.md" and key in figures):
                missing.append(f"{_rel(path)}:{code.line}: {key}")
    assert seen >= 20, f"only {seen} params keys found: is the extraction broken?"
    message = "not params.yaml keys, parser keys, nor (docs/speed.md) benchmark figures:"
    assert not missing, message + "\n" + "\n".join(missing)


def test_every_relative_link_resolves() -> None:
    broken, seen = [], 0
    for path in doc_files():
        _, prose = split_markdown(path.read_text())
        for target in links_in(prose):
            seen += 1
            problem = check_link(target, path)
            if problem:
                broken.append(f"{_rel(path)}: {problem}")
    assert seen >= 10, f"only {seen} links found: is the extraction broken?"
    assert not broken, "\n".join(broken)


# --- the checks can fail ---

SAMPLE = """\
# Title

Run `deepfake-audio frobnicate` and `deepfake-audio server start|stop|status`.

    deepfake-audio server restart
    deepfake-audio predict --model models:/deepfake-audio-cnn@champion --frobnicate a.wav
    deepfake-audio promote --version 3 --force
    make frobnicate BENCH_ARGS="--quick"   # make sure: a comment is not a target
    dvc exp run -S tune.frobnicate=6 -S '+data.protocols.train=x.txt' \\
      -S model.architecture=seed_cnn

```
MLflow UI: http://127.0.0.1:5000 (experiment 'deepfake-audio': ...)
tracking server: http://127.0.0.1:5000  (stop: deepfake-audio server stop)
```

- a list item whose continuation line is indented by four spaces, not code:
    `registry.frobnicate`

Keys: `tune.max_trials`, `features.frobnicate: 3`, `features.lfcc.*`, `tune.py`,
`baseline.components`, `data.path.deeper`. [a page](docs/nope.md), [top](#title),
[bad anchor](#nowhere), [web](https://example.org/x).
"""


def test_self_check_commands_are_caught() -> None:
    codes, _ = split_markdown(SAMPLE)
    parser = _parser()
    problems = [
        p for code in codes for words in commands_in(code) for p in check_command(words, parser)
    ]
    assert sorted(problems) == [
        "deepfake-audio has no subcommand 'frobnicate'",
        "deepfake-audio predict has no option --frobnicate",
        "deepfake-audio server has no action 'restart'",
    ], problems


def test_self_check_make_targets_are_caught() -> None:
    codes, _ = split_markdown(SAMPLE)
    found = [t for code in codes for t in targets_in(code)]
    assert found == ["frobnicate"]
    assert "frobnicate" not in make_targets((ROOT / "Makefile").read_text())
    assert {"demo", "test"} <= make_targets((ROOT / "Makefile").read_text())
    sample = "a b: c\n\t@x\n.PHONY: a\nV := 1\n$(X)/y: z\nd:: e\ndefine f\ng: h\nendef\n\ni: ## j\n"
    assert make_targets(sample) == {"a", "b", "d", "i"}


def test_self_check_params_keys_are_caught(params_keys: ParamsKeys) -> None:
    codes, _ = split_markdown(SAMPLE)
    keys = [k for code in codes for k in params_keys_in(code, params_keys.top_level)]
    assert sorted(keys) == sorted(
        [
            "tune.frobnicate",
            "data.protocols.train",
            "model.architecture",
            "tune.max_trials",
            "features.frobnicate",
            "features.lfcc",
            "baseline.components",
            "data.path.deeper",
            "registry.frobnicate",
        ]
    ), keys
    bad = sorted(k for k in keys if not params_keys.exists(k))
    assert bad == [
        "data.path.deeper",
        "features.frobnicate",
        "registry.frobnicate",
        "tune.frobnicate",
    ]
    assert not params_keys.exists("frobnicate")
    figures = benchmark_figures()
    assert "features.speedup_vs_librosa" in figures and "train.samples_per_second" in figures
    assert "features.frobnicate" not in figures and "tune.frobnicate" not in figures
    # A key params.yaml leaves out but the parser accepts with its default.
    without = ParamsKeys({k: v for k, v in params_keys.raw.items() if k != "baseline"})
    assert "baseline" not in without.raw
    assert without.exists("baseline.components") and not without.exists("baseline.frobnicate")


def test_self_check_links_are_caught(tmp_path: Path) -> None:
    page = ROOT / "SAMPLE.md"  # never written: links resolve against where it would be
    _, prose = split_markdown(SAMPLE)
    targets = list(links_in(prose))
    assert targets == ["docs/nope.md", "#title", "#nowhere", "https://example.org/x"]
    sample = tmp_path / "sample.md"
    sample.write_text(SAMPLE)
    assert check_link("docs/nope.md", page) == "docs/nope.md: no such file"
    assert check_link("#title", sample) is None
    assert check_link("#nowhere", sample) is not None
    assert check_link("https://example.org/x", page) is None
    assert check_link("../../etc/passwd", README) == "../../etc/passwd: outside the repository"


def test_self_check_slugs() -> None:
    assert slug("Several machines") == "several-machines"
    assert slug("`deepfake-audio predict`") == "deepfake-audio-predict"
    assert slug("Where things go (and who keeps them)") == "where-things-go-and-who-keeps-them"
    assert slug("GPU, keras-tuner & DVC") == "gpu-keras-tuner--dvc"
