//! The number of Redis instances (`--redis` repeated, `redis = [...]`) and
//! of sentinels is bounded like every other count: each instance is a shard
//! with a subscriber thread of its own, and 20,000 of them in a config file
//! made the process abort at start ("failed to set up alternative stack
//! guard page", exit 134) after logging that it could not start its Redis
//! threads. Over the bound is a startup error naming the setting. No Redis
//! is needed: the URLs are checked, never connected to, before the bound.

use std::process::{Command, Stdio};

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_huge_shard_list_or_many_sentinels_are_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("wshub-too-many-shards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("wshub.toml");
    let urls: Vec<String> =
        (0..20_000).map(|i| format!("\"redis://127.0.0.1:{}\"", 1 + i % 60_000)).collect();
    std::fs::write(&file, format!("redis = [{}]\n", urls.join(","))).expect("config file");
    let (code, stderr) = run(&["--config", file.to_str().expect("utf-8 path")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("redis (instances) must be at most"), "{stderr}");

    let mut args: Vec<String> = Vec::new();
    for i in 0..17 {
        args.extend(["--redis-sentinel".to_owned(), format!("127.0.0.1:{}", 26_000 + i)]);
    }
    args.extend(["--redis-sentinel-master".to_owned(), "m".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stderr) = run(&args);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("redis_sentinel (sentinels) must be at most"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
