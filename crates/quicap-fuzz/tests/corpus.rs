//! Replays the fuzz corpus (`fuzz/corpus/<target>/`: the committed seeds and whatever
//! fuzzing runs added) through each target's checks, so that every input that ever
//! found a bug keeps being tried by the ordinary test suite.

use std::path::Path;

#[test]
fn every_target_has_a_corpus_and_passes_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (name, check) in quicap_fuzz::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("no corpus for target {name} at {}: {e}", dir.display()));
        let mut replayed = 0;
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let input = std::fs::read(&path).expect("corpus file");
            let outcome = std::panic::catch_unwind(|| check(&input));
            assert!(outcome.is_ok(), "target {name} fails on {}", path.display());
            replayed += 1;
        }
        assert!(replayed > 0, "the corpus of target {name} is empty");
    }
}

#[test]
fn every_target_has_a_fuzz_target_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets");
    for (name, _) in quicap_fuzz::TARGETS {
        let file = root.join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("no fuzz target {}: {e}", file.display()));
        assert!(
            text.contains(&format!("quicap_fuzz::{}", function_of(name))),
            "{}",
            file.display()
        );
    }
}

/// The function a target's file calls: its name, but for the two whose names would
/// clash with modules of the crates they check.
fn function_of(name: &str) -> &str {
    match name {
        "relay" => "relay_frame",
        "ip" => "ip_packet",
        other => other,
    }
}
