//! The fuzz targets' smoke run on stable: every seed in `fuzz/seeds/{target}/`
//! and every input a campaign found in `fuzz/regressions/{target}/` goes
//! through the same `lila::fuzzing` function that `cargo fuzz` calls, then
//! a few hundred deterministic mutations of each seed do. The long campaign
//! is `bash fuzz/run.sh` on nightly (docs/RELIABILITY.md).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use lila::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn names_in(dir: &Path, suffix: &str) -> BTreeSet<String> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(suffix)
                .map(String::from)
        })
        .collect()
}

#[test]
fn every_fuzz_target_has_its_cargo_fuzz_binary_and_seeds() {
    let targets: BTreeSet<String> = TARGETS.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(names_in(&fuzz_dir().join("fuzz_targets"), ".rs"), targets);
    assert_eq!(names_in(&fuzz_dir().join("seeds"), ""), targets);
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in &targets {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
        assert!(
            !files_in(&fuzz_dir().join("seeds").join(name)).is_empty(),
            "fuzz/seeds/{name} is empty"
        );
    }
}

#[test]
fn seeds_and_found_inputs_pass_every_target() {
    for (name, target) in TARGETS {
        for dir in ["seeds", "regressions"] {
            for file in files_in(&fuzz_dir().join(dir).join(name)) {
                let data = std::fs::read(&file).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} fails", file.display());
            }
        }
    }
}

/// A small deterministic mutator (xorshift): flips, insertions, deletions,
/// truncations and splices of interesting bytes, so that the smoke run
/// reaches past the seeds without nightly.
struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        const INTERESTING: &[&[u8]] = &[
            b"\"",
            b"\\",
            b"{",
            b"}",
            b"[",
            b"]",
            b"null",
            b"-1",
            b"0",
            b"18446744073709551616",
            b"\xff",
            b"\x00",
            b"\n",
            b"=",
            b"..",
            b"/",
            b"\xe2\x80\xae",
            b"1e999",
        ];
        let mut data = seed.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(data.len() + 1);
            match self.below(5) {
                0 if !data.is_empty() => {
                    let at = at.min(data.len() - 1);
                    data[at] ^= 1 << self.below(8);
                }
                1 => {
                    let piece = INTERESTING[self.below(INTERESTING.len())];
                    data.splice(at..at, piece.iter().copied());
                }
                2 if at < data.len() => {
                    let end = (at + 1 + self.below(8)).min(data.len());
                    data.drain(at..end);
                }
                3 => data.truncate(at),
                _ => {
                    let byte = self.next() as u8;
                    data.insert(at, byte);
                }
            }
        }
        data
    }
}

#[test]
fn mutations_of_the_seeds_pass_every_target() {
    let rounds: usize = std::env::var("LILA_FUZZ_SMOKE_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut mutator = Mutator(0x9e37_79b9_7f4a_7c15);
    let mut runs = 0;
    for (name, target) in TARGETS {
        for file in files_in(&fuzz_dir().join("seeds").join(name)) {
            let seed = std::fs::read(&file).unwrap();
            for round in 0..rounds {
                let data = mutator.mutate(&seed);
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(
                    outcome.is_ok(),
                    "{name}: mutation {round} of {} fails; input (base64 of the bytes): {}",
                    file.display(),
                    base64_of(&data)
                );
                runs += 1;
            }
        }
    }
    assert!(runs > 0);
}

fn base64_of(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}
