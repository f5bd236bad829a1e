//! [`StubServer`]: a tiny local HTTP/1.1 server standing in for a third-party API a workflow
//! calls (one we cannot run in tests). It answers from a closure and records every request.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request the stub received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StubRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl StubRequest {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str())
    }
}

type Handler = Arc<dyn Fn(&StubRequest) -> (u16, Vec<(String, String)>, String) + Send + Sync>;

/// A local HTTP server on 127.0.0.1 and a free port; stopped when dropped.
pub struct StubServer {
    url: String,
    requests: Arc<Mutex<Vec<StubRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for StubServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StubServer").field("url", &self.url).finish()
    }
}

impl StubServer {
    /// Starts a server answering each request with `handler`'s (status, JSON body).
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn start(handler: impl Fn(&StubRequest) -> (u16, String) + Send + Sync + 'static) -> Self {
        Self::start_with_headers(move |request| {
            let (status, body) = handler(request);
            (status, Vec::new(), body)
        })
        .await
    }

    /// A server that accepts every connection and never answers (a hung API), to show that a
    /// caller's timeouts hold. It records nothing.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn hung() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free local port");
        let url = format!("http://{}", listener.local_addr().expect("a bound address"));
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        StubServer { url, requests: Arc::default(), task }
    }

    /// Like [`StubServer::start`], with response headers too.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn start_with_headers(
        handler: impl Fn(&StubRequest) -> (u16, Vec<(String, String)>, String) + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free local port");
        let url = format!("http://{}", listener.local_addr().expect("a bound address"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let recorded = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut socket).await else { return };
                    let (status, headers, body) = handler(&request);
                    recorded.lock().unwrap_or_else(|p| p.into_inner()).push(request);
                    let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
                    let response = format!(
                        "HTTP/1.1 {status} Stub\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        StubServer { url, requests, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<StubRequest> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for StubServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<StubRequest> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, path) = (request_line.next()?.to_string(), request_line.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let length: usize =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    Some(StubRequest { method, path, headers, body: String::from_utf8_lossy(&body).to_string() })
}
