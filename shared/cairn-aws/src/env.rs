//! A function binary's runner, store and timer, built from its environment (what
//! `template.yaml` sets in AWS and `cairn dev` sets for `cargo lambda watch`).

use crate::any::{AnyBus, AnyStore, AnyTimer};
use crate::dynamodb::InvalidScope;
use cairn::{DefinitionError, Function, Registry, Runner, RunnerConfig, StoreError};
use std::time::Duration;

/// Why the environment does not describe a working function; each names the variable or
/// resource that is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// The functions do not make a valid registry.
    #[error("{0}")]
    Definition(#[source] DefinitionError),
    /// `CAIRN_TABLE` without `CAIRN_SCOPE`.
    #[error(
        "CAIRN_TABLE={table} is set but CAIRN_SCOPE is not: every key this function writes starts with its \
         scope (template.yaml sets CAIRN_SCOPE to the binary's name, and its IAM policy allows only those keys)"
    )]
    NoScope {
        /// The table named.
        table: String,
    },
    /// `CAIRN_SCOPE` is not a usable key scope.
    #[error("CAIRN_SCOPE: {0}")]
    Scope(#[source] InvalidScope),
    /// The SQLite file's directory could not be created.
    #[error("CAIRN_SQLITE_PATH {path}: {source}")]
    SqliteDir {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The SQLite file could not be opened.
    #[error("CAIRN_SQLITE_PATH {path}: {source}")]
    Sqlite {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// Neither `CAIRN_TABLE` nor the local SQLite store (not built in).
    #[error(
        "CAIRN_TABLE is not set, and this binary was built without the local SQLite store (the `sqlite` \
         feature of cairn-aws, off in Lambda builds): set CAIRN_TABLE, or build with `-F cairn-aws/sqlite` \
         (`cairn dev --watch` does)"
    )]
    NoLocalStore,
    /// A duration variable is not a whole number of seconds.
    #[error("{name}={value:?} is not a whole number of seconds")]
    NotSeconds {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
        /// Why.
        #[source]
        source: std::num::ParseIntError,
    },
    /// No timer is configured, and `CAIRN_TIMER=log` does not opt out.
    #[error(
        "no way to wake runs: {} not set. A function that keeps runs must be able to wake them \
         (template.yaml sets these; `cairn dev` sets them for cargo lambda watch). \
         Set CAIRN_TIMER=log to run without timers anyway.",
        missing.join(", ")
    )]
    NoTimer {
        /// The variables missing.
        missing: Vec<&'static str>,
    },
    /// Neither `CAIRN_FUNCTION_ARN` nor `AWS_LAMBDA_FUNCTION_NAME` is set.
    #[error("CAIRN_FUNCTION_ARN is not set (nor AWS_LAMBDA_FUNCTION_NAME to derive it from)")]
    NoFunctionArn(#[source] std::env::VarError),
}

/// Builds the runner from the environment:
/// - `CAIRN_TABLE` + `CAIRN_SCOPE`: DynamoDB table and this Lambda's key scope (else
///   `CAIRN_SQLITE_PATH`, default `.cairn/dev.db`);
/// - `CAIRN_BUS`: EventBridge bus name for sent events (else logged);
/// - the timer (see `timer_from_env`): required, the function refuses to start without one;
/// - `CAIRN_SLEEP_THRESHOLD_SECS`: in-process sleeps up to this long (default 5);
/// - `CAIRN_LEASE_SECS`: the lease on a run (default 60), so how soon the reconciler resumes a
///   run whose invocation died.
///
/// # Errors
/// An [`EnvError`] naming the variable or resource that is wrong.
pub async fn runner_from_env(functions: Vec<Function>) -> Result<Runner<AnyStore, AnyBus, AnyTimer>, EnvError> {
    let registry = Registry::new(functions).map_err(EnvError::Definition)?;
    let wants_aws = ["CAIRN_TABLE", "CAIRN_BUS"].iter().any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()));
    // Only load AWS configuration when something uses it: local mode needs no region or IMDS.
    let aws = if wants_aws {
        aws_config::load_from_env().await
    } else {
        aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build()
    };
    let store = store_from_env(&aws)?;
    let bus = bus_from_env(&aws);
    let timer = timer_from_env(&aws, &registry, bus.as_ref())?;
    let secs = |name: &str, default: u64| -> Result<u64, EnvError> {
        match std::env::var(name) {
            Ok(value) => value.trim().parse().map_err(|source| EnvError::NotSeconds {
                name: name.to_string(),
                value: value.clone(),
                source,
            }),
            Err(_) => Ok(default),
        }
    };
    let config = RunnerConfig::default()
        .sleep_threshold(Duration::from_secs(secs("CAIRN_SLEEP_THRESHOLD_SECS", 5)?))
        .lease(Duration::from_secs(secs("CAIRN_LEASE_SECS", 60)?));
    let bus = bus.map_or(AnyBus::Log, AnyBus::EventBridge);
    Ok(Runner::new(registry, store, bus, timer).with_config(config))
}

impl AnyBus {
    /// The EventBridge bus `CAIRN_BUS` names (with the default AWS configuration), or
    /// [`AnyBus::Log`] when it is unset or empty.
    pub async fn from_env() -> Self {
        // AWS configuration is loaded only when a bus is named (local mode needs no region).
        if std::env::var("CAIRN_BUS").is_ok_and(|name| !name.trim().is_empty()) {
            let aws = aws_config::load_from_env().await;
            bus_from_env(&aws).map_or(AnyBus::Log, AnyBus::EventBridge)
        } else {
            AnyBus::Log
        }
    }
}

/// The EventBridge bus `CAIRN_BUS` names, if it names one.
pub(crate) fn bus_from_env(aws: &aws_config::SdkConfig) -> Option<crate::EventBridgeBus> {
    non_empty("CAIRN_BUS").map(|name| crate::EventBridgeBus::new(aws_sdk_eventbridge::Client::new(aws), name))
}

fn non_empty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.trim().is_empty())
}

/// The timer named by the environment. A function whose store keeps runs needs a way to wake
/// them, or a sleeping run would never resume: without one it refuses to start, naming what is
/// missing (`CAIRN_TIMER=log` opts out explicitly, for experiments without timers).
///
/// - `CAIRN_TIMER_QUEUE_URL` (else `CAIRN_TIMER_QUEUE_PREFIX` + the function's name, as the dev
///   server sets it): the function's SQS timer queue;
/// - `CAIRN_SCHEDULE_GROUP`, `CAIRN_SCHEDULER_ROLE_ARN`, `CAIRN_FUNCTION_ARN`: the Scheduler,
///   for wake-ups more than 15 minutes ahead.
fn timer_from_env(
    aws: &aws_config::SdkConfig,
    registry: &Registry,
    bus: Option<&crate::EventBridgeBus>,
) -> Result<AnyTimer, EnvError> {
    if std::env::var("CAIRN_TIMER").is_ok_and(|mode| mode == "log") {
        tracing::warn!("CAIRN_TIMER=log: wake-ups are only logged; sleeping and waiting runs resume only by hand");
        return Ok(AnyTimer::Log);
    }
    let queue = non_empty("CAIRN_TIMER_QUEUE_URL").or_else(|| {
        let prefix = non_empty("CAIRN_TIMER_QUEUE_PREFIX")?;
        Some(format!("{prefix}{}", non_empty("AWS_LAMBDA_FUNCTION_NAME")?))
    });
    let (group, role) = (non_empty("CAIRN_SCHEDULE_GROUP"), non_empty("CAIRN_SCHEDULER_ROLE_ARN"));
    let (Some(queue), true, Some(group), Some(role)) = (&queue, bus.is_some(), &group, &role) else {
        let missing: Vec<&'static str> = [
            ("CAIRN_TIMER_QUEUE_URL", queue.is_some()),
            ("CAIRN_BUS", bus.is_some()),
            ("CAIRN_SCHEDULE_GROUP", group.is_some()),
            ("CAIRN_SCHEDULER_ROLE_ARN", role.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| (!set).then_some(name))
        .collect();
        // DynamoDB and the SQLite file both keep runs across invocations: both need wake-ups.
        return Err(EnvError::NoTimer { missing });
    };
    let function_id = registry.functions().first().map(|f| f.id().to_string()).unwrap_or_default();
    // Schedule names start with the scope, as the template's CreateSchedule grant expects.
    let scope = non_empty("CAIRN_SCOPE").unwrap_or_else(|| function_id.clone());
    crate::check_scope(&scope).map_err(EnvError::Scope)?;
    let long = crate::SchedulerTimer::new(
        aws_sdk_scheduler::Client::new(aws),
        group,
        function_arn_from_env()?,
        role,
        function_id,
    )
    .scope(scope);
    Ok(AnyTimer::Queue(crate::QueueTimer::new(aws_sdk_sqs::Client::new(aws), queue, long)))
}

/// The store named by the environment: DynamoDB table `CAIRN_TABLE` through `aws`, its keys
/// under `CAIRN_SCOPE` (required with it: the function's IAM policy allows only keys starting
/// with `<scope>#`), else (feature `sqlite`) the SQLite file `CAIRN_SQLITE_PATH` (default
/// `.cairn/dev.db`, its directory created).
///
/// # Errors
/// `CAIRN_SCOPE` missing or unusable with `CAIRN_TABLE`, or the SQLite file cannot be opened,
/// naming it.
pub fn store_from_env(aws: &aws_config::SdkConfig) -> Result<AnyStore, EnvError> {
    Ok(match std::env::var("CAIRN_TABLE") {
        Ok(table) if !table.is_empty() => {
            let Some(scope) = non_empty("CAIRN_SCOPE") else {
                return Err(EnvError::NoScope { table });
            };
            let client = aws_sdk_dynamodb::Client::new(aws);
            AnyStore::DynamoDb(crate::DynamoDbStore::new(client, table, scope).map_err(EnvError::Scope)?)
        }
        _ => local_store()?,
    })
}

/// The SQLite file `CAIRN_SQLITE_PATH` (default `.cairn/dev.db`), its directory created.
#[cfg(feature = "sqlite")]
fn local_store() -> Result<AnyStore, EnvError> {
    let path = std::env::var("CAIRN_SQLITE_PATH").unwrap_or_else(|_| ".cairn/dev.db".into());
    if let Some(parent) = std::path::Path::new(&path).parent() {
        std::fs::create_dir_all(parent).map_err(|source| EnvError::SqliteDir { path: path.clone(), source })?;
    }
    Ok(AnyStore::Sqlite(cairn::SqliteStore::open(&path).map_err(|source| EnvError::Sqlite { path, source })?))
}

/// Without the `sqlite` feature (Lambda builds) there is no local store.
#[cfg(not(feature = "sqlite"))]
fn local_store() -> Result<AnyStore, EnvError> {
    Err(EnvError::NoLocalStore)
}

/// This function's ARN for its own wake-up schedules: `CAIRN_FUNCTION_ARN`, else (under
/// `cargo lambda watch`, where the dev server routes by name) one built from
/// `AWS_LAMBDA_FUNCTION_NAME`.
fn function_arn_from_env() -> Result<String, EnvError> {
    if let Ok(arn) = std::env::var("CAIRN_FUNCTION_ARN") {
        return Ok(arn);
    }
    let name = std::env::var("AWS_LAMBDA_FUNCTION_NAME").map_err(EnvError::NoFunctionArn)?;
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    Ok(format!("arn:aws:lambda:{region}:000000000000:function:{name}"))
}
