//! The `cairn` command line: every subcommand and its flags (clap), as `cairn --help` shows them.

use cairn_dev::cli::{self};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cairn", version, about = "Cairn's local dev server and CLI")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Commands,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Commands {
    /// Serve EventBridge PutEvents, Scheduler and the dashboard, routing by template.yaml and
    /// invoking the functions under `cargo lambda watch`.
    Dev(DevArgs),
    /// Put one event on the bus (through the dev server's PutEvents) and follow its runs.
    Send {
        /// The event name (EventBridge `detail-type`).
        name: String,
        /// The event data, a JSON object.
        #[arg(long, default_value = "{}")]
        data: String,
        /// EventBridge `source`.
        #[arg(long, default_value = "cairn.cli")]
        source: String,
        /// The bus.
        #[arg(long, default_value = "cairn")]
        bus: String,
        /// The dev server.
        #[arg(long, env = "CAIRN_DEV_URL", default_value = "http://127.0.0.1:8288")]
        url: String,
        /// Follow the runs until they finish or suspend (default when on a terminal).
        #[arg(long)]
        wait: bool,
        /// Do not follow the runs.
        #[arg(long, conflicts_with = "wait")]
        no_wait: bool,
    },
    /// Serve the dashboard and the runs API over a deployed stack (its table, bus and timer
    /// queues), from this machine: `cairn runs` and `cairn invoke` then work against it with
    /// `--url` / `CAIRN_DEV_URL`.
    Console(ConsoleArgs),
    /// Run one function now with an event carrying `--data` (the dev server's, or a console's
    /// stack's).
    Invoke {
        /// The function id.
        function: String,
        /// The event data, a JSON object.
        #[arg(long, default_value = "{}")]
        data: String,
        /// The event name (default: the function's first trigger).
        #[arg(long)]
        name: Option<String>,
        /// The dev server or console.
        #[arg(long, env = "CAIRN_DEV_URL", default_value = "http://127.0.0.1:8288")]
        url: String,
    },
    /// Scaffold a workflow: functions/NAME (a typed event, the function, a TestRun test), its
    /// entry in functions/registry, and its resources in template.yaml.
    New {
        /// The workflow's name, kebab-case (its crate, binary and function id).
        name: String,
        /// Do not regenerate template.yaml (run `make generate` later).
        #[arg(long)]
        no_template: bool,
    },
    /// Regenerate template.yaml's function resources from the project's functions
    /// (functions/registry); `--check` only says whether it is up to date.
    Template {
        /// The template.
        #[arg(long, default_value = "template.yaml")]
        path: String,
        /// Fail, without writing, when the file differs from what the code generates.
        #[arg(long)]
        check: bool,
    },
    /// List runs, newest first; `cairn runs show ID` shows one run's timeline, `cancel`,
    /// `rerun` and `replay` act on runs.
    Runs {
        #[command(subcommand)]
        action: Option<RunsAction>,
        /// Only runs of this function id.
        #[arg(long)]
        function: Option<String>,
        /// Only runs in this status (running, sleeping, waiting, completed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The dev server.
        #[arg(long, env = "CAIRN_DEV_URL", default_value = "http://127.0.0.1:8288")]
        url: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RunsAction {
    /// Cancel one run, or (without an id) every unfinished run the filter matches.
    Cancel {
        /// The run id.
        id: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The dev server or console.
        #[arg(long, env = "CAIRN_DEV_URL", default_value = "http://127.0.0.1:8288")]
        url: String,
    },
    /// Rerun one run as a new run with the same event.
    Rerun {
        /// The run id.
        id: String,
        /// `start`, or `failed`: keep the steps that completed before the failed one.
        #[arg(long, default_value = "start")]
        from: String,
        /// The dev server or console.
        #[arg(long, env = "CAIRN_DEV_URL", default_value = "http://127.0.0.1:8288")]
        url: String,
    },
    /// Rerun every run the filter matches (a replay), each as a new run.
    Replay {
        #[command(flatten)]
        filter: FilterArgs,
        /// `start`, or `failed`: keep the steps that completed before the failed one.
        #[arg(long, default_value = "start")]
        from: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The dev server or console.
        #[arg(long, env = "CAIRN_DEV_URL", default_value = "http://127.0.0.1:8288")]
        url: String,
    },
    /// One run's timeline: each step, its timing, attempts and output or error.
    Show {
        /// The run id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The dev server.
        #[arg(long, env = "CAIRN_DEV_URL", default_value = "http://127.0.0.1:8288")]
        url: String,
    },
}

/// Which runs a bulk operation acts on.
#[derive(Debug, clap::Args)]
pub(crate) struct FilterArgs {
    /// Only runs of this function id.
    #[arg(long)]
    pub(crate) function: Option<String>,
    /// Only runs in this status.
    #[arg(long)]
    pub(crate) status: Option<String>,
    /// Only runs created at or after this time (ms since the epoch).
    #[arg(long)]
    pub(crate) since: Option<i64>,
    /// Only runs created before this time (ms since the epoch).
    #[arg(long)]
    pub(crate) until: Option<i64>,
    /// At most this many runs.
    #[arg(long, default_value_t = 1000)]
    pub(crate) limit: usize,
}

impl FilterArgs {
    pub(crate) fn filter(self) -> cli::RunFilter {
        cli::RunFilter {
            function: self.function,
            status: self.status,
            since: self.since,
            until: self.until,
            limit: self.limit,
        }
    }
}

/// `cairn console`: a deployed stack's parts, from its outputs.
#[derive(Debug, clap::Args)]
pub(crate) struct ConsoleArgs {
    /// Port for the dashboard and its API.
    #[arg(long, short = 'p', default_value_t = 8289)]
    pub(crate) port: u16,
    /// Address to listen on (loopback: the console acts with your AWS credentials).
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: String,
    /// Also answer requests for this Host name; repeatable.
    #[arg(long = "allowed-host", value_name = "NAME", value_delimiter = ',')]
    pub(crate) allowed_hosts: Vec<String>,
    /// The runs table (the stack's `RunsTableName` output).
    #[arg(long, env = "CAIRN_TABLE")]
    pub(crate) table: String,
    /// The event bus (the stack's `EventBusName` output).
    #[arg(long, env = "CAIRN_BUS")]
    pub(crate) bus: String,
    /// The Scheduler group of long wake-ups (default: the bus name, which is the stack's name).
    #[arg(long)]
    pub(crate) schedule_group: Option<String>,
    /// Each function binary's timer queue, `scope=url,...` (the stack's `TimerQueues` output).
    #[arg(long, env = "CAIRN_TIMER_QUEUES", default_value = "")]
    pub(crate) timer_queues: String,
    /// More function binaries to read (with no timer queue: reruns start at the reconciler's
    /// next pass); repeatable.
    #[arg(long = "scope", value_name = "BINARY")]
    pub(crate) scopes: Vec<String>,
    /// The SAM template (function descriptions and triggers), if present.
    #[arg(long, default_value = "template.yaml")]
    pub(crate) template: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DevArgs {
    /// Port for the APIs and the dashboard.
    #[arg(long, short = 'p', default_value_t = 8288)]
    pub(crate) port: u16,
    /// Address to listen on. A name or address that is not loopback is also answered as a Host.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: String,
    /// Also answer requests for this Host name (besides localhost, 127.0.0.1 and [::1], the only
    /// ones answered by default, against DNS rebinding); repeatable.
    #[arg(long = "allowed-host", value_name = "NAME", env = "CAIRN_ALLOWED_HOSTS", value_delimiter = ',')]
    pub(crate) allowed_hosts: Vec<String>,
    /// The SAM template the routing is read from.
    #[arg(long, default_value = "template.yaml")]
    pub(crate) template: String,
    /// The SQLite file shared with the functions (runs, steps, event log).
    #[arg(long, env = "CAIRN_SQLITE_PATH", default_value = ".cairn/dev.db")]
    pub(crate) db: String,
    /// Where `cargo lambda watch` serves the Lambda Invoke API.
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    pub(crate) lambda_url: String,
    /// Start `cargo lambda watch` (with the functions' environment) and stop it on exit.
    #[arg(long)]
    pub(crate) watch: bool,
    /// Also drive the Inngest-protocol app at this URL (e.g. http://localhost:3000/api/inngest); repeatable.
    #[arg(long = "url", short = 'u')]
    pub(crate) apps: Vec<String>,
    /// Invocations in flight at once, per target (`cargo lambda watch`, and each Inngest app).
    #[arg(long, default_value_t = 16)]
    pub(crate) concurrency: usize,
    /// The longest call to an Inngest app (-u); a call still unanswered then is retried.
    #[arg(long, env = "CAIRN_APP_TIMEOUT_SECS", value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) app_timeout_secs: u64,
    /// Fire the reconciler schedules (input `{"cairn": "reconcile"}`) every N seconds instead of
    /// their template expression, so recovery shows in seconds.
    #[arg(long, env = "CAIRN_RECONCILE_SECS", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) reconcile_secs: Option<u64>,
}
