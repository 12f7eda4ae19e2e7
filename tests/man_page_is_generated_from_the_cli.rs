//! `wshub man` prints the man page (the .deb ships it as wshub(1), which the
//! systemd unit's `Documentation=` names), generated from the same CLI
//! definition as `wshub --help`: every flag and subcommand in one is in the other.

use std::io::Write;
use std::process::{Command, Stdio};

fn wshub(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wshub")).args(args).output().expect("run wshub");
    assert!(out.status.success(), "wshub {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn the_man_page_names_every_flag_of_help() {
    let roff = wshub(&["man"]);
    assert!(roff.contains(".TH wshub 1"), "not a section-1 man page:\n{roff}");
    // roff writes a flag's dashes as `\-`.
    let text = roff.replace("\\-", "-");
    let help = wshub(&["--help"]);
    let flags: Vec<&str> = help
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .collect();
    assert!(flags.len() > 40, "--help parsed to too few flags: {flags:?}");
    for flag in flags {
        assert!(text.contains(flag), "{flag} is in --help but not in the man page");
    }
    for tool in ["genconfig", "gentoken"] {
        assert!(text.contains(tool), "the man page does not name {tool}");
    }
}

#[test]
fn man_renders_it() {
    if Command::new("man").arg("--version").output().is_err() {
        eprintln!("skipped: no man(1) here");
        return;
    }
    let roff = wshub(&["man"]);
    let mut man = Command::new("man")
        .args(["-l", "-"])
        .env("MANWIDTH", "100")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn man");
    man.stdin.take().expect("stdin").write_all(roff.as_bytes()).expect("write roff");
    let out = man.wait_with_output().expect("man");
    assert!(out.status.success(), "{out:?}");
    // Bold and underline come as overstrikes (`N\x08N`): keep the last character.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&out.stdout).chars() {
        if c == '\x08' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    assert!(text.contains("NAME") && text.contains("SYNOPSIS") && text.contains("--bind"), "{text}");
}

/// The .deb ships wshub(1) only: the page names no other page (clap_mangen's
/// default lists `wshub-genconfig(1)` and the like, pages that do not exist)
/// and carries each subcommand's own flags instead.
#[test]
fn the_man_page_names_no_page_that_is_not_shipped() {
    let roff = wshub(&["man"]);
    let text = roff.replace("\\-", "-");
    assert!(!text.contains("wshub-genconfig(") && !text.contains("wshub-gentoken("), "{text}");
    assert!(!text.contains("wshub-help("), "{text}");
    let subcommands =
        text.split(".SH SUBCOMMANDS").nth(1).unwrap_or_else(|| panic!("no SUBCOMMANDS:\n{text}"));
    for flag in ["--sub", "--rooms", "--ttl", "--config"] {
        assert!(subcommands.contains(flag), "gentoken's {flag} is not in the man page:\n{subcommands}");
    }
    assert!(
        subcommands.contains("wshub genconfig") && subcommands.contains("wshub gentoken"),
        "{subcommands}"
    );
}
