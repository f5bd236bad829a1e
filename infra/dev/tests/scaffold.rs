//! `cairn new NAME` in a project: the crate's files, one dependency line and one list entry in
//! functions/registry, and refusals that name the problem and change nothing. (The whole flow,
//! `cairn new` + the crate's tests + the template check + `cairn dev` running it, runs on a
//! scratch copy of the project in `make test`: infra/local/test-scaffold.sh.)
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use std::path::Path;
use std::process::Command;

/// A project with this repository's functions/registry and nothing else.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let registry = format!("{}/../../functions/registry", env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.path().join("functions/registry/src")).unwrap();
    for file in ["Cargo.toml", "src/lib.rs"] {
        std::fs::copy(format!("{registry}/{file}"), dir.path().join("functions/registry").join(file)).unwrap();
    }
    dir
}

fn cairn_new(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cairn")).current_dir(dir).arg("new").args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap()
}

#[test]
fn cairn_new_writes_the_crate_and_its_entry_in_the_one_list() {
    let project = project();
    let before_manifest = read(project.path(), "functions/registry/Cargo.toml");
    let before_list = read(project.path(), "functions/registry/src/lib.rs");
    // From a subdirectory: the project root is found above it.
    let (ok, stdout, stderr) = cairn_new(&project.path().join("functions"), &["nightly-report", "--no-template"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("wrote functions/nightly-report/src/lib.rs"), "{stdout}");
    for file in ["Cargo.toml", "src/lib.rs", "src/main.rs", "tests/nightly_report.rs"] {
        assert!(project.path().join("functions/nightly-report").join(file).is_file(), "{file}");
    }
    let lib = read(project.path(), "functions/nightly-report/src/lib.rs");
    assert!(lib.contains(
        "impl EventData for NightlyReportRequested {\n    const NAME: &'static str = \"app/nightly-report.requested\";"
    ));
    assert!(
        read(project.path(), "functions/nightly-report/src/main.rs")
            .contains("nightly_report::lambda().into_functions()")
    );
    let manifest = read(project.path(), "functions/registry/Cargo.toml");
    assert_eq!(
        manifest.replace("nightly-report = { path = \"../nightly-report\" }\n", ""),
        before_manifest,
        "exactly one dependency line added"
    );
    let list = read(project.path(), "functions/registry/src/lib.rs");
    assert_eq!(list.replace("        nightly_report::lambda(),\n", ""), before_list, "exactly one entry added");
    assert!(list.contains("        nightly_report::lambda(),\n        // cairn new: entries above this line"));

    // Again: refused, and nothing changes.
    let (ok, _, stderr) = cairn_new(project.path(), &["nightly-report", "--no-template"]);
    assert!(!ok);
    assert_eq!(stderr, "cairn: functions/nightly-report already exists\n");
    assert_eq!(read(project.path(), "functions/registry/src/lib.rs"), list);
}

#[test]
fn bad_names_and_broken_projects_are_refused_without_writing() {
    let project = project();
    let (ok, _, stderr) = cairn_new(project.path(), &["Nightly_Report", "--no-template"]);
    assert!(!ok);
    assert_eq!(
        stderr,
        "cairn: `Nightly_Report` is not a workflow name: use lowercase letters, digits and single dashes, starting with a letter (e.g. `nightly-report`)\n"
    );
    // A registry without the marker line: nothing is written, not even the crate.
    let list = project.path().join("functions/registry/src/lib.rs");
    std::fs::write(
        &list,
        read(project.path(), "functions/registry/src/lib.rs").replace("// cairn new: entries above this line", ""),
    )
    .unwrap();
    let (ok, _, stderr) = cairn_new(project.path(), &["nightly", "--no-template"]);
    assert!(!ok);
    assert_eq!(
        stderr,
        "cairn: functions/registry/src/lib.rs has no `// cairn new: entries above this line` line; add it back (see functions/registry in a fresh Cairn project)\n"
    );
    assert!(!project.path().join("functions/nightly").exists());
    let elsewhere = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = cairn_new(elsewhere.path(), &["nightly", "--no-template"]);
    assert!(!ok);
    assert!(stderr.starts_with("cairn: no Cairn project here: functions/registry/Cargo.toml is not in "), "{stderr}");
}
