//! `cairn`: the dev server and CLI. See `cairn --help`.

use cairn_dev::DevError;
use cairn_dev::cli::{self, Style};
use cairn_dev::dev::{Dev, DevConfig};
use clap::{Parser, Subcommand};
use std::process::{Child, Command, ExitCode};

#[derive(Debug, Parser)]
#[command(name = "cairn", version, about = "Cairn's local dev server and CLI")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
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
enum RunsAction {
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
struct FilterArgs {
    /// Only runs of this function id.
    #[arg(long)]
    function: Option<String>,
    /// Only runs in this status.
    #[arg(long)]
    status: Option<String>,
    /// Only runs created at or after this time (ms since the epoch).
    #[arg(long)]
    since: Option<i64>,
    /// Only runs created before this time (ms since the epoch).
    #[arg(long)]
    until: Option<i64>,
    /// At most this many runs.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
}

impl FilterArgs {
    fn filter(self) -> cli::RunFilter {
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
struct ConsoleArgs {
    /// Port for the dashboard and its API.
    #[arg(long, short = 'p', default_value_t = 8289)]
    port: u16,
    /// Address to listen on (loopback: the console acts with your AWS credentials).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Also answer requests for this Host name; repeatable.
    #[arg(long = "allowed-host", value_name = "NAME", value_delimiter = ',')]
    allowed_hosts: Vec<String>,
    /// The runs table (the stack's `RunsTableName` output).
    #[arg(long, env = "CAIRN_TABLE")]
    table: String,
    /// The event bus (the stack's `EventBusName` output).
    #[arg(long, env = "CAIRN_BUS")]
    bus: String,
    /// The Scheduler group of long wake-ups (default: the bus name, which is the stack's name).
    #[arg(long)]
    schedule_group: Option<String>,
    /// Each function binary's timer queue, `scope=url,...` (the stack's `TimerQueues` output).
    #[arg(long, env = "CAIRN_TIMER_QUEUES", default_value = "")]
    timer_queues: String,
    /// More function binaries to read (with no timer queue: reruns start at the reconciler's
    /// next pass); repeatable.
    #[arg(long = "scope", value_name = "BINARY")]
    scopes: Vec<String>,
    /// The SAM template (function descriptions and triggers), if present.
    #[arg(long, default_value = "template.yaml")]
    template: String,
}

#[derive(Debug, clap::Args)]
struct DevArgs {
    /// Port for the APIs and the dashboard.
    #[arg(long, short = 'p', default_value_t = 8288)]
    port: u16,
    /// Address to listen on. A name or address that is not loopback is also answered as a Host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Also answer requests for this Host name (besides localhost, 127.0.0.1 and [::1], the only
    /// ones answered by default, against DNS rebinding); repeatable.
    #[arg(long = "allowed-host", value_name = "NAME", env = "CAIRN_ALLOWED_HOSTS", value_delimiter = ',')]
    allowed_hosts: Vec<String>,
    /// The SAM template the routing is read from.
    #[arg(long, default_value = "template.yaml")]
    template: String,
    /// The SQLite file shared with the functions (runs, steps, event log).
    #[arg(long, env = "CAIRN_SQLITE_PATH", default_value = ".cairn/dev.db")]
    db: String,
    /// Where `cargo lambda watch` serves the Lambda Invoke API.
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    lambda_url: String,
    /// Start `cargo lambda watch` (with the functions' environment) and stop it on exit.
    #[arg(long)]
    watch: bool,
    /// Also drive the Inngest-protocol app at this URL (e.g. http://localhost:3000/api/inngest); repeatable.
    #[arg(long = "url", short = 'u')]
    apps: Vec<String>,
    /// Invocations in flight at once, per target (`cargo lambda watch`, and each Inngest app).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The longest call to an Inngest app (-u); a call still unanswered then is retried.
    #[arg(long, env = "CAIRN_APP_TIMEOUT_SECS", value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    app_timeout_secs: u64,
    /// Fire the reconciler schedules (input `{"cairn": "reconcile"}`) every N seconds instead of
    /// their template expression, so recovery shows in seconds.
    #[arg(long, env = "CAIRN_RECONCILE_SECS", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    reconcile_secs: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cairn: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Commands::Dev(args) => dev(args).await,
            Commands::Send { name, data, source, bus, url, wait, no_wait } => {
                let follow = wait || (!no_wait && std::io::IsTerminal::is_terminal(&std::io::stdout()));
                cli::send(&url, &name, &data, &source, &bus, follow).await
            }
            Commands::Runs { action: Some(RunsAction::Show { id, json, url }), .. } => {
                cli::show(&url, &id, json, Style::detect()).await.map(|text| println!("{text}"))
            }
            Commands::Runs { action: Some(RunsAction::Cancel { id: Some(id), url, .. }), .. } => {
                cli::cancel(&url, &id).await.map(|text| println!("{text}"))
            }
            Commands::Runs { action: Some(RunsAction::Cancel { id: None, filter, json, url }), .. } => {
                cli::bulk(&url, "cancel", &filter.filter(), "start", json).await.map(|text| println!("{text}"))
            }
            Commands::Runs { action: Some(RunsAction::Rerun { id, from, url }), .. } => {
                cli::rerun(&url, &id, &from).await.map(|text| println!("{text}"))
            }
            Commands::Runs { action: Some(RunsAction::Replay { filter, from, json, url }), .. } => {
                cli::bulk(&url, "replay", &filter.filter(), &from, json).await.map(|text| println!("{text}"))
            }
            Commands::Invoke { function, data, name, url } => {
                cli::invoke(&url, &function, &data, name.as_deref()).await.map(|text| println!("{text}"))
            }
            Commands::Console(args) => console(args).await,
            Commands::Template { path, check } => template(&path, check),
            Commands::New { name, no_template } => new_workflow(&name, no_template),
            Commands::Runs { action: None, function, status, limit, json, url } => {
                cli::runs(&url, function.as_deref(), status.as_deref(), limit, json)
                    .await
                    .map(|text| println!("{text}"))
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cairn: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `cairn new`: scaffolds the workflow, then regenerates template.yaml through cargo (this
/// binary was built without the new crate, so it cannot generate its resources itself).
fn new_workflow(name: &str, no_template: bool) -> Result<(), DevError> {
    let here = std::env::current_dir()
        .map_err(|err| DevError::with_source(format!("cannot read the current directory: {err}"), err))?;
    let root = cairn_dev::scaffold::project_root(&here).map_err(DevError::caused_by)?;
    let written = cairn_dev::scaffold::scaffold(&root, name).map_err(DevError::caused_by)?;
    for path in &written {
        println!("  wrote {}", path.strip_prefix(&root).unwrap_or(path).display());
    }
    if !no_template {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(&cargo)
            .current_dir(&root)
            .args(["run", "-q", "-p", "cairn-dev", "--bin", "cairn", "--", "template"])
            .status()
            .map_err(|err| DevError::with_source(format!("cannot run {cargo}: {err}"), err))?;
        if !status.success() {
            return Err(format!(
                "functions/{name} is written, but `cairn template` failed; fix it, then run `make generate`"
            )
            .into());
        }
    }
    println!(
        "\n  next: cargo test -p {name}   make dev   then: target/debug/cairn send app/{name}.requested --data '{{\"userId\": \"u1\"}}'"
    );
    Ok(())
}

/// `cairn template`: rewrites the generated parts of `path`, or with `check` fails if they are
/// out of date.
fn template(path: &str, check: bool) -> Result<(), DevError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| DevError::with_source(format!("cannot read {path}: {err}"), err))?;
    let generated = cairn_dev::generate::regenerate(&text, &cairn_functions::lambdas())
        .map_err(|err| DevError::with_source(format!("{path}: {err}"), err))?;
    if generated == text {
        println!("{path} is up to date with the functions");
        return Ok(());
    }
    if check {
        return Err(format!(
            "{path} differs from what the functions generate; run `make generate` (target/debug/cairn template) and commit it"
        ).into());
    }
    std::fs::write(path, generated).map_err(|err| DevError::with_source(format!("cannot write {path}: {err}"), err))?;
    println!("{path}: function resources regenerated");
    Ok(())
}

/// Logs for a person at a terminal: compact lines, `RUST_LOG` to change the level.
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,cairn_dev=info".into()),
        )
        .with_target(false)
        .compact()
        .init();
}

async fn dev(args: DevArgs) -> Result<(), DevError> {
    init_logging();
    let db = std::path::absolute(&args.db)
        .map_err(|err| DevError::with_source(format!("--db {}: {err}", args.db), err))?
        .display()
        .to_string();
    if let Some(parent) = std::path::Path::new(&db).parent() {
        std::fs::create_dir_all(parent).map_err(|err| DevError::with_source(format!("--db {db}: {err}"), err))?;
    }
    // The functions' store: DynamoDB when CAIRN_TABLE is set (as in AWS; with CAIRN_SCOPE, which
    // `--watch` forwards, so every function runs under that one scope locally), else the SQLite file.
    let store = if std::env::var("CAIRN_TABLE").is_ok_and(|t| !t.is_empty()) {
        cairn_aws::store_from_env(&aws_config::load_from_env().await).map_err(DevError::caused_by)?
    } else {
        cairn_aws::AnyStore::Sqlite(
            cairn::SqliteStore::open(&db).map_err(|err| DevError::with_source(format!("--db {db}: {err}"), err))?,
        )
    };
    let config = DevConfig {
        template_path: args.template.clone(),
        db_path: db.clone(),
        lambda_url: args.lambda_url.clone(),
        apps: args.apps.clone(),
        region: "us-east-1".into(),
        concurrency: args.concurrency,
        app_timeout: std::time::Duration::from_secs(args.app_timeout_secs),
        allowed_hosts: allowed_hosts(&args),
        reconcile_secs: args.reconcile_secs,
    };
    let dev = Dev::new(config, store)?;
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(|err| DevError::with_source(format!("cannot listen on {}:{}: {err}", args.host, args.port), err))?;
    let url = format!("http://{}:{}", client_host(&args.host), args.port);
    let bus = dev.template.buses().into_iter().find(|b| b != "default").unwrap_or_else(|| "default".into());
    let declared: Vec<String> = dev.template.functions.iter().flat_map(|f| f.environment.iter().cloned()).collect();
    let watch = if args.watch {
        Some(start_watch(&args.lambda_url, &cli::function_env(&url, &db, &bus), &declared)?)
    } else {
        None
    };
    dev.spawn_background();
    print_banner(&dev, &url, &args.lambda_url, &bus);
    let server = axum::serve(listener, cairn_dev::server::router(dev));
    let result = tokio::select! {
        served = server => served.map_err(DevError::caused_by),
        _ = shutdown_signal() => Ok(()),
    };
    if let Some(child) = watch {
        stop_process_group(child);
    }
    result
}

async fn console(args: ConsoleArgs) -> Result<(), DevError> {
    init_logging();
    let template = if std::path::Path::new(&args.template).exists() {
        Some(cairn_dev::template::Template::load(&args.template).map_err(DevError::caused_by)?)
    } else {
        None
    };
    let config = cairn_dev::console::ConsoleConfig {
        schedule_group: args.schedule_group.clone().unwrap_or_else(|| args.bus.clone()),
        timer_queues: cairn_dev::console::ConsoleConfig::parse_timer_queues(&args.timer_queues)
            .map_err(|err| DevError::with_source(format!("--timer-queues: {err}"), err))?,
        scopes: args.scopes.clone(),
        allowed_hosts: args.allowed_hosts.clone(),
        table: args.table.clone(),
        bus: args.bus.clone(),
    };
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let console = cairn_dev::console::Console::new(config, &aws, template)?;
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(|err| DevError::with_source(format!("cannot listen on {}:{}: {err}", args.host, args.port), err))?;
    let url = format!("http://{}:{}", client_host(&args.host), args.port);
    let scopes: Vec<&str> = console.scopes.iter().map(|scope| scope.name.as_str()).collect();
    println!("\n  cairn console  dashboard {url}");
    println!("  table {}  bus {}  functions {}", args.table, args.bus, scopes.join(", "));
    println!("  try:  CAIRN_DEV_URL={url} target/debug/cairn runs\n");
    let server = axum::serve(listener, cairn_dev::console::router(std::sync::Arc::new(console)));
    tokio::select! {
        served = server => served.map_err(DevError::caused_by),
        _ = shutdown_signal() => Ok(()),
    }
}

/// The host clients (the functions, the banner's commands) use for `--host`: loopback for a
/// wildcard address, which no client sends as a Host; an IPv6 address in brackets.
fn client_host(host: &str) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_unspecified() => "127.0.0.1".into(),
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => host.to_string(),
    }
}

/// `--allowed-host`, and `--host` when it names this machine otherwise than by loopback (a
/// wildcard address names nothing a client would send).
fn allowed_hosts(args: &DevArgs) -> Vec<String> {
    let wildcard = args.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    let mut hosts = args.allowed_hosts.clone();
    if !wildcard && !cairn_dev::loopback::is_loopback_name(&args.host) {
        hosts.push(args.host.clone());
    }
    hosts
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match terminate.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Starts `cargo lambda watch` with the dev server's settings (`env`), and the variables the
/// template declares for the functions (`declared`, e.g. `HELLO_SLEEP=10s make dev`), `CAIRN_*`
/// and `RUST_LOG` taken from this environment.
fn start_watch(lambda_url: &str, env: &[(String, String)], declared: &[String]) -> Result<Child, DevError> {
    let port = lambda_url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse::<u16>().ok()).unwrap_or(9000);
    let mut command = Command::new("cargo");
    // The functions keep their runs in the dev server's SQLite file: the store Lambda builds leave
    // out. CAIRN_WATCH_FEATURES replaces the features (make dev and the tests name a set that
    // matches their own build, so cargo reuses its artifacts).
    let features = std::env::var("CAIRN_WATCH_FEATURES").unwrap_or_else(|_| "cairn-aws/sqlite".to_string());
    command.args(["lambda", "watch", "-A", "127.0.0.1", "-P", &port.to_string(), "-F", &features]);
    // The functions' settings from this environment, then the dev server's, which win.
    let forwarded = std::env::vars().filter(|(name, _)| {
        (declared.contains(name) || name.starts_with("CAIRN_") || name == "RUST_LOG")
            && !env.iter().any(|(set, _)| set == name)
    });
    for (name, value) in forwarded.chain(env.iter().cloned()) {
        command.arg("--env-var").arg(format!("{name}={value}")).env(&name, &value);
    }
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command.spawn().map_err(|err| {
        DevError::with_source(
            format!("cannot start `cargo lambda watch` (install cargo-lambda, or run `make dev`): {err}"),
            err,
        )
    })
}

/// Stops `cargo lambda watch` (which stops the functions it started) by its process group id,
/// asking again if it is busy (a rebuild), and killing it after ten seconds.
fn stop_process_group(mut child: Child) {
    let group = format!("-{}", child.id());
    for signal in ["-TERM", "-TERM", "-KILL"] {
        let _ = Command::new("kill").args([signal, "--", &group]).status();
        for _ in 0..50 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let _ = child.wait();
}

fn print_banner(dev: &Dev, url: &str, lambda_url: &str, bus: &str) {
    let style = Style::detect();
    println!("\n  {}  {}", style.bold("cairn dev"), style.dim(&format!("dashboard {url}")));
    for function in dev.template.functions.iter().filter(|f| f.is_routed()) {
        let mut triggers = function.event_names();
        triggers.extend(function.schedules.iter().map(|s| format!("{} {}", s.expression_text, s.time_zone)));
        triggers.extend(function.timer_queue().map(|queue| format!("sqs {queue}")));
        println!("  {:<24} {}", function.function_id, style.dim(&triggers.join(", ")));
    }
    println!("  {}", style.dim(&format!("functions run under cargo lambda watch at {lambda_url}")));
    println!(
        "\n  try:  aws events put-events --endpoint-url {url} --entries '[{{\"EventBusName\":\"{bus}\",\"Source\":\"app\",\"DetailType\":\"app/my.event\",\"Detail\":\"{{}}\"}}]'"
    );
    println!("        target/debug/cairn send app/my.event --data '{{}}'   # then: target/debug/cairn runs\n");
}
