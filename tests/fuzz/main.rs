//! The fuzz targets' bodies (`fuzz/bodies`, the same code `make fuzz` runs under libFuzzer),
//! each fed its checked-in seeds (`fuzz/seeds/<target>`, crash inputs included) and a few
//! thousand deterministic pseudo-random and mutated inputs: no panic, and each body's
//! properties hold. Runs on stable in a few seconds; needs neither nightly nor cargo-fuzz.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/bodies/mod.rs"]
mod bodies;
mod regressions;

use std::path::PathBuf;

/// Generated inputs per target, on top of the seeds (CEL's parser is slow in a debug build).
fn generated(target: &str) -> usize {
    if target == "cel_match" { 400 } else { 2_000 }
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap()
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// The seed inputs of `target`.
pub(crate) fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files.into_iter().map(|path| (path.clone(), std::fs::read(&path).unwrap())).collect()
}

/// A libFuzzer-style mutation of `input`: flipped bits, replaced, inserted or removed bytes,
/// or a splice with another input.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if at < out.len() => out[at] ^= 1 << rng.below(8),
            1 if at < out.len() => out[at] = [0, 0xff, b'"', b'{', b'9', b'*'][rng.below(6)],
            2 => {
                let len = rng.below(8) + 1;
                let insert = rng.bytes(len);
                out.splice(at..at, insert);
            }
            3 if at < out.len() => {
                let end = (at + rng.below(16) + 1).min(out.len());
                out.drain(at..end);
            }
            4 => {
                let from = rng.below(other.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            _ => {}
        }
    }
    out
}

fn exercise(name: &str, body: fn(&[u8])) {
    let started = std::time::Instant::now();
    let seeds = seeds(name);
    assert!(!seeds.is_empty(), "{name}: no seeds");
    for (path, input) in &seeds {
        let outcome = std::panic::catch_unwind(|| body(input));
        assert!(outcome.is_ok(), "{name}: seed {} failed", path.display());
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    let count = generated(name);
    for case in 0..count {
        let input = if case % 2 == 0 {
            let len = rng.below(512);
            rng.bytes(len)
        } else {
            let (_, seed) = &seeds[rng.below(seeds.len())];
            let (_, other) = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, seed, other)
        };
        if std::panic::catch_unwind(|| body(&input)).is_err() {
            panic!("{name}: generated case {case} failed; its input (put it in fuzz/seeds/{name}): {input:?}");
        }
    }
    eprintln!("{name}: {} seeds + {count} generated inputs in {:?}", seeds.len(), started.elapsed());
}

#[test]
fn every_fuzz_target_has_a_test_and_a_binary() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
    for (name, _) in bodies::TARGETS {
        assert!(manifest.contains(&format!("name = \"{name}\"")), "{name} is not a fuzz binary");
        assert!(fuzz.join(format!("fuzz_targets/{name}.rs")).exists());
    }
    let makefile = std::fs::read_to_string(fuzz.join("../Makefile")).unwrap();
    let listed: Vec<&str> = bodies::TARGETS.iter().map(|(name, _)| *name).collect();
    assert!(makefile.contains(&format!("FUZZ_TARGETS := {}", listed.join(" "))), "make fuzz runs every target");
}

macro_rules! target_tests {
    ($($test:ident => $name:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            let (_, body) = bodies::TARGETS.iter().find(|(name, _)| *name == $name).unwrap();
            exercise($name, *body);
        }
    )*};
}

target_tests! {
    call_request => "call_request",
    lambda_payload => "lambda_payload",
    put_events => "put_events",
    schedule_request => "schedule_request",
    event_pattern => "event_pattern",
    cel_match => "cel_match",
}
