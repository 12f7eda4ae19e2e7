//! The protocol asks one `Broker` (src/protocol/broker.rs) for everything
//! whose answer depends on where rooms live; only the brokers themselves
//! (`local.rs`, `cluster/`) know whether there is Redis. A protocol file
//! that reaches for the Redis side directly (a `shared.cluster` branch, a
//! `Cluster` call) brings back the branches the seam replaced.

use std::path::Path;

/// What only a broker implementation may write.
const REDIS_SIDE: [&str; 6] =
    ["shared.cluster", "self.cluster", "Option<Cluster>", "Cluster::", "cluster::Join", "Some(cluster)"];

/// The files that implement the seam, and may name the Redis side.
fn is_broker(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name == "broker.rs" || name == "local.rs"
}

/// Whether `line` holds `pattern` as a whole name: `self.cluster` but not
/// `self.cluster_watch` (a field of the room's own state).
fn names(line: &str, pattern: &str) -> bool {
    line.match_indices(pattern).any(|(at, _)| {
        let next = line[at + pattern.len()..].chars().next();
        !pattern.ends_with(|c: char| c.is_alphanumeric() || c == '_')
            || !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn names_match_whole_names_only() {
    assert!(names("if let Some(c) = &shared.cluster {", "shared.cluster"));
    assert!(names("self.cluster.as_ref()", "self.cluster"));
    assert!(!names("self.cluster_watch.as_mut()", "self.cluster"));
    assert!(names("Cluster::join(self, j)", "Cluster::"));
}

#[test]
fn no_protocol_file_but_the_brokers_branches_on_redis() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protocol");
    let mut offences = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("src/protocol is readable") {
        let path = entry.expect("a directory entry").path();
        // `cluster/` is the Redis broker.
        if path.extension().and_then(|e| e.to_str()) != Some("rs") || is_broker(&path) {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&path).expect("a source file is UTF-8");
        for (n, line) in text.lines().enumerate() {
            if REDIS_SIDE.iter().any(|pattern| names(line, pattern)) {
                offences.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(seen > 10, "the protocol's files were not found in {}", dir.display());
    assert!(
        offences.is_empty(),
        "protocol files that branch on Redis past the broker:\n{}",
        offences.join("\n")
    );
}
