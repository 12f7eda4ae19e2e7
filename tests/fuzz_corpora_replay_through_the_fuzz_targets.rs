//! Every committed fuzz corpus input (`fuzz/corpus/TARGET/*`) goes through the
//! same entry point as its fuzz target (`wshub::fuzzing::TARGET`), so an input
//! that once found a bug, or that reaches deep into a parser, is checked by
//! every `cargo test`, without cargo-fuzz or a nightly flag. The fuzzing itself
//! (`fuzz/run.sh`) only has to look for new inputs.

use std::path::Path;

/// The entry point each fuzz target calls (`fuzz/fuzz_targets/NAME.rs`).
fn entry_point(target: &str) -> Option<fn(&[u8])> {
    Some(match target {
        "api_body" => wshub::fuzzing::api_body,
        "binary_frame" => wshub::fuzzing::binary_frame,
        "config_file" => wshub::fuzzing::config_file,
        "envelope" => wshub::fuzzing::envelope,
        "http_request" => wshub::fuzzing::http_request,
        "inbound_frames" => wshub::fuzzing::inbound_frames,
        _ => return None,
    })
}

#[test]
fn every_corpus_input_passes_its_targets_entry_point() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut targets: Vec<String> = std::fs::read_dir(fuzz.join("fuzz_targets"))
        .expect("fuzz/fuzz_targets")
        .map(|e| e.expect("entry").file_name().to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    targets.sort();
    assert!(!targets.is_empty(), "no fuzz targets found");
    let mut replayed = 0;
    for target in &targets {
        let run = entry_point(target).unwrap_or_else(|| {
            panic!("fuzz target {target} has no entry here: add it to entry_point() in this test")
        });
        let corpus = fuzz.join("corpus").join(target);
        let inputs = std::fs::read_dir(&corpus).unwrap_or_else(|e| panic!("{}: {e}", corpus.display()));
        let mut count = 0;
        for input in inputs {
            let path = input.expect("entry").path();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // A panic here names the input through the message below.
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} panics (replay: bash fuzz/run.sh 1 {target})",
                path.display()
            );
            count += 1;
        }
        assert!(count > 0, "{target}: its corpus {} is empty", corpus.display());
        replayed += count;
    }
    eprintln!("replayed {replayed} inputs through {} targets", targets.len());
}
