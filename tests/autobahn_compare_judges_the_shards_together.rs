//! `autobahn/compare.py` judges an agent's reports from several wstest
//! processes as one: a case missing from every shard, reported by two, or
//! with another behaviour in one shard fails the run; and with
//! `AUTOBAHN_UPDATE=1` a partial run rewrites only the cases it was asked for.
//! Run on copies of the script and the expected results in a scratch
//! directory, with reports written by hand (the real suite is long).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Map, Value};

/// A scratch directory holding compare.py and expected-results.json.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wshub-ab-compare-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("autobahn");
    for file in ["compare.py", "expected-results.json"] {
        std::fs::copy(root.join(file), dir.join(file)).expect("copy");
    }
    dir
}

fn expected(dir: &Path) -> Map<String, Value> {
    let text = std::fs::read_to_string(dir.join("expected-results.json")).expect("expected results");
    let all: Map<String, Value> = serde_json::from_str(&text).expect("JSON");
    all["wshub"].as_object().expect("wshub's cases").clone()
}

/// Writes the wshub agent's cases `12.*` as three shard reports (case i to
/// shard i mod 3), each changed by `edit(shard, cases)`; runs compare.py on
/// them with ONLY_CASES=12.* and `env`: whether it passed, and its output.
fn judge(dir: &Path, env: &[(&str, &str)], edit: impl Fn(usize, &mut Map<String, Value>)) -> (bool, String) {
    let cases: Vec<(String, Value)> =
        expected(dir).into_iter().filter(|(c, _)| c.starts_with("12.")).collect();
    let mut reports = Vec::new();
    for shard in 0..3 {
        let mut mine: Map<String, Value> = cases
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 == shard)
            .map(|(_, (c, v))| (c.clone(), v.clone()))
            .collect();
        edit(shard, &mut mine);
        let path = dir.join(format!("shard{shard}.json"));
        std::fs::write(&path, json!({ "wshub": mine }).to_string()).expect("report");
        reports.push(path);
    }
    let out = Command::new("python3")
        .arg(dir.join("compare.py"))
        .arg("wshub")
        .args(&reports)
        .env("ONLY_CASES", "12.*")
        .envs(env.iter().copied())
        .output()
        .expect("python3 is needed");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn one_shard_wrong_fails_the_agent() {
    let dir = scratch("judge");
    let (ok, out) = judge(&dir, &[], |_, _| {});
    assert!(ok, "the expected results themselves failed:\n{out}");
    let (ok, out) = judge(&dir, &[], |shard, cases| {
        if shard == 1 {
            let first = cases.keys().next().unwrap().clone();
            cases.remove(&first);
        }
    });
    assert!(!ok && out.contains("missing from the report"), "{out}");
    let (ok, out) = judge(&dir, &[], |shard, cases| {
        if shard == 2 {
            cases.insert("12.1.1".to_owned(), json!({"behavior": "OK", "behaviorClose": "OK"}));
        }
    });
    assert!(!ok && out.contains("12.1.1: reported by two wstest runs"), "{out}");
    let (ok, out) = judge(&dir, &[], |shard, cases| {
        if shard == 2 {
            let (_, v) = cases.iter_mut().find(|(_, v)| v["behavior"] == "OK").unwrap();
            v["behavior"] = json!("NON-STRICT");
        }
    });
    assert!(!ok && out.contains("behavior NON-STRICT, expected OK"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `AUTOBAHN_UPDATE=1 AUTOBAHN_CASES='["12.*"]' bash autobahn/run.sh`
/// rewrote wshub's expected results with the 12.* cases alone: every other
/// case was gone from the file, and so (plan.py reading it) from every run.
#[test]
fn an_update_from_a_partial_run_keeps_the_other_cases() {
    let dir = scratch("update");
    let before = expected(&dir);
    let (ok, out) = judge(&dir, &[("AUTOBAHN_UPDATE", "1")], |shard, cases| {
        if shard == 0 {
            let first = cases.keys().next().unwrap().clone();
            cases[&first]["behaviorClose"] = json!("INFORMATIONAL");
        }
    });
    assert!(ok, "{out}");
    let after = expected(&dir);
    assert_eq!(after.len(), before.len(), "cases outside 12.* dropped:\n{out}");
    let changed: Vec<&String> = after.keys().filter(|c| after[*c] != before[*c]).collect();
    assert_eq!(changed.len(), 1, "only the case the report changed is rewritten: {changed:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
