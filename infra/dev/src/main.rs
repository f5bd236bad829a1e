//! `cairn`: the dev server and CLI. See `cairn --help`.

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
    /// List runs, newest first; `cairn runs show ID` shows one run's timeline.
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

async fn dev(args: DevArgs) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,cairn_dev=info".into()),
        )
        .with_target(false)
        .compact()
        .init();
    let db = std::path::absolute(&args.db).map_err(|err| format!("--db {}: {err}", args.db))?.display().to_string();
    if let Some(parent) = std::path::Path::new(&db).parent() {
        std::fs::create_dir_all(parent).map_err(|err| format!("--db {db}: {err}"))?;
    }
    // The functions' store: DynamoDB when CAIRN_TABLE is set (as in AWS; with CAIRN_SCOPE, which
    // `--watch` forwards, so every function runs under that one scope locally), else the SQLite file.
    let store = if std::env::var("CAIRN_TABLE").is_ok_and(|t| !t.is_empty()) {
        cairn_aws::store_from_env(&aws_config::load_from_env().await)?
    } else {
        cairn_aws::AnyStore::Sqlite(cairn::SqliteStore::open(&db).map_err(|err| format!("--db {db}: {err}"))?)
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
        .map_err(|err| format!("cannot listen on {}:{}: {err}", args.host, args.port))?;
    let url = format!("http://{}:{}", client_host(&args.host), args.port);
    let bus = dev.template.buses().into_iter().find(|b| b != "default").unwrap_or_else(|| "default".into());
    let watch =
        if args.watch { Some(start_watch(&args.lambda_url, &cli::function_env(&url, &db, &bus))?) } else { None };
    dev.spawn_background();
    print_banner(&dev, &url, &args.lambda_url, &bus);
    let server = axum::serve(listener, cairn_dev::server::router(dev));
    let result = tokio::select! {
        served = server => served.map_err(|err| err.to_string()),
        _ = shutdown_signal() => Ok(()),
    };
    if let Some(child) = watch {
        stop_process_group(child);
    }
    result
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

fn start_watch(lambda_url: &str, env: &[(String, String)]) -> Result<Child, String> {
    let port = lambda_url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse::<u16>().ok()).unwrap_or(9000);
    let mut command = Command::new("cargo");
    // The functions keep their runs in the dev server's SQLite file: the store Lambda builds leave out.
    command.args(["lambda", "watch", "-A", "127.0.0.1", "-P", &port.to_string(), "-F", "cairn-aws/sqlite"]);
    // The functions' settings from this environment (e.g. `HELLO_SLEEP=10s make dev`), then the
    // dev server's, which win.
    let forwarded = std::env::vars().filter(|(name, _)| {
        ["CAIRN_", "HELLO_", "READWISE_", "RUST_LOG"].iter().any(|prefix| name.starts_with(prefix))
            && !env.iter().any(|(set, _)| set == name)
    });
    for (name, value) in forwarded.chain(env.iter().cloned()) {
        command.arg("--env-var").arg(format!("{name}={value}")).env(&name, &value);
    }
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command
        .spawn()
        .map_err(|err| format!("cannot start `cargo lambda watch` (install cargo-lambda, or run `make dev`): {err}"))
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
