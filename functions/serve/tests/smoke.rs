//! The `serve` binary as a plain HTTP server (the Vercel-style host): it answers on
//! 127.0.0.1:$PORT at /api/inngest with every function, and guards ingest with a key.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn request(port: u16, raw: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn serves_every_function_at_api_inngest_and_guards_ingest() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_serve"))
        .env("PORT", port.to_string())
        .env("INNGEST_DEV", "1")
        .env("CAIRN_EVENT_KEYS", "k-1")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("CAIRN_BUS")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        // Equal local and peer addresses would be a TCP self-connect, not the server.
        if TcpStream::connect(("127.0.0.1", port)).is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let get = request(port, "GET /api/inngest HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let ingest = request(
        port,
        "POST /api/inngest/send HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
    );
    let sent = request(
        port,
        "POST /api/inngest/send HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer k-1\r\nConnection: close\r\nContent-Length: 47\r\n\r\n{\"name\": \"app/my.event\", \"data\": {}, \"id\": \"x\"}",
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(get.starts_with("HTTP/1.1 200"), "{get}");
    assert!(get.contains("x-inngest-sdk: cairn:v0.1.0"), "{get}");
    // Every function of the one list, failure handlers included: order-approval's too.
    let count = cairn::Registry::new(cairn_functions::functions()).unwrap().functions().len();
    assert_eq!(count, 6, "hello, order-approval and its failure handler, order-charge, the two readwise");
    assert!(get.contains(&format!("\"function_count\":{count}")), "{get}");
    assert!(ingest.starts_with("HTTP/1.1 401"), "{ingest}");
    assert!(sent.starts_with("HTTP/1.1 200") && sent.contains("\"ids\":[\"ext-x\"]"), "{sent}");
}
