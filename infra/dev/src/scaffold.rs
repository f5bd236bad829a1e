//! `cairn new NAME`: a new workflow crate under `functions/NAME` (a typed event, the function,
//! its `lambda()`, `main.rs` and a `TestRun` test) and its entry in the project's one list
//! (`functions/registry`); then `cairn template` (run through cargo, so it links the new crate)
//! adds its resources to template.yaml.
//!
//! Everything is checked before anything is written: a bad name, an existing directory or a
//! registry without its markers changes no file.

use std::path::{Path, PathBuf};

/// The line in `functions/registry/src/lib.rs` new entries go above.
pub const REGISTRY_MARKER: &str = "// cairn new: entries above this line";

/// Why a workflow cannot be scaffolded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScaffoldError {
    /// The name is not kebab-case.
    #[error(
        "`{0}` is not a workflow name: use lowercase letters, digits and single dashes, starting with a letter (e.g. `nightly-report`)"
    )]
    InvalidName(String),
    /// The name is taken.
    #[error("functions/{0} already exists")]
    Exists(String),
    /// The name is a Rust keyword, so the crate could not be named in code.
    #[error(
        "`{0}` is a Rust keyword, and the workflow's crate is named in code as `{1}::lambda()`; choose another name"
    )]
    Keyword(String, String),
    /// Another package or binary of the project has the name.
    #[error("`{name}` is already a package or binary of this project ({manifest}); choose another name")]
    PackageTaken {
        /// The name.
        name: String,
        /// The manifest that declares it.
        manifest: String,
    },
    /// The template's resource names would collide with an existing workflow's.
    #[error(
        "`{name}`'s template resources would be named `{logical}Function`, as `{existing}`'s are; choose another name"
    )]
    LogicalIdTaken {
        /// The name.
        name: String,
        /// The logical id both derive.
        logical: String,
        /// The existing workflow.
        existing: String,
    },
    /// No project here.
    #[error("no Cairn project here: functions/registry/Cargo.toml is not in {0} or any directory above it")]
    NoProject(String),
    /// The registry lacks what `cairn new` edits.
    #[error("{file} has no {what}; add it back (see functions/registry in a fresh Cairn project)")]
    Registry {
        /// The file.
        file: String,
        /// What is missing.
        what: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError + '_ {
    move |err| ScaffoldError::Io { path: path.display().to_string(), message: err.to_string() }
}

/// The project root: the nearest directory at or above `from` with `functions/registry`.
///
/// # Errors
/// [`ScaffoldError::NoProject`].
pub fn project_root(from: &Path) -> Result<PathBuf, ScaffoldError> {
    from.ancestors()
        .find(|dir| dir.join("functions/registry/Cargo.toml").is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| ScaffoldError::NoProject(from.display().to_string()))
}

fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--")
        && !["registry", "serve", "cairn", "tests"].contains(&name);
    if valid { Ok(()) } else { Err(ScaffoldError::InvalidName(name.to_string())) }
}

/// Rust's keywords (strict, reserved and 2024-edition): a crate named one cannot be written as
/// `name::lambda()`.
const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate", "do", "dyn", "else",
    "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "macro", "match", "mod",
    "move", "mut", "override", "priv", "pub", "ref", "return", "self", "static", "struct", "super", "trait", "true",
    "try", "type", "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// Checks that `name` names nothing else of the project at `root`: no Rust keyword, no package
/// or binary of any manifest (the crates under `shared/`, `functions/`, `infra/`, `vercel/`,
/// `tests/`), no dependency the workspace declares, and no workflow whose template resources
/// would share its logical id.
fn check_untaken(root: &Path, name: &str) -> Result<(), ScaffoldError> {
    let ident = name.replace('-', "_");
    if KEYWORDS.contains(&ident.as_str()) {
        return Err(ScaffoldError::Keyword(name.to_string(), ident));
    }
    let mut manifests = vec![root.join("Cargo.toml"), root.join("vercel/Cargo.toml"), root.join("tests/Cargo.toml")];
    for group in ["shared", "functions", "infra"] {
        let Ok(entries) = std::fs::read_dir(root.join(group)) else { continue };
        manifests.extend(entries.flatten().map(|entry| entry.path().join("Cargo.toml")));
    }
    manifests.sort();
    for manifest in manifests {
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        if declared_names(&text).any(|declared| declared == name || declared.replace('-', "_") == ident) {
            let manifest = manifest.strip_prefix(root).unwrap_or(&manifest).display().to_string();
            return Err(ScaffoldError::PackageTaken { name: name.to_string(), manifest });
        }
    }
    let logical = crate::generate::logical_id(name);
    let functions = std::fs::read_dir(root.join("functions")).map_err(io(&root.join("functions")))?;
    let mut existing: Vec<String> =
        functions.flatten().filter_map(|entry| entry.file_name().into_string().ok()).collect();
    existing.sort();
    if let Some(existing) = existing.into_iter().find(|other| crate::generate::logical_id(other) == logical) {
        return Err(ScaffoldError::LogicalIdTaken { name: name.to_string(), logical, existing });
    }
    Ok(())
}

/// The names a manifest declares: the `name` of its `[package]` and `[[bin]]` sections (a
/// comment after it, single or double quotes), and the keys of `[workspace.dependencies]`.
fn declared_names(manifest: &str) -> impl Iterator<Item = &str> {
    let quotes = |c: char| c == '"' || c == '\'';
    let mut section = "";
    manifest.lines().filter_map(move |line| {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.starts_with('[') {
            section = line;
            return None;
        }
        let (key, value) = line.split_once('=')?;
        let key = key.trim().trim_matches(quotes);
        match section {
            "[package]" | "[[bin]]" if key == "name" => Some(value.trim().trim_matches(quotes)),
            "[workspace.dependencies]" => key.split('.').next(),
            _ => None,
        }
    })
}

/// The files of a new workflow crate, relative to `functions/NAME`.
pub fn crate_files(name: &str) -> Vec<(String, String)> {
    let ident = name.replace('-', "_");
    let event = format!("{}Requested", crate::generate::logical_id(name));
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
description = "{name}: on app/{name}.requested, greet the user (scaffolded by cairn new; make it yours)."
edition.workspace = true
rust-version.workspace = true
license.workspace = true
publish.workspace = true

[dependencies]
cairn.workspace = true
cairn-aws.workspace = true
serde.workspace = true
serde_json.workspace = true
lambda_runtime.workspace = true
tokio = {{ workspace = true, features = ["rt-multi-thread", "macros"] }}

[dev-dependencies]
cairn = {{ workspace = true, features = ["testing"] }}
tokio = {{ workspace = true, features = ["rt-multi-thread", "macros"] }}

[lints]
workspace = true
"#
    );
    let lib = format!(
        r#"//! `{name}`: on `app/{name}.requested`, one step that greets the user, then the greeting
//! as the run's output. Scaffolded by `cairn new`: change the event, the steps and
//! [`lambda`] (what the stack gives it), then run `make generate`.

use cairn::prelude::*;
use serde::{{Deserialize, Serialize}};

/// The event that starts a run (`data.userId`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct {event} {{
    /// Who asked.
    pub user_id: String,
}}

impl EventData for {event} {{
    const NAME: &'static str = "app/{name}.requested";
}}

/// The function, ready to register with a driver.
///
/// # Panics
/// Never: the definition is static and valid (its test builds it).
pub fn function() -> Function {{
    Function::on::<{event}>("{name}")
        .handler(|event: Event<{event}>, step: Step| async move {{
            let user_id = event.data.user_id.clone();
            let greeting: String = step.run("greet", || async move {{ Ok(format!("hello, {{user_id}}")) }}).await?;
            Ok(json!({{ "greeting": greeting }}))
        }})
        .expect("the {name} definition is valid")
}}

/// The `{name}` Lambda binary: its functions and what the stack gives it (environment
/// variables with `.env`, SSM parameters with `.reads_parameters`).
pub fn lambda() -> cairn_aws::Lambda {{
    cairn_aws::Lambda::new("{name}", vec![function()])
        .description("{name}: on app/{name}.requested, greet the user")
}}
"#
    );
    let main = format!(
        r#"//! The `{name}` Lambda function: `cairn_aws::run` does the rest.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {{
    cairn_aws::run({ident}::lambda().into_functions()).await
}}
"#
    );
    let test = format!(
        r#"//! `{name}` in a unit test: the production Runner over memory, in milliseconds.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use cairn::testing::TestRun;
use serde_json::json;

#[tokio::test]
async fn greets_the_user_who_asked() {{
    let event = {ident}::{event} {{ user_id: "u1".into() }};
    let mut run = TestRun::new({ident}::function()).typed_event(&event);
    assert_eq!(run.result().await.unwrap(), json!({{"greeting": "hello, u1"}}));
    assert_eq!(run.steps().len(), 1);
}}
"#
    );
    vec![
        ("Cargo.toml".to_string(), cargo),
        ("src/lib.rs".to_string(), lib),
        ("src/main.rs".to_string(), main),
        (format!("tests/{ident}.rs"), test),
    ]
}

/// Scaffolds workflow `name` in the project at `root`; returns the files written or changed.
///
/// # Errors
/// [`ScaffoldError`], before any file is written (or an I/O error while writing).
pub fn scaffold(root: &Path, name: &str) -> Result<Vec<PathBuf>, ScaffoldError> {
    check_name(name)?;
    let dir = root.join("functions").join(name);
    if dir.exists() {
        return Err(ScaffoldError::Exists(name.to_string()));
    }
    check_untaken(root, name)?;
    let manifest_path = root.join("functions/registry/Cargo.toml");
    let list_path = root.join("functions/registry/src/lib.rs");
    let manifest = std::fs::read_to_string(&manifest_path).map_err(io(&manifest_path))?;
    let list = std::fs::read_to_string(&list_path).map_err(io(&list_path))?;
    let manifest = with_dependency(&manifest, name).ok_or_else(|| ScaffoldError::Registry {
        file: "functions/registry/Cargo.toml".into(),
        what: "[dependencies] section".into(),
    })?;
    let list = with_entry(&list, name).ok_or_else(|| ScaffoldError::Registry {
        file: "functions/registry/src/lib.rs".into(),
        what: format!("`{REGISTRY_MARKER}` line"),
    })?;
    let mut written = Vec::new();
    for (relative, text) in crate_files(name) {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
        written.push(path);
    }
    std::fs::write(&manifest_path, manifest).map_err(io(&manifest_path))?;
    std::fs::write(&list_path, list).map_err(io(&list_path))?;
    written.extend([manifest_path, list_path]);
    Ok(written)
}

/// The registry's Cargo.toml with `name` added at the end of its `[dependencies]`.
fn with_dependency(manifest: &str, name: &str) -> Option<String> {
    let start = manifest.find("\n[dependencies]\n")? + "\n[dependencies]\n".len();
    // The next section's `[`, or the end of the file.
    let end = manifest[start..].find("\n[").map_or(manifest.len(), |i| start + i + 1);
    let body = manifest[start..end].trim_end_matches('\n');
    let gap = if end < manifest.len() { "\n" } else { "" };
    Some(format!("{}{body}\n{name} = {{ path = \"../{name}\" }}\n{gap}{}", &manifest[..start], &manifest[end..]))
}

/// The registry's lib.rs with `name`'s `lambda()` above the marker.
fn with_entry(list: &str, name: &str) -> Option<String> {
    let at = list.find(REGISTRY_MARKER)?;
    let line_start = list[..at].rfind('\n').map_or(0, |i| i + 1);
    let indent = &list[line_start..at];
    Some(format!("{}{indent}{}::lambda(),\n{}", &list[..line_start], name.replace('-', "_"), &list[line_start..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kebab_case_and_not_taken_by_the_project() {
        for good in ["nightly-report", "a", "sync2"] {
            assert_eq!(check_name(good), Ok(()));
        }
        for bad in ["Nightly", "nightly_report", "-x", "x-", "a--b", "2fa", "registry", "serve", ""] {
            assert_eq!(check_name(bad), Err(ScaffoldError::InvalidName(bad.to_string())), "{bad}");
        }
    }

    /// A scratch project with the manifests `cairn new` reads.
    fn project(files: &[(&str, &str)]) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let root = std::env::temp_dir().join(format!("cairn-scaffold-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (path, text) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        root
    }

    #[test]
    fn keywords_packages_binaries_and_colliding_resource_names_are_refused_before_writing() {
        let root = project(&[
            ("functions/registry/Cargo.toml", "[package]\nname = \"cairn-functions\"\n\n[dependencies]\n"),
            ("functions/registry/src/lib.rs", "vec![\n    // cairn new: entries above this line\n]\n"),
            ("functions/x-2/Cargo.toml", "[package]\nname = \"x-2\"\n"),
            (
                "shared/cairn-aws/Cargo.toml",
                "[package]\nname = \"cairn-aws\" # the AWS half\n[dependencies]\nname = \"not-a-package\"\n",
            ),
            (
                "Cargo.toml",
                "[workspace]\nmembers = [\"functions/*\"]\n\n[workspace.dependencies]\ntokio = { version = \"1\" }\nserde.workspace = true\n",
            ),
            ("tests/Cargo.toml", "[package]\nname = 'cairn-tests'\n"),
            (
                "vercel/Cargo.toml",
                "[package]\nname = \"cairn-vercel\"\n\n[[bin]]\nname = \"inngest\"\npath = \"api/inngest.rs\"\n",
            ),
        ]);
        let refused = |name: &str| scaffold(&root, name).unwrap_err().to_string();
        assert_eq!(
            refused("type"),
            "`type` is a Rust keyword, and the workflow's crate is named in code as `type::lambda()`; choose another name"
        );
        assert_eq!(
            refused("cairn-aws"),
            "`cairn-aws` is already a package or binary of this project (shared/cairn-aws/Cargo.toml); choose another name"
        );
        assert_eq!(
            refused("inngest"),
            "`inngest` is already a package or binary of this project (vercel/Cargo.toml); choose another name"
        );
        assert_eq!(
            refused("cairn-functions"),
            "`cairn-functions` is already a package or binary of this project (functions/registry/Cargo.toml); choose another name"
        );
        assert_eq!(
            refused("tokio"),
            "`tokio` is already a package or binary of this project (Cargo.toml); choose another name"
        );
        assert_eq!(
            refused("cairn-tests"),
            "`cairn-tests` is already a package or binary of this project (tests/Cargo.toml); choose another name"
        );
        assert_eq!(
            refused("x2"),
            "`x2`'s template resources would be named `X2Function`, as `x-2`'s are; choose another name"
        );
        // Nothing was written, and a name in a dependency table is no package.
        assert_eq!(std::fs::read_dir(root.join("functions")).unwrap().count(), 2);
        assert_eq!(
            std::fs::read_to_string(root.join("functions/registry/src/lib.rs")).unwrap(),
            "vec![\n    // cairn new: entries above this line\n]\n"
        );
        assert!(scaffold(&root, "not-a-package").is_ok());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_registry_gains_one_dependency_and_one_entry() {
        let manifest = "[package]\nname = \"x\"\n\n[dependencies]\ncairn.workspace = true\nhello = { path = \"../hello\" }\n\n[lints]\nworkspace = true\n";
        assert_eq!(
            with_dependency(manifest, "nightly-report").unwrap(),
            "[package]\nname = \"x\"\n\n[dependencies]\ncairn.workspace = true\nhello = { path = \"../hello\" }\nnightly-report = { path = \"../nightly-report\" }\n\n[lints]\nworkspace = true\n"
        );
        let list = "    vec![\n        hello::lambda(),\n        // cairn new: entries above this line\n    ]\n";
        assert_eq!(
            with_entry(list, "nightly-report").unwrap(),
            "    vec![\n        hello::lambda(),\n        nightly_report::lambda(),\n        // cairn new: entries above this line\n    ]\n"
        );
        assert_eq!(with_entry("vec![]", "x"), None);
    }
}
