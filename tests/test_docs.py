"""The documentation site: it builds strictly, fetches nothing at view time, lists every command
line option, and the Python examples of its pages run (on a tiny model and tiny data)."""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
EXTERNAL = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built as `mkdocs build --strict` builds it (a warning fails the build)."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    out = tmp_path_factory.mktemp("site")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)  # mkdocs.yml names docs/griffe_roles.py from the repository root
        build(load_config(str(ROOT / "mkdocs.yml"), site_dir=str(out), strict=True))
    return out


class _Fetches(HTMLParser):
    """Every URL a browser would fetch on its own when showing a page."""

    ATTRIBUTES = {
        "script": "src",
        "link": "href",
        "img": "src",
        "iframe": "src",
        "source": "src",
        "audio": "src",
        "video": "src",
        "embed": "src",
        "object": "data",
    }

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = self.ATTRIBUTES.get(tag)
        for name, value in attrs:
            if value and (name == wanted or name == "srcset"):
                self.urls.append(value)
            if value and name == "style":
                self.urls += _css_urls(value)


def _css_urls(css: str) -> list[str]:
    urls = re.findall(r"url\(\s*['\"]?([^'\")]+)", css)
    return urls + re.findall(r"@import\s+['\"]([^'\"]+)", css)


def test_site_fetches_nothing_from_a_network(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 20  # the guides, the reference, the results and the example report
    external = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        parser = _Fetches()
        parser.feed(text)
        for style in re.findall(r"<style[^>]*>(.*?)</style>", text, re.DOTALL):
            parser.urls += _css_urls(style)
        external += [
            f"{page.relative_to(site)}: {url}" for url in parser.urls if EXTERNAL.match(url)
        ]
    for sheet in site.rglob("*.css"):
        urls = _css_urls(sheet.read_text(encoding="utf-8"))
        external += [f"{sheet.relative_to(site)}: {url}" for url in urls if EXTERNAL.match(url)]
    assert external == []
    for page in [*pages, *site.rglob("*.css")]:
        assert "fonts.googleapis" not in page.read_text(encoding="utf-8"), page


def test_site_has_the_results_and_their_figures(site):
    for source in (ROOT / "results").glob("*.md"):
        assert (site / "results" / source.with_suffix(".html").name).is_file(), source.name
    page = (site / "results" / "dataset-similarity.html").read_text(encoding="utf-8")
    assert 'src="dataset-similarity.png"' in page
    assert (site / "results" / "dataset-similarity.png").is_file()


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [
        flag
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
        for flag in action.option_strings or [action.metavar or action.dest]
    ]


def test_cli_reference_lists_every_command_and_option(site):
    from repmatch.cli import COMMANDS, build_parser

    page = (site / "reference" / "cli.html").read_text(encoding="utf-8")
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert sorted(commands.choices) == sorted(COMMANDS)
    sections = {"repmatch": (parser, page.split('id="train"')[0])}
    for name, sub in commands.choices.items():
        section = page.split(f'id="{name}"', 1)[1].split("<h2", 1)[0]
        sections[name] = (sub, section)
    missing = [
        f"{name} {option}"
        for name, (sub, section) in sections.items()
        for option in _options(sub)
        if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", section)
    ]
    assert missing == []
    assert sum(len(_options(sub)) for sub, _ in sections.values()) > 100


def _words(rng: random.Random, vocabulary: list[str], n: int) -> str:
    return " ".join(rng.choice(vocabulary) for _ in range(n))


_GOOD = ["good", "great", "fine", "lovely", "superb", "warm"]
_BAD = ["bad", "awful", "dull", "grim", "weak", "cold"]
_FILL = ["the", "a", "movie", "plot", "cast", "was", "quite", "man", "dog", "park", "runs"]


def _sentiment(rng: random.Random, n: int) -> pd.DataFrame:
    labels = [i % 2 for i in range(n)]
    texts = [_words(rng, _FILL, 3) + " " + _words(rng, _GOOD if y else _BAD, 2) for y in labels]
    return pd.DataFrame({"sentence": texts, "label": labels})


def _nli(rng: random.Random, n: int) -> pd.DataFrame:
    premises = [_words(rng, _FILL + _GOOD, 7) for _ in range(n)]
    hypotheses = []
    for i, premise in enumerate(premises):
        words = premise.split()
        if i % 3 == 0:  # full overlap
            hypotheses.append(" ".join(words[:3]))
        elif i % 3 == 1:  # none
            hypotheses.append(_words(rng, _BAD, 3))
        else:  # partial
            hypotheses.append(" ".join(words[:3] + [rng.choice(_BAD)]))
    return pd.DataFrame(
        {"premise": premises, "hypothesis": hypotheses, "label": [i % 3 for i in range(n)]}
    )


@pytest.fixture(scope="module")
def shared_folder(tmp_path_factory) -> Path:
    """A stand-in for ``../shared/data`` with the datasets the examples name, small and
    generated (a sample of 2,000 needs 2,000 rows)."""
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("docs-examples")
    stsb = _nli(rng, 60).rename(columns={"premise": "sentence1", "hypothesis": "sentence2"})
    stsb["label"] = [rng.uniform(0, 5) for _ in range(len(stsb))]
    splits = {
        "sst2/train": _sentiment(rng, 2100),
        "sst2/validation": _sentiment(rng, 60),
        "imdb/train": _sentiment(rng, 2100),
        "snli/validation": _nli(rng, 2100),
        "mnli/validation": _nli(rng, 90),
        "stsb/train": stsb,
    }
    for name, frame in splits.items():
        path = root / "shared" / "data" / f"{name}.jsonl.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            for row in frame.to_dict(orient="records"):
                handle.write(json.dumps(row) + "\n")
    return root


def _pages_with_examples() -> list[Path]:
    return [page for page in sorted(DOCS.rglob("*.md")) if PYTHON_BLOCK.search(page.read_text())]


def test_examples_are_found():
    names = {page.relative_to(DOCS).as_posix() for page in _pages_with_examples()}
    assert {"index.md", "guides/score-select-evaluate.md", "guides/compare-datasets.md"} <= names


@pytest.mark.parametrize(
    "page", _pages_with_examples(), ids=lambda page: page.relative_to(DOCS).as_posix()
)
def test_python_examples_run(page, shared_folder, tiny_model, monkeypatch, one_torch_thread):
    """Every ```python block of a page runs, in order, in one namespace, from a folder beside
    the stand-in ``shared/data``, with the bundled model swapped for a tiny random one."""
    import repmatch.models

    tiny = Path(tiny_model("bert"))
    monkeypatch.setattr(repmatch.models, "_bundled_path", lambda: tiny)
    work = shared_folder / page.relative_to(DOCS).with_suffix("").as_posix().replace("/", "-")
    work.mkdir()
    monkeypatch.chdir(work)
    namespace: dict = {"__name__": "__docs__"}
    for number, block in enumerate(PYTHON_BLOCK.findall(page.read_text()), start=1):
        code = compile(block, f"{page.relative_to(DOCS)} block {number}", "exec")
        exec(code, namespace)
