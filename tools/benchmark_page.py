"""Rewrite one marked section of docs/benchmarks.md and keep the rest of the page.

Several tools write to the same page, each between its own pair of HTML comments such as
`<!-- load_test:start -->` and `<!-- load_test:end -->`. A tool replaces only the text
between its markers, or appends its section when the page has none yet.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_PAGE = REPO_ROOT / "docs" / "benchmarks.md"
PAGE_HEADER = (
    "# Benchmarks\n\nMeasured figures of the service; each section is written by the tool it"
    " names.\n"
)


class BenchmarkPageError(ValueError):
    """The page has a marker without its partner, so the section cannot be placed safely."""


def section_markers(name: str) -> tuple[str, str]:
    """Return the start and end markers of the section `name`."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(page: str, name: str, body: str) -> str:
    """Return `page` with the section `name` set to `body` (markers added here)."""
    start_marker, end_marker = section_markers(name)
    section = f"{start_marker}\n{body.strip()}\n{end_marker}\n"
    start = page.find(start_marker)
    end = page.find(end_marker)
    if start == -1 and end == -1:
        base = page if page.strip() else PAGE_HEADER
        return base.rstrip("\n") + "\n\n" + section
    if start == -1 or end == -1 or end < start:
        missing = end_marker if start != -1 else start_marker
        raise BenchmarkPageError(
            f"the page has no {missing} to pair with its other {name} marker; fix or remove"
            " the markers by hand, then rerun"
        )
    after = page[end + len(end_marker) :].lstrip("\n")
    return page[:start] + section + ("\n" + after if after else "")


def write_section(path: Path, name: str, body: str) -> None:
    """Replace the section `name` of the page at `path`, creating the page if needed.

    The page is read right before the write and replaced with a rename, so the window in
    which a concurrent writer of another section could lose its change stays short.
    """
    page = path.read_text(encoding="utf-8") if path.exists() else ""
    updated = replace_section(page, name, body)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(updated, encoding="utf-8")
    os.replace(temporary, path)
    logger.info("Wrote the %s section of %s", name, path)


def git_commit() -> str | None:
    """Return the short commit of the working tree, with "+changes" when it has edits."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+changes" if status.strip() else commit


def configure_logging() -> None:
    """Send INFO logs of a measuring tool to stderr, so that stdout keeps its JSON summary."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("botocore").setLevel(logging.WARNING)
