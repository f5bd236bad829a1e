//! Tests that need an outside tool (moto, cargo-lambda, the aws CLI, node and the `inngest`
//! package, Chromium) ask for it here, in one place. On a developer's machine a missing tool
//! skips the test with a message; under CI (the `CI` variable set to anything but empty, `0`
//! or `false`) it fails the test, naming the tool and how `make test` provides it, so a green CI
//! run means every test really ran.
//!
//! ```
//! # fn moto_endpoint() -> Option<String> {
//! let Some(endpoint) = cairn::testing::require_env(
//!     "CAIRN_TEST_AWS_ENDPOINT",
//!     "moto",
//!     "make test starts it and sets CAIRN_TEST_AWS_ENDPOINT",
//! ) else {
//!     return None; // skipped locally; under CI the call above panicked
//! };
//! # Some(endpoint) }
//! ```

/// What to do about a missing tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Skip the test, printing this line.
    Skip(String),
    /// Fail the test with this message (CI is set).
    Fail(String),
}

/// Whether the value of the `CI` variable asks for strict runs: set, non-empty, and neither
/// `0` nor `false` (any case).
pub fn is_ci(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        let v = v.trim();
        !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false")
    })
}

/// The decision for a missing `tool` (`install`: how `make test` provides it), given the value
/// of `CI`. The one rule every tool-needing test follows.
pub fn missing(ci: Option<&str>, tool: &str, install: &str) -> Missing {
    if is_ci(ci) {
        Missing::Fail(format!("{tool} is missing and CI is set, so this test fails instead of skipping: {install}"))
    } else {
        Missing::Skip(format!("skipped: {tool} is missing: {install}"))
    }
}

/// `found` if the tool is there; else skips (`None`, printing why) or, under CI, panics with
/// the message of [`missing`].
///
/// # Panics
/// When `found` is `None` and `CI` is set.
#[track_caller]
pub fn require<T>(found: Option<T>, tool: &str, install: &str) -> Option<T> {
    if found.is_some() {
        return found;
    }
    match missing(std::env::var("CI").ok().as_deref(), tool, install) {
        Missing::Skip(line) => {
            eprintln!("{line}");
            None
        }
        Missing::Fail(message) => panic!("{message}"),
    }
}

/// The non-empty value of the variable `var` that locates `tool`, as [`require`].
///
/// # Panics
/// When `var` is unset or empty and `CI` is set.
#[track_caller]
pub fn require_env(var: &str, tool: &str, install: &str) -> Option<String> {
    let found = std::env::var(var).ok().filter(|value| !value.trim().is_empty());
    require(found, &format!("{tool} ({var} is not set)"), install)
}

/// `path` if it exists, as [`require`].
///
/// # Panics
/// When `path` does not exist and `CI` is set.
#[track_caller]
pub fn require_path(path: impl AsRef<std::path::Path>, tool: &str, install: &str) -> Option<std::path::PathBuf> {
    let path = path.as_ref();
    let found = path.exists().then(|| path.to_path_buf());
    require(found, &format!("{tool} ({} does not exist)", path.display()), install)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_means_set_and_not_false() {
        for value in ["true", "1", "yes", "github-actions"] {
            assert!(is_ci(Some(value)), "{value}");
        }
        for value in [None, Some(""), Some("  "), Some("0"), Some("false"), Some("FALSE")] {
            assert!(!is_ci(value), "{value:?}");
        }
    }

    #[test]
    fn a_missing_tool_fails_under_ci_and_skips_elsewhere() {
        let install = "make test starts it and sets CAIRN_TEST_AWS_ENDPOINT";
        assert_eq!(
            missing(Some("true"), "moto (CAIRN_TEST_AWS_ENDPOINT is not set)", install),
            Missing::Fail(
                "moto (CAIRN_TEST_AWS_ENDPOINT is not set) is missing and CI is set, so this test fails instead of \
                 skipping: make test starts it and sets CAIRN_TEST_AWS_ENDPOINT"
                    .into()
            )
        );
        for ci in [None, Some(""), Some("0"), Some("false")] {
            assert_eq!(
                missing(ci, "moto (CAIRN_TEST_AWS_ENDPOINT is not set)", install),
                Missing::Skip(
                    "skipped: moto (CAIRN_TEST_AWS_ENDPOINT is not set) is missing: make test starts it and sets \
                     CAIRN_TEST_AWS_ENDPOINT"
                        .into()
                )
            );
        }
    }

    /// Run in a child process by the test below, with `CI` set there: this process's
    /// environment is not changed.
    #[test]
    fn child_requires_an_unset_variable() {
        if std::env::var_os("CAIRN_REQUIRE_CHILD").is_some() {
            require_env("CAIRN_REQUIRE_UNSET_FOR_TEST", "moto", "make test starts it");
        }
    }

    #[test]
    fn under_ci_the_test_panics_naming_the_tool() {
        let run = |ci: &str| {
            std::process::Command::new(std::env::current_exe().expect("the test binary"))
                .args(["--exact", "testing::require::tests::child_requires_an_unset_variable", "--nocapture"])
                .env("CAIRN_REQUIRE_CHILD", "1")
                .env("CI", ci)
                .env_remove("CAIRN_REQUIRE_UNSET_FOR_TEST")
                .output()
                .expect("the test binary runs")
        };
        let strict = run("true");
        let stderr = String::from_utf8_lossy(&strict.stderr);
        assert!(!strict.status.success(), "{stderr}");
        assert!(
            stderr.contains(
                "moto (CAIRN_REQUIRE_UNSET_FOR_TEST is not set) is missing and CI is set, so this test fails instead \
                 of skipping: make test starts it"
            ),
            "{stderr}"
        );
        let local = run("false");
        let stderr = String::from_utf8_lossy(&local.stderr);
        assert!(local.status.success(), "{stderr}");
        assert!(
            stderr.contains("skipped: moto (CAIRN_REQUIRE_UNSET_FOR_TEST is not set) is missing: make test starts it"),
            "{stderr}"
        );
    }

    #[test]
    fn a_present_tool_is_returned_whatever_ci_says() {
        assert_eq!(require(Some(7), "anything", "anyhow"), Some(7));
    }
}
