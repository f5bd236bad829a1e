//! `cairn`: the dev server and CLI. See `cairn --help`.

use cairn_dev::DevError;
use cairn_dev::cli::{self, Style};
use cairn_dev::dev::{Dev, DevConfig};
use clap::Parser;
use std::process::{Child, Command, ExitCode};

mod args;

use args::{Cli, Commands, ConsoleArgs, DevArgs, RunsAction};

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
