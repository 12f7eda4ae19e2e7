#!/usr/bin/env python3
"""Checks every relative link in the repository's Markdown files: the file it
names exists inside the repository, and its #anchor is a heading there (as
GitHub and mdBook derive ids from headings). External links (http, https,
mailto) are not fetched. Prints each broken link and exits 1 if any.

    python3 tools/check-doc-links.py        # run by .ci/run after `mdbook build docs`
"""
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
LINK = re.compile(r"(?<!\!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^()\s]+)\)")
# A reference-style link's definition: `[name]: target "title"`.
DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text):
    """The lines outside fenced code blocks: (number, the line without its
    inline code, the line)."""
    fenced = False
    for number, line in enumerate(text.split("\n"), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, re.sub(r"`[^`]*`", "", line), line


def slug(heading):
    """GitHub's and mdBook's id for a heading: lower case, punctuation
    dropped, spaces to dashes."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path, cache={}):
    if path not in cache:
        ids, seen = set(), {}
        with open(path, encoding="utf-8") as f:
            for _, _, line in prose_lines(f.read()):
                m = HEADING.match(line)
                if m:
                    base = slug(m.group(2))
                    n = seen.get(base, 0)
                    seen[base] = n + 1
                    ids.add(base if n == 0 else f"{base}-{n}")
        cache[path] = ids
    return cache[path]


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
                elif not os.path.exists(dest):
                    broken.append(f"{where} names a file that does not exist")
                elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
                    broken.append(f"{where} names an anchor that is no heading of {os.path.relpath(dest, ROOT)}")
    for b in broken:
        print(b, file=sys.stderr)
    print(f"check-doc-links: {len(files)} Markdown files, {len(broken)} broken links")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
