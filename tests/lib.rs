//! Shared helpers of the workspace's integration tests and the AWS benchmark.
//!
//! [`FaultProxy`] sits between the AWS SDK and moto: it forwards every request, counts
//! requests and bytes per operation, and can answer chosen requests itself with a throttling
//! error or a 500, the way DynamoDB does under load.
#![allow(clippy::unwrap_used)] // Test support: a failed unwrap is a failed test.

use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with the n-th request (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward it to the upstream.
    None,
    /// Answer `400 ThrottlingException` (DynamoDB's shape).
    Throttle,
    /// Answer `500 InternalServerError`.
    ServerError,
}

/// Requests and bytes seen for one operation (the `X-Amz-Target` header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Requests.
    pub requests: usize,
    /// Request bytes (head and body).
    pub sent: usize,
    /// Response bytes (head and body).
    pub received: usize,
}

type Plan = Arc<dyn Fn(usize, &str) -> Fault + Send + Sync>;

/// A counting, fault-injecting HTTP/1.1 proxy on 127.0.0.1.
pub struct FaultProxy {
    url: String,
    traffic: Arc<Mutex<BTreeMap<String, Traffic>>>,
    injected: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Proxies to `upstream` (`http://127.0.0.1:port`), applying `plan` to each request
    /// (its index and operation).
    pub async fn start(upstream: &str, plan: impl Fn(usize, &str) -> Fault + Send + Sync + 'static) -> FaultProxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let traffic = Arc::new(Mutex::new(BTreeMap::new()));
        let injected = Arc::new(AtomicUsize::new(0));
        let counter = Arc::new(AtomicUsize::new(0));
        let plan: Plan = Arc::new(plan);
        let (t, i) = (Arc::clone(&traffic), Arc::clone(&injected));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, plan, counter, traffic, injected) =
                    (upstream.clone(), Arc::clone(&plan), Arc::clone(&counter), Arc::clone(&t), Arc::clone(&i));
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, plan, counter, traffic, injected).await;
                });
            }
        });
        FaultProxy { url, traffic, injected, task }
    }

    /// The proxy's URL, to use as the SDK endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Traffic per operation so far.
    pub fn traffic(&self) -> BTreeMap<String, Traffic> {
        self.traffic.lock().unwrap().clone()
    }

    /// Forgets the traffic counted so far.
    pub fn reset(&self) {
        self.traffic.lock().unwrap().clear();
    }

    /// How many faults were injected.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one HTTP/1.1 message (head + Content-Length body); `None` at end of stream.
async fn read_message(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<Option<(Vec<u8>, String)>> {
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|line| line.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let message: Vec<u8> = buffer.drain(..(head_end + length).min(buffer.len())).collect();
    Ok(Some((message, head)))
}

async fn serve(
    mut client: TcpStream,
    upstream: &str,
    plan: Plan,
    counter: Arc<AtomicUsize>,
    traffic: Arc<Mutex<BTreeMap<String, Traffic>>>,
    injected: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    let (mut from_client, mut from_server) = (Vec::new(), Vec::new());
    while let Some((request, head)) = read_message(&mut client, &mut from_client).await? {
        let operation = head
            .lines()
            .find_map(|line| line.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case("x-amz-target")))
            .map(|(_, value)| value.trim().rsplit('.').next().unwrap_or_default().to_string())
            .unwrap_or_else(|| "other".into());
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let response = match plan(n, &operation) {
            Fault::None => {
                server.write_all(&request).await?;
                let Some((response, _)) = read_message(&mut server, &mut from_server).await? else { return Ok(()) };
                response
            }
            fault => {
                injected.fetch_add(1, Ordering::SeqCst);
                let (status, body) = match fault {
                    Fault::Throttle => (
                        "400 Bad Request",
                        r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#,
                    ),
                    _ => (
                        "500 Internal Server Error",
                        r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal server error"}"#,
                    ),
                };
                format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            }
        };
        {
            let mut traffic = traffic.lock().unwrap();
            let entry = traffic.entry(operation).or_default();
            entry.requests += 1;
            entry.sent += request.len();
            entry.received += response.len();
        }
        client.write_all(&response).await?;
    }
    Ok(())
}

/// The workspace root.
pub fn workspace() -> String {
    format!("{}/..", env!("CARGO_MANIFEST_DIR"))
}

/// A free TCP port on 127.0.0.1 for a server a test starts, never the same twice in one process
/// (tests run in parallel, and two servers handed one port would collide). It is taken below
/// the kernel's ephemeral range (`ip_local_port_range`), so no port the kernel hands out
/// meanwhile can take it before the server binds it: another test's listener on port 0, or an
/// outgoing connection's source port. That race once gave a differential test's node app's port
/// to another test's stub server, which answered the readiness check and then went away.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let floor = 10_000.min(ephemeral / 2);
    let span = ephemeral - floor;
    // Processes start at different places, so two test binaries rarely try the same ports.
    let start = u64::from(std::process::id()) * 7_919;
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for n in 0..span {
        let port = floor + u16::try_from((start + u64::from(n)) % u64::from(span)).unwrap_or(0);
        if !handed_out.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {floor} and {ephemeral}");
}

/// Where [`spawn_listening`] writes what `what` on `port` prints.
pub fn spawn_log(what: &str, port: u16) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("cairn-test-{what}-{port}.log"))
}

/// Spawns `command` with its output in [`spawn_log`] and waits (up to 60 s: a loaded 2-core
/// machine starts node slowly) until it accepts connections on `port`. A process that exits or
/// never listens fails the test with its output, instead of leaving the test to fail later on
/// "connection refused" with nothing to go on.
#[track_caller]
pub fn spawn_listening(mut command: Command, port: u16, what: &str) -> Child {
    let path = spawn_log(what, port);
    let log = std::fs::File::create(&path).unwrap();
    let mut child = command.stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
    let failure = |reason: String| {
        let output = std::fs::read_to_string(&path).unwrap_or_default();
        format!("{what} on port {port} {reason}; its output ({}):\n{output}", path.display())
    };
    for _ in 0..1_200 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{}", failure(format!("exited with {status} before listening")));
        }
        if listening(port) {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{}", failure("did not listen within 60 s".to_string()));
}

/// Whether a server accepts connections on 127.0.0.1:`port`. A connection whose local and peer
/// addresses are equal is Linux's TCP self-connect (the kernel picked `port` itself as the
/// source port while nothing listened), not a server.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port))
        .is_ok_and(|stream| stream.local_addr().ok() != stream.peer_addr().ok())
}

/// `cargo lambda watch` in its own process group, stopped (with the functions it started) on drop.
#[derive(Debug)]
pub struct Watch {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    cargo_lambda: String,
}

impl Watch {
    /// Starts `cargo lambda watch` with `env` (passed with `--env-var` and set on the process),
    /// building the functions with the local SQLite store and the test build's dependency
    /// features (`-F cairn-tests/watch`, see tests/Cargo.toml).
    pub fn start(cargo_lambda: &str, env: &[(&str, String)]) -> Watch {
        Watch::start_on(cargo_lambda, free_port(), env)
    }

    /// Like [`Watch::start`], on `port`.
    pub fn start_on(cargo_lambda: &str, port: u16, env: &[(&str, String)]) -> Watch {
        let log =
            std::fs::File::create(std::env::temp_dir().join(format!("cairn-cargo-lambda-watch-{port}.log"))).unwrap();
        let mut command = Command::new(cargo_lambda);
        command
            .args(["lambda", "watch", "-A", "127.0.0.1", "-P", &port.to_string(), "-F", "cairn-tests/watch"])
            .current_dir(workspace());
        for (name, value) in env {
            command.arg("--env-var").arg(format!("{name}={value}")).env(name, value);
        }
        let child = command.stdout(log.try_clone().unwrap()).stderr(log).process_group(0).spawn().unwrap();
        let mut watch = Watch { child, port, cargo_lambda: cargo_lambda.to_string() };
        // Listening within 60 s on a loaded machine; one that exits first (its port taken, say)
        // fails here, its log printed by the drop.
        for _ in 0..600 {
            if let Ok(Some(status)) = watch.child.try_wait() {
                panic!("cargo lambda watch exited with {status} before listening on port {port}");
            }
            if listening(port) {
                return watch;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("cargo lambda watch did not listen on port {port} within 60 s");
    }

    /// An HTTP client for calls through the watch: its first call compiles the function, so it
    /// waits up to 20 minutes, and then fails (with the watch's log) instead of hanging the suite.
    pub fn client() -> reqwest::Client {
        reqwest::Client::builder().timeout(Duration::from_secs(20 * 60)).build().unwrap()
    }

    /// `cargo lambda invoke FUNCTION --data-ascii PAYLOAD`: the function's JSON answer.
    pub fn invoke(&self, function: &str, payload: &Value) -> Value {
        let output = Command::new(&self.cargo_lambda)
            .args(["lambda", "invoke", "-A", "127.0.0.1", "-P", &self.port.to_string(), function, "--data-ascii"])
            .arg(payload.to_string())
            .current_dir(workspace())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "invoke {function} failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // A failed test shows why: a build error or a crashed function is only in this log.
        if std::thread::panicking() {
            let log = std::env::temp_dir().join(format!("cairn-cargo-lambda-watch-{}.log", self.port));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("cargo lambda watch's log ({}), last lines:", log.display());
            for line in tail.iter().rev() {
                eprintln!("  {line}");
            }
        }
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["--", &group]).status();
        let _ = self.child.wait();
    }
}

/// The tools `make test` provides to the integration tests, each found through
/// [`cairn::testing::require`]: `None` skips a test locally; under CI (`CI` set) a missing tool
/// fails it, naming the tool and how `make test` provides it.
pub mod tools {
    use cairn::testing::{require_env, require_path};

    /// moto's endpoint (`CAIRN_TEST_AWS_ENDPOINT`).
    #[track_caller]
    pub fn moto() -> Option<String> {
        require_env(
            "CAIRN_TEST_AWS_ENDPOINT",
            "moto",
            "make test runs the tests under infra/local/with-services.sh, which starts moto and sets it",
        )
    }

    /// The `cargo-lambda` executable (`CAIRN_CARGO_LAMBDA`).
    #[track_caller]
    pub fn cargo_lambda() -> Option<String> {
        require_env(
            "CAIRN_CARGO_LAMBDA",
            "cargo-lambda",
            "make test runs the tests under infra/local/with-services.sh, which installs it (infra/local/ensure-tools.sh cargo-lambda) and sets it",
        )
    }

    /// The venv holding the aws CLI (`CAIRN_TOOLS_VENV`).
    #[track_caller]
    pub fn aws_cli_venv() -> Option<String> {
        require_env(
            "CAIRN_TOOLS_VENV",
            "the aws CLI",
            "make test runs the tests under infra/local/with-services.sh, which installs it (infra/local/ensure-tools.sh moto) and sets it",
        )
    }

    /// The official `inngest` npm package under `dir` (node_modules/inngest), for node apps.
    #[track_caller]
    pub fn inngest_npm(dir: &str) -> Option<std::path::PathBuf> {
        require_path(
            format!("{dir}/node_modules/inngest"),
            "node's `inngest` package",
            &format!("make test runs `npm install` in {dir}"),
        )
    }

    /// Debian's headless Chromium.
    #[track_caller]
    pub fn chromium() -> Option<std::path::PathBuf> {
        require_path(
            "/usr/bin/chromium",
            "Chromium",
            "make test installs it with infra/local/ensure-tools.sh chromium (apt-get install -y chromium)",
        )
    }
}
