//! `tools/check-doc-links.py` (run by CI after `mdbook build docs`) reads
//! Markdown as CommonMark does: a link or a `#` line inside an indented code
//! block is code, not a link or a heading; a setext heading (a line
//! underlined with `===` or `---`) is a heading and its anchor resolves; a
//! paragraph indented under a list item is still prose, its links checked.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A git work tree in a fresh directory with these Markdown files.
fn tree(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wshub-doclinks-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let init = Command::new("git").args(["init", "-q"]).current_dir(&dir).status().expect("git is needed");
    assert!(init.success());
    for (path, text) in files {
        std::fs::write(dir.join(path), text).expect("write");
    }
    dir
}

/// The checker's verdict on a tree: whether it passed, and what it printed.
fn check(dir: &Path) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/check-doc-links.py");
    let out = Command::new("python3").arg(script).arg(dir).output().expect("python3 is needed");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(dir);
    (out.status.success(), text)
}

#[test]
fn links_in_indented_code_are_not_checked() {
    let dir = tree(
        "indented",
        &[("a.md", "# A\n\nAn example:\n\n    [not a link](missing.md)\n    see [x](#nowhere)\n\nProse.\n")],
    );
    let (ok, out) = check(&dir);
    assert!(ok, "code in an indented block was read as links:\n{out}");
}

#[test]
fn a_hash_line_in_indented_code_is_no_heading() {
    let dir = tree(
        "hash",
        &[
            ("a.md", "# A\n\nSee [there](b.md#not-a-heading).\n"),
            ("b.md", "# B\n\nA shell session:\n\n    # not a heading\n    ls\n"),
        ],
    );
    let (ok, out) = check(&dir);
    assert!(!ok && out.contains("b.md#not-a-heading"), "a comment in code was taken for a heading:\n{out}");
}

#[test]
fn setext_headings_are_anchors() {
    let dir = tree(
        "setext",
        &[
            ("a.md", "# A\n\n[one](b.md#first-part), [two](b.md#second-part), [bad](b.md#a-rule)\n"),
            (
                "b.md",
                "First part\n==========\n\ntext\n\nSecond part\n-----------\n\nA rule\n\n---\n\nafter\n",
            ),
        ],
    );
    let (ok, out) = check(&dir);
    assert!(!ok, "a thematic break was taken for a heading:\n{out}");
    assert!(
        !out.contains("#first-part") && !out.contains("#second-part"),
        "setext headings not seen:\n{out}"
    );
    assert!(out.contains("b.md#a-rule") && out.contains("1 broken"), "{out}");
}

#[test]
fn a_paragraph_indented_under_a_list_item_is_still_checked() {
    let dir = tree("list", &[("a.md", "# A\n\n- an item\n\n    more of it, [gone](gone.md)\n")]);
    let (ok, out) = check(&dir);
    assert!(!ok && out.contains("gone.md"), "a list item's paragraph was taken for code:\n{out}");
}

#[test]
fn a_chapter_linking_out_of_the_book_is_broken() {
    let dir = tree("book", &[("README.md", "# R\n\n[chapter](docs/a.md)\n")]);
    std::fs::create_dir_all(dir.join("docs")).unwrap();
    std::fs::create_dir_all(dir.join("examples")).unwrap();
    std::fs::write(dir.join("docs/book.toml"), "[book]\nsrc = \".\"\n").unwrap();
    std::fs::write(dir.join("examples/README.md"), "# Examples\n").unwrap();
    std::fs::write(dir.join("docs/a.md"), "# A\n\n[the examples](../examples/README.md)\n").unwrap();
    let (ok, out) = check(&dir);
    assert!(!ok && out.contains("leaves the book"), "mdBook would not copy ../examples:\n{out}");
}

/// A fence closes only on a fence of its own character at least as long
/// (CommonMark): a ``` line inside a ~~~ block, or inside a ```` block, is
/// the block's text. Read as a close, the real close opened a block that ran
/// to the end of the file, and every link after it went unchecked.
#[test]
fn a_fence_closes_only_on_its_own_kind() {
    let dir = tree(
        "fences",
        &[(
            "a.md",
            "# A\n\n~~~\n```\n~~~\n\n[after tildes](gone1.md)\n\n````\n```\n[in the block](fine.md)\n```\n````\n\n\
             [after four](gone2.md)\n",
        )],
    );
    let (ok, out) = check(&dir);
    assert!(
        !ok && out.contains("gone1.md") && out.contains("gone2.md"),
        "links after a block unchecked:\n{out}"
    );
    assert!(
        !out.contains("fine.md") && out.contains("2 broken"),
        "a link inside a block was checked:\n{out}"
    );
}

/// mdBook's ids come from a heading's rendered text: emphasis with `_`, HTML
/// tags and entities leave no trace in them (`## _Note_ on A &amp; B` is
/// `note-on-a--b`).
#[test]
fn anchors_are_made_from_the_rendered_heading() {
    let dir = tree(
        "slugs",
        &[
            ("a.md", "# A\n\n[one](b.md#note-on-a--b) [two](b.md#foo-x) [three](b.md#snake_case-name)\n"),
            ("b.md", "# B\n\n## _Note_ on A &amp; B\n\n## Foo <span>x</span>\n\n## `snake_case` name\n"),
        ],
    );
    let (ok, out) = check(&dir);
    assert!(ok, "an anchor mdBook makes was refused:\n{out}");
}

/// mdBook renders only the pages SUMMARY.md lists: a chapter's link to
/// another Markdown file in docs/ becomes a link to an .html page that is
/// never written.
#[test]
fn a_chapter_linking_to_a_page_summary_does_not_list_is_broken() {
    let dir = tree("summary", &[]);
    std::fs::create_dir_all(dir.join("docs")).unwrap();
    std::fs::write(dir.join("docs/book.toml"), "[book]\nsrc = \".\"\n").unwrap();
    std::fs::write(dir.join("docs/SUMMARY.md"), "# Summary\n\n- [A](a.md)\n").unwrap();
    std::fs::write(dir.join("docs/a.md"), "# A\n\n[listed](a.md#a) [not listed](notes.md)\n").unwrap();
    std::fs::write(dir.join("docs/notes.md"), "# Notes\n").unwrap();
    let (ok, out) = check(&dir);
    assert!(!ok && out.contains("(notes.md)") && out.contains("1 broken"), "{out}");
}
