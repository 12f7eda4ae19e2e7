//! `autobahn/plan.py` splits the Autobahn|Testsuite cases `autobahn/run.sh`
//! runs over several wstest processes: every case the expected results name
//! is in exactly one job of its agent, no job is empty (a wstest given no
//! case never exits), and the deflate sections' shards are about equal.

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;

/// The jobs for these arguments: (name, agent, cases).
fn plan(cases: &str, deflate_agents: &str, shards: &str) -> Vec<(String, String, Vec<String>)> {
    plan_with(&[cases, deflate_agents, shards])
}

/// The jobs for these arguments of plan.py.
fn plan_with(args: &[&str]) -> Vec<(String, String, Vec<String>)> {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{root}/autobahn/plan.py"))
        .args(args)
        .output()
        .expect("python3 is needed to run autobahn/plan.py");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let (name, agent, list) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
            let list: Vec<String> = serde_json::from_str(list).unwrap_or_else(|e| panic!("{line}: {e}"));
            (name.to_owned(), agent.to_owned(), list)
        })
        .collect()
}

fn expected() -> HashMap<String, Vec<String>> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/autobahn/expected-results.json"))
            .expect("expected results");
    let all: HashMap<String, serde_json::Map<String, Value>> = serde_json::from_str(&text).expect("JSON");
    all.into_iter().map(|(agent, cases)| (agent, cases.keys().cloned().collect())).collect()
}

#[test]
fn every_case_runs_once_and_the_deflate_shards_are_even() {
    let jobs = plan(r#"["*"]"#, "wshub c-echo wshub-wss", "3");
    let expected = expected();
    for (agent, as_agent) in [("wshub", "wshub"), ("c-echo", "c-echo"), ("wshub-wss", "wshub")] {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (_, _, cases) in jobs.iter().filter(|(_, a, _)| a == agent) {
            for case in cases {
                *seen.entry(case).or_default() += 1;
            }
        }
        let want = &expected[as_agent];
        assert_eq!(seen.len(), want.len(), "{agent}: not every case is run");
        assert!(seen.values().all(|&n| n == 1), "{agent}: a case runs twice");
        assert!(want.iter().all(|c| seen.contains_key(c.as_str())), "{agent}: a case is missing");
        let shards: Vec<usize> = jobs
            .iter()
            .filter(|(name, a, _)| a == agent && name.contains("deflate"))
            .map(|(_, _, cases)| cases.len())
            .collect();
        assert_eq!(shards.len(), 3, "{agent}: {shards:?}");
        assert!(shards.iter().max().unwrap() - shards.iter().min().unwrap() <= 1, "{agent}: {shards:?}");
    }
}

/// The hang this guards against: with only sections 12 and 13 asked for and
/// the plain agent not among the deflate agents, that agent had a wstest with
/// no case, which never exits.
#[test]
fn an_agent_left_with_no_case_gets_no_job() {
    let jobs = plan(r#"["12.*", "13.*"]"#, "c-echo wshub-wss", "3");
    assert!(jobs.iter().all(|(_, _, cases)| !cases.is_empty()), "{jobs:?}");
    assert!(jobs.iter().all(|(_, agent, _)| agent != "wshub"), "{jobs:?}");
    assert_eq!(jobs.len(), 6, "three shards each for c-echo and wshub-wss: {jobs:?}");
    assert!(plan(r#"["99.*"]"#, "wshub", "3").is_empty(), "no case, no job");
}

/// A case the suite has but autobahn/expected-results.json lacks (a new
/// suite, an entry lost in an edit) is still run, so compare.py reports it
/// as it did when wstest was given the patterns; planned from the expected
/// results alone it would silently never run.
#[test]
fn a_suite_case_the_expected_results_lack_is_still_run() {
    let mut suite: Vec<String> = expected()["wshub"].clone();
    suite.push("1.1.99".to_owned());
    suite.push("12.1.99".to_owned());
    let file = std::env::temp_dir().join(format!("wshub-autobahn-suite-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_string(&suite).unwrap()).unwrap();
    let jobs = plan_with(&[r#"["1.1.*", "12.1.*"]"#, "wshub", "3", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    for (agent, case) in
        [("wshub", "1.1.99"), ("c-echo", "1.1.99"), ("wshub-wss", "1.1.99"), ("wshub", "12.1.99")]
    {
        let runs = jobs.iter().filter(|(_, a, cases)| a == agent && cases.iter().any(|c| c == case)).count();
        assert_eq!(runs, 1, "{agent} {case}: {jobs:?}");
    }
}
