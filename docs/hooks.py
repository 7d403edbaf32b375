"""MkDocs hooks: the pages that are built from the repository rather than written in docs/.

- ``results/``: every file of the repository's ``results/`` folder (the Markdown pages and the
  figures beside them) is added to the site under ``results/``, and the Results section of the
  navigation lists its pages, so nothing is copied into docs/ and a new result page appears by
  itself;
- ``reference/cli.md``: the marker ``<!-- cli-reference -->`` is replaced by every command and
  option of ``repmatch``, read from the argparse parsers (:func:`cli_markdown`), so the reference
  cannot drift from the code.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
CLI_MARKER = "<!-- cli-reference -->"
CLI_PAGE = "reference/cli.md"
RESULTS_OVERVIEW = "results/index.md"

sys.path.insert(0, str(ROOT / "src"))  # document this checkout's code, not an installed copy


def result_pages() -> list[str]:
    """The site paths of the results/ Markdown pages, sorted by file name."""
    return [f"results/{path.name}" for path in sorted(RESULTS.glob("*.md"))]


def on_config(config):
    """Fill the navigation's Results section: the overview, then every results/ page."""
    for entry in config["nav"]:
        if isinstance(entry, dict) and "Results" in entry:
            entry["Results"] = [{"Overview": RESULTS_OVERVIEW}, *result_pages()]
    return config


def on_files(files: Files, config) -> Files:
    """Add every file of results/ (pages, figures, example report) to the site.

    A file that would land where a page is written (``report-example.html`` beside the page
    ``report-example.md`` once URLs end in .html) goes to ``results/files/`` instead; links to it
    from Markdown still name its place in results/.
    """
    added = [
        File(
            f"results/{path.name}",
            src_dir=str(ROOT),
            dest_dir=config["site_dir"],
            use_directory_urls=config["use_directory_urls"],
        )
        for path in sorted(RESULTS.iterdir())
        if path.is_file() and not path.name.startswith(".")
    ]
    pages = {file.dest_uri for file in [*files, *added] if file.is_documentation_page()}
    for file in added:
        if not file.is_documentation_page() and file.dest_uri in pages:
            file.dest_uri = f"results/files/{Path(file.src_uri).name}"
            file.abs_dest_path = str(Path(config["site_dir"]) / file.dest_uri)
        files.append(file)
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri == CLI_PAGE:
        if CLI_MARKER not in markdown:
            raise ValueError(f"docs/{CLI_PAGE} lost its marker {CLI_MARKER}")
        return markdown.replace(CLI_MARKER, cli_markdown())
    return markdown


def cli_markdown() -> str:
    """Markdown for ``repmatch`` and each command: usage, description and every option."""
    from repmatch.cli import build_parser

    parser = build_parser()
    sections = [_command_markdown("repmatch", parser, anchor="repmatch", level=2)]
    for action in parser._subparsers._group_actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                sections.append(
                    _command_markdown(f"repmatch {name}", sub, anchor=name, summary=helps[name])
                )
    return "\n\n".join(sections) + "\n"


def _command_markdown(
    title: str,
    parser: argparse.ArgumentParser,
    *,
    anchor: str,
    summary: str | None = None,
    level: int = 2,
) -> str:
    lines = [f"{'#' * level} `{title}` {{#{anchor}}}", ""]
    if summary:
        lines += [_escape(summary[0].upper() + summary[1:]) + ".", ""]
    if parser.description:
        lines += [_escape(parser.description), ""]
    usage = parser.format_usage().removeprefix("usage: ").strip()
    lines += ["```text", usage, "```", ""]
    formatter = parser._get_formatter()
    for group in parser._action_groups:
        actions = [
            action
            for action in group._group_actions
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
        ]
        if not actions:
            continue
        lines += [f"**{_escape(_group_title(group.title))}**", ""]
        if group.description:
            lines += [_escape(group.description), ""]
        lines += ["| argument | description |", "|---|---|"]
        for action in actions:
            invocation = formatter._format_action_invocation(action)
            text = _escape(formatter._expand_help(action) if action.help else "")
            if action.required and action.option_strings:
                text = f"**required**; {text}"
            lines.append(f"| `{invocation}` | {text} |")
        lines.append("")
    return "\n".join(lines)


def _group_title(title: str | None) -> str:
    """A group's title; argparse's two default groups as a reader would call them."""
    return {"positional arguments": "arguments", None: "options"}.get(title, title)


def _escape(text: str) -> str:
    """Plain text as Markdown: HTML characters escaped, Markdown syntax characters taken
    literally, table cells kept on one line."""
    text = html.escape(text, quote=False)
    text = re.sub(r"([\\`*_\[\]|#])", r"\\\1", text)
    return " ".join(text.split())
