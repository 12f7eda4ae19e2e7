//! Property test over the parsers a peer's bytes reach, in the normal test run:
//! the committed fuzz seeds, mutated at random (a fixed seed, so a failure
//! reproduces), must never make a parser panic. `fuzz/run.sh` does the same
//! with coverage guidance for longer.

use std::fs;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Interesting bytes for HTTP and JSON parsers.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b":",
    b"%",
    b"%2",
    b"?",
    b"&",
    b"=",
    b",",
    b"\0",
    b"\xff",
    b"\xc3\x28",
    b" ",
    b"{",
    b"\"",
    b"Upgrade: websocket\r\n",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(5) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] = rng.next() as u8;
            }
            1 if !input.is_empty() => {
                let end = (at + rng.below(16)).min(input.len());
                input.drain(at.min(end)..end);
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, t.iter().copied());
            }
            3 if !input.is_empty() => {
                // Duplicate a slice (long headers, repeated fields).
                let start = rng.below(input.len());
                let end = (start + rng.below(64)).min(input.len());
                let piece = input[start..end].repeat(1 + rng.below(8));
                input.splice(at..at, piece);
            }
            _ => input.truncate(at),
        }
    }
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = format!("{}/fuzz/corpus/{target}", env!("CARGO_MANIFEST_DIR"));
    let mut seeds: Vec<Vec<u8>> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!seeds.is_empty(), "{dir} has no seeds");
    seeds.sort();
    seeds
}

fn hammer(target: &str, iterations: usize, parse: impl Fn(&[u8])) {
    let seeds = seeds(target);
    let mut rng = Rng(0x5eed_0000 ^ target.len() as u64);
    for seed in &seeds {
        parse(seed);
    }
    for _ in 0..iterations {
        let mut input = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &mut input);
        parse(&input);
    }
}

#[test]
fn http_request_heads_never_panic() {
    hammer("http_request", 20_000, wshub::fuzzing::http_request);
}

#[test]
fn json_envelopes_never_panic() {
    hammer("envelope", 20_000, wshub::fuzzing::envelope);
}

#[test]
fn binary_frames_never_panic() {
    hammer("binary_frame", 20_000, wshub::fuzzing::binary_frame);
}

#[test]
fn config_files_never_panic() {
    hammer("config_file", 5_000, wshub::fuzzing::config_file);
}

#[test]
fn api_bodies_never_panic() {
    hammer("api_body", 20_000, wshub::fuzzing::api_body);
}

#[test]
fn inbound_frames_never_panic() {
    hammer("inbound_frames", 20_000, wshub::fuzzing::inbound_frames);
}

/// The fuzz targets the tests above hammer, by `fuzz/fuzz_targets` file name.
const HAMMERED: &[&str] =
    &["api_body", "binary_frame", "config_file", "envelope", "http_request", "inbound_frames"];

/// Every fuzz target's corpus is replayed here, so CI's test run catches a
/// parser regression on a committed input without the fuzz build.
#[test]
fn every_fuzz_target_is_hammered_here() {
    let dir = format!("{}/fuzz/fuzz_targets", env!("CARGO_MANIFEST_DIR"));
    let mut targets: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    targets.sort();
    assert_eq!(
        targets, HAMMERED,
        "a fuzz target without a test here (or one gone): add a hammer test and list it"
    );
}
