//! What a Lambda binary needs from its stack, declared next to its functions so the stack is
//! derived from code: `cairn template` turns each [`Lambda`] of the project's one list
//! (`functions/registry`) into its SAM resources (rules, schedules, timer queue,
//! least-privilege policy, environment), and the dev server reads the same template.
//!
//! ```
//! use cairn::prelude::*;
//! use cairn_aws::{EnvValue, Lambda};
//!
//! let fetch = Function::new("fetch").on_event("app/fetch")
//!     .handler(|_: Event, _: Step| async move { Ok(()) }).unwrap();
//! let lambda = Lambda::new("fetcher", vec![fetch])
//!     .description("fetches")
//!     .env("FETCH_URL", EnvValue::parameter("FetchUrl"))
//!     .reads_parameters("/${AWS::StackName}/fetch/");
//! assert_eq!(lambda.binary(), "fetcher");
//! ```

use cairn::Function;

/// One Lambda binary: the functions it runs and what it needs beyond what every Cairn
/// function gets (its table scope, bus, timer queue and schedules).
#[derive(Clone, Debug)]
pub struct Lambda {
    binary: String,
    description: String,
    functions: Vec<Function>,
    env: Vec<(String, EnvValue)>,
    parameter_paths: Vec<String>,
}

/// An environment variable's value in the template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvValue {
    /// A fixed value.
    Literal(String),
    /// A template parameter's value (`!Ref Name`); the parameter stays hand-written.
    Parameter(String),
    /// A `!Sub` string, e.g. `/${AWS::StackName}/readwise/users/`.
    Sub(String),
}

impl EnvValue {
    /// A fixed value.
    pub fn literal(value: impl Into<String>) -> Self {
        EnvValue::Literal(value.into())
    }

    /// The value of the template parameter `name`.
    pub fn parameter(name: impl Into<String>) -> Self {
        EnvValue::Parameter(name.into())
    }

    /// A `!Sub` string.
    pub fn sub(text: impl Into<String>) -> Self {
        EnvValue::Sub(text.into())
    }
}

impl Lambda {
    /// The binary `binary` (its crate's `[[bin]]`, also its table scope and name suffix in the
    /// stack) running `functions`.
    pub fn new(binary: impl Into<String>, functions: Vec<Function>) -> Self {
        Lambda {
            binary: binary.into(),
            description: String::new(),
            functions,
            env: Vec::new(),
            parameter_paths: Vec::new(),
        }
    }

    /// What it does, in a line (the function's `Description`).
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// An environment variable its code reads (the dev server forwards it from your shell).
    pub fn env(mut self, name: impl Into<String>, value: EnvValue) -> Self {
        self.env.push((name.into(), value));
        self
    }

    /// Lets it read (and decrypt) the SSM parameters under `path` (a `!Sub` string ending in
    /// `/`), and nothing else of SSM.
    pub fn reads_parameters(mut self, path: impl Into<String>) -> Self {
        self.parameter_paths.push(path.into());
        self
    }

    /// The binary's name.
    pub fn binary(&self) -> &str {
        &self.binary
    }

    /// Its description.
    pub fn description_text(&self) -> &str {
        &self.description
    }

    /// Its functions (failure handlers are derived from them).
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// Takes its functions, e.g. for [`crate::run`].
    pub fn into_functions(self) -> Vec<Function> {
        self.functions
    }

    /// Its own environment variables.
    pub fn env_vars(&self) -> &[(String, EnvValue)] {
        &self.env
    }

    /// The SSM parameter paths it reads.
    pub fn parameter_paths(&self) -> &[String] {
        &self.parameter_paths
    }
}
