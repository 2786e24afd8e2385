//! The fuzz targets' short run, part of every test run: each target's seeds,
//! its committed corpus and 20,000 deterministic mutations of those inputs,
//! through the same harnesses libFuzzer drives (`fuzz/`). The long runs and
//! their figures are in `benches/RESULTS.md`.
#![cfg(feature = "gateway")]

use std::fs;
use std::path::{Path, PathBuf};

use tollgate_host::fuzzing::{self, TARGETS};

/// Mutations tried per target, spread over its corpus (at least one per input).
const MUTANTS_PER_TARGET: usize = 20_000;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    files.sort();
    files.iter().map(|f| fs::read(f).expect("a corpus file")).collect()
}

/// A small xorshift, so every run tries the same mutants.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// What libFuzzer's cheapest mutators do: flip, overwrite with an edge byte,
/// insert, delete, duplicate a span, truncate.
fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if at < out.len() => out[at] ^= 1 << rng.below(8),
            1 if at < out.len() => out[at] = [0, 0x7f, 0x80, 0xff, b'"', b'\n', b'{', b'0'][rng.below(8)],
            2 => out.insert(at, rng.next() as u8),
            3 if at < out.len() => {
                out.remove(at);
            }
            4 if at < out.len() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                let span = out[at..end].to_vec();
                out.splice(at..at, span);
            }
            _ => out.truncate(at),
        }
    }
    out
}

#[test]
fn every_seed_reaches_its_targets_deepest_check() {
    for target in TARGETS {
        for (i, seed) in fuzzing::seeds(target).iter().enumerate() {
            // The request-metadata seeds include refused input on purpose; the rest are all valid.
            let deep = fuzzing::run(target, seed);
            let refused_on_purpose = target == "request_metadata" && i > 0 || target == "config" && i == 2;
            assert!(
                deep || refused_on_purpose,
                "{target} seed {i} stopped early: the target tests little"
            );
        }
    }
}

#[test]
fn the_committed_corpora_hold_every_seed() {
    let write = std::env::var_os("TOLLGATE_WRITE_FUZZ_SEEDS").is_some();
    for target in TARGETS {
        let dir = corpus_dir(target);
        for (i, seed) in fuzzing::seeds(target).iter().enumerate() {
            let path = dir.join(format!("seed-{i}"));
            if write {
                fs::create_dir_all(&dir).expect("corpus dir");
                fs::write(&path, seed).expect("write seed");
            }
            let committed = fs::read(&path).unwrap_or_default();
            assert!(
                committed == *seed,
                "{} differs from the seed the harness builds; rerun with TOLLGATE_WRITE_FUZZ_SEEDS=1",
                path.display()
            );
        }
    }
}

#[test]
fn corpora_and_their_mutants_break_no_invariant() {
    for target in TARGETS {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let inputs = corpus(target);
        assert!(!inputs.is_empty(), "{target} has no committed corpus");
        let per_input = (MUTANTS_PER_TARGET / inputs.len()).max(1);
        for input in &inputs {
            fuzzing::run(target, input);
            for _ in 0..per_input {
                fuzzing::run(target, &mutate(input, &mut rng));
            }
        }
    }
}
