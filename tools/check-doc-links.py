#!/usr/bin/env python3
"""Checks every relative link in the repository's Markdown files: the file it
names exists inside the repository, and its #anchor is a heading there (as
GitHub and mdBook derive ids from headings). External links (http, https,
mailto) are not fetched. Prints each broken link and exits 1 if any.

    python3 tools/check-doc-links.py [ROOT]   # run by .ci/run after `mdbook build docs`

ROOT is the git work tree to check (default: this repository). A chapter of
the book (docs/) may not link out of docs/, nor to a Markdown file
SUMMARY.md does not list: mdBook builds only those. Links and
headings inside code blocks, fenced or indented, do not count; setext
headings (a line underlined with `===` or `---`) do.
tests/doc_link_check_reads_markdown_as_mdbook_does.rs runs it on small trees.
"""
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
LINK = re.compile(r"(?<!\!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^()\s]+)\)")
# A reference-style link's definition: `[name]: target "title"`.
DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?")
# A fence's run of three or more backticks or tildes; it is closed by a run
# of the same character at least as long with nothing after it (CommonMark).
FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
# The underline of a setext heading (`Title` then `=====` or `-----`).
SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
LIST_ITEM = re.compile(r"^(\s*)([-*+]|\d{1,9}[.)])(\s+|$)")


def indent(line):
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip(" "))


def blocks(text):
    """Each line of the text with what it is, as CommonMark reads it:
    (number, line, kind), kind "code" (in a fenced or an indented code
    block), "heading" with the heading's text (ATX `#` or setext), or "text".
    A line indented four columns past the enclosing list item's content,
    after a blank line or another such line, is code; a paragraph's next line
    of `===` or `---` makes it a heading."""
    fenced = None  # the run of ` or ~ that opened the fenced block we are in
    list_content = None  # the content column of the list item we are in
    previous = "blank"  # "blank", "code", "paragraph" or "other"
    paragraph = []  # (number, line) of the paragraph so far
    out = []
    for number, line in enumerate(text.split("\n"), 1):
        fence = FENCE.match(line)
        if fence and fenced is None and not (fence.group(1)[0] == "`" and "`" in fence.group(2)):
            fenced = fence.group(1)
        elif fenced is not None:
            if fence and fence.group(1)[0] == fenced[0] and len(fence.group(1)) >= len(fenced) \
                    and not fence.group(2).strip():
                fenced = None
        if fence or fenced is not None:
            out.append([number, line, "code"])
            previous, paragraph = "other", []
            continue
        if not line.strip():
            out.append([number, line, "text"])
            previous, paragraph = "blank", []
            continue
        column = indent(line)
        if list_content is not None and previous == "blank" and column < list_content and not LIST_ITEM.match(line):
            list_content = None
        base = list_content or 0
        if column >= base + 4 and previous in ("blank", "code"):
            out.append([number, line, "code"])
            previous, paragraph = "code", []
            continue
        item = LIST_ITEM.match(line)
        if item:
            list_content = len(item.group(1).expandtabs(4)) + len(item.group(2)) + max(1, len(item.group(3)))
        if SETEXT.match(line) and previous == "paragraph" and not item and column >= base:
            heading = " ".join(l.strip() for _, l in paragraph)
            for entry in out[-len(paragraph):]:
                entry[2] = "heading-text"
            out.append([number, line, ("heading", heading)])
            previous, paragraph = "other", []
            continue
        m = HEADING.match(line)
        if m:
            out.append([number, line, ("heading", m.group(2))])
            previous, paragraph = "other", []
            continue
        out.append([number, line, "text"])
        previous = "paragraph"
        paragraph.append((number, line))
    return out


def prose_lines(text):
    """The lines outside code blocks: (number, the line without its inline
    code, the line)."""
    for number, line, kind in blocks(text):
        if kind != "code":
            yield number, re.sub(r"`[^`]*`", "", line), line


def slug(heading):
    """GitHub's and mdBook's id for a heading: lower case, punctuation
    dropped, spaces to dashes."""
    # What mdBook renders: code spans' text kept as it is; emphasis by `_`,
    # HTML tags and entities gone.
    parts = re.split(r"(`[^`]*`)", heading)
    for i in range(0, len(parts), 2):
        part = re.sub(r"<[^>]*>|&#?\w+;", "", parts[i])
        parts[i] = re.sub(r"(?<!\w)_+(?=\S)|(?<=\S)_+(?!\w)", "", part)
    text = "".join(p.strip("`") if i % 2 else p for i, p in enumerate(parts))
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path, cache={}):
    if path not in cache:
        ids, seen = set(), {}
        with open(path, encoding="utf-8") as f:
            for _, _, kind in blocks(f.read()):
                if isinstance(kind, tuple):
                    base = slug(kind[1])
                    n = seen.get(base, 0)
                    seen[base] = n + 1
                    ids.add(base if n == 0 else f"{base}-{n}")
        cache[path] = ids
    return cache[path]


def in_book(path):
    """Whether `path` is inside the mdBook's source (docs/, where book.toml is)."""
    book = os.path.join(ROOT, "docs")
    return os.path.exists(os.path.join(book, "book.toml")) and os.path.commonpath([path, book]) == book


def chapters(cache=[]):
    """The Markdown files SUMMARY.md lists: the only ones mdBook renders."""
    if not cache:
        book = os.path.join(ROOT, "docs")
        listed = set()
        summary = os.path.join(book, "SUMMARY.md")
        if os.path.exists(summary):
            with open(summary, encoding="utf-8") as f:
                for _, line, _ in prose_lines(f.read()):
                    for m in LINK.finditer(line):
                        listed.add(os.path.normpath(os.path.join(book, m.group(1).partition("#")[0])))
        cache.append(listed)
    return cache[0]


def markdown_files():
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    return [p for p in out if "node_modules/" not in p and os.path.exists(os.path.join(ROOT, p))]


def main():
    broken = []
    files = markdown_files()
    for rel in files:
        path = os.path.join(ROOT, rel)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for number, line, raw in prose_lines(text):
            found = list(LINK.finditer(line)) + list(IMAGE.finditer(line))
            found += list(DEFINITION.finditer(raw))
            for m in found:
                target = m.group(1)
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                    continue  # http:, https:, mailto:
                file_part, _, anchor = target.partition("#")
                dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
                where = f"{rel}:{number}: ({target})"
                if os.path.commonpath([dest, ROOT]) != ROOT:
                    broken.append(f"{where} points outside the repository")
                elif in_book(path) and not in_book(dest):
                    broken.append(f"{where} leaves the book (docs/): mdBook does not copy it, the built page's link breaks")
                elif not os.path.exists(dest):
                    broken.append(f"{where} names a file that does not exist")
                elif in_book(path) and dest.endswith(".md") and dest not in chapters():
                    broken.append(f"{where} names a page SUMMARY.md does not list: mdBook does not render it")
                elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
                    broken.append(f"{where} names an anchor that is no heading of {os.path.relpath(dest, ROOT)}")
    for b in broken:
        print(b, file=sys.stderr)
    print(f"check-doc-links: {len(files)} Markdown files, {len(broken)} broken links")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
