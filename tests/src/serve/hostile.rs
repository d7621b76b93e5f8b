//! `serve` under hostile clients (issue 25): slow headers, slow bodies and more connections
//! than the cap, over real loopback sockets; and a 500 whose body says nothing of the
//! server's files or a plugin's stderr. No sleep synchronises anything: each test waits for
//! an event (the server closing the socket, an answer), bounded in time.

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// The server's `host:port`.
fn address(server: &Server) -> String {
    server
        .url
        .strip_prefix("http://")
        .expect("an http URL")
        .to_owned()
}

/// Reads until the server closes the connection (bounded by `WAIT`); what it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the server closed the connection within the wait")
        .ok();
    String::from_utf8_lossy(&received).into_owned()
}

/// How many descriptors a process has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let server = Server::start(&["--header-read-timeout", "1", "--idle-timeout", "3"]).await;
    let started = Instant::now();
    let mut slow = TcpStream::connect(address(&server)).await.unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-")
        .await
        .unwrap();
    let answer = read_to_close(&mut slow).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    assert!(took < Duration::from_secs(10), "closed after {took:?}");
    assert!(!answer.contains("200 OK"), "{answer}");

    // A keep-alive connection idle between requests has the idle bound, not the head one:
    // idle for longer than the head bound, it still serves its next request...
    let mut idle = TcpStream::connect(address(&server)).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    idle.write_all(request).await.unwrap();
    let mut first = [0u8; 1024];
    let read = timeout(WAIT, idle.read(&mut first)).await.unwrap().unwrap();
    assert!(first[..read].starts_with(b"HTTP/1.1 200"));
    // The subject here is time passing on an idle connection, not synchronisation.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    idle.write_all(request).await.unwrap();
    // ... and is closed once idle for the idle bound after its last response.
    let started = Instant::now();
    let answer = read_to_close(&mut idle).await;
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took >= Duration::from_millis(2_500),
        "closed after {took:?}"
    );
    assert!(took < Duration::from_secs(10), "closed after {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trickled_body_meets_one_deadline_not_one_per_read() {
    let server = Server::start(&["--body-timeout", "2"]).await;
    let mut slow = TcpStream::connect(address(&server)).await.unwrap();
    slow.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = slow.into_split();
    // The client's pace (a byte every 100 ms, each read well within any per-read timeout);
    // the test waits for the server's answer, not for this.
    let trickle = tokio::spawn(async move {
        for _ in 0..1000 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = vec![0u8; 4096];
    let read = timeout(WAIT, reader.read(&mut answer))
        .await
        .expect("an answer within the wait")
        .unwrap();
    let took = started.elapsed();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_body_timeout"), "{answer}");
    assert!(took < Duration::from_secs(6), "answered after {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_wait_and_the_server_keeps_its_descriptors() {
    let server = Server::start(&["--max-connections", "8", "--header-read-timeout", "2"]).await;
    let pid = server.child.id().expect("running");
    let before = open_fds(pid);
    // 40 silent connections: the kernel accepts them all, the server holds at most 8.
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(TcpStream::connect(address(&server)).await.unwrap());
    }
    let during = open_fds(pid);
    assert!(
        during <= before + 8 + 2,
        "{during} descriptors open with 40 silent clients (before: {before})"
    );
    // The first ones are closed at their header deadline; a client that speaks is served
    // once a slot frees, while the others still wait.
    let started = Instant::now();
    let (status, _) = timeout(WAIT, get(&server, "/healthz"))
        .await
        .expect("served within the wait");
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(open_fds(pid) <= before + 8 + 2);
    drop(silent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_500_tells_the_client_a_request_id_and_the_log_the_detail() {
    let mut server = Server::start(&["--isolate"]).await;
    let plugins = server.plugins.path().display().to_string();
    for stream in [false, true] {
        let (status, headers, body) = post(
            &server,
            "/v1/chat/completions",
            &json!({"model": "fixture-crash", "messages": user("abort"), "stream": stream}),
        )
        .await;
        assert_eq!(status, 500, "{body}");
        assert_openai_error(&body, "server_error", None, "crashed");
        let message = body["error"]["message"].as_str().unwrap();
        let id = headers["x-request-id"].to_str().unwrap().to_owned();
        assert!(message.contains(&id), "{message}");
        let text = body.to_string();
        for secret in [plugins.as_str(), "libfixture", "told to abort", "/tmp"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        // The detail is in the server's log, under the same id.
        let logged = server.wait_stderr(&id).await;
        assert!(
            logged.contains("fixture-crash") || logged.contains("libfixture"),
            "{logged}"
        );
    }
}
