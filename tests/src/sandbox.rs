//! The process level as a sandbox (issue 23).
//!
//! First, the checked file is the loaded file at the process level too: the worker inherits
//! the host's checked open descriptor, verifies it against what the host checked (identity,
//! pin) before the dynamic loader sees it, and reports what it loaded, which the host
//! compares. The fixture plugin's ELF constructor writes `<library>.loaded` when mapped: its
//! absence proves that no code of a refused file ran.
//!
//! Then the escape attempts of the hostile fixture at the process level, each refused by the
//! kernel with its own error (Landlock: `EACCES`; seccomp and Landlock scoping: `EPERM`), the
//! host alive and the worker still serving; and the positive side: what is granted works.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime_api::{ErrorKind, TurnRequest};
use runtime_loader::sandbox::{Net, Policy};
use runtime_loader::{
    Isolation, LoaderOptions, ProcessOptions, RejectReason, ResolveError, Runtimes, SearchPath,
};
use serde_json::{Value, json};

use crate::support::{artifacts, install, install_patched, plugin_dir};

const SUFFIX: &str = std::env::consts::DLL_SUFFIX;

/// Process options for tests: the worker built from the workspace, a short grace.
fn process_options() -> ProcessOptions {
    ProcessOptions::DEFAULT
        .with_worker(&artifacts().worker)
        .with_grace(Duration::from_millis(300))
        .with_restart_backoff(Duration::from_millis(1))
        .with_crash_limit(1_000_000, Duration::from_secs(60))
}

fn process_registry(dir: &Path) -> Runtimes {
    let runtimes = Runtimes::with_options(
        LoaderOptions::STRICT
            .with_isolation(Isolation::Process)
            .with_process(process_options()),
    );
    runtimes.discover(&SearchPath::empty().with_dir(dir));
    runtimes
}

fn marker(library: &Path) -> PathBuf {
    PathBuf::from(format!("{}.loaded", library.display()))
}

/// The fixture library (whose constructor writes a marker) carrying echo's manifest.
fn impostor(staging: &Path, stem: &str) -> PathBuf {
    let echo: Value =
        serde_json::to_value(runtime_loader::inspect::read_manifest(&artifacts().echo).unwrap())
            .unwrap();
    install_patched(staging, &artifacts().fixture, stem, |m| {
        let root_symbol = m["root_symbol"].clone();
        *m = echo;
        m["root_symbol"] = root_symbol;
    })
}

fn rejected_reason(error: ResolveError) -> RejectReason {
    match error {
        ResolveError::Rejected { reason, .. } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The checked file is the loaded file, at the process level.

#[test]
fn a_file_swapped_after_discovery_is_refused_at_the_process_level() {
    let dir = plugin_dir();
    let staging = plugin_dir();
    let lib = install(dir.path(), &artifacts().echo, "libecho");
    let runtimes = process_registry(dir.path());
    assert!(runtimes.is_registered("echo"));
    std::fs::rename(impostor(staging.path(), "libecho"), &lib).unwrap();
    let reason = rejected_reason(runtimes.resolve("echo").unwrap_err());
    let RejectReason::Changed { detail } = &reason else {
        panic!("expected `changed`, got {reason:?}");
    };
    assert!(detail.contains("replaced after discovery"), "{detail}");
    assert!(!marker(&lib).exists(), "the swapped-in file's code ran");
    // Configuration checks start a worker too: refused the same way.
    assert!(matches!(
        runtimes.validate_config("echo", &json!(null)),
        Err(ResolveError::Rejected {
            reason: RejectReason::Changed { .. },
            ..
        })
    ));
    assert!(!marker(&lib).exists());
}

#[test]
fn pins_hold_at_the_process_level() {
    let dir = plugin_dir();
    let lib = install(dir.path(), &artifacts().fixture, "libfixture");
    std::fs::write(
        dir.path().join("plugins.lock"),
        format!("{}  libfixture{SUFFIX}\n", "0".repeat(64)),
    )
    .unwrap();
    let runtimes = process_registry(dir.path());
    let reason = rejected_reason(runtimes.resolve("fixture").unwrap_err());
    assert!(
        matches!(reason, RejectReason::HashMismatch { .. }),
        "{reason:?}"
    );
    assert!(!marker(&lib).exists(), "a library failing its pin ran");

    // With the right pin the worker loads it, hashes it itself and says so.
    let hash = runtime_loader::security::sha256_file(&lib).unwrap();
    std::fs::write(
        dir.path().join("plugins.lock"),
        format!("{hash}  libfixture{SUFFIX}\n"),
    )
    .unwrap();
    let runtimes = process_registry(dir.path());
    let handle = runtimes.resolve("fixture").unwrap();
    let output = io().block_on(handle.run_turn(TurnRequest::new("pinned")));
    assert_eq!(output.unwrap().content, "fixture:pinned");
    // Loaded in the worker, whose sandbox kept the fixture's constructor from writing its
    // marker beside the library (no write grant there).
    assert!(!marker(&lib).exists());
}

#[test]
fn a_restarted_worker_refuses_a_file_modified_after_the_first_start() {
    use std::io::Write as _;
    let dir = plugin_dir();
    let lib = install(dir.path(), &artifacts().hostile, "libhostile");
    // One worker, so that the crash below and the restart happen in the same place.
    let runtimes = Runtimes::with_options(
        LoaderOptions::STRICT
            .with_isolation(Isolation::Process)
            .with_process(process_options().with_pool_size(1)),
    );
    runtimes.discover(&SearchPath::empty().with_dir(dir.path()));
    let handle = runtimes.resolve("hostile").unwrap();
    let rt = io();
    assert_eq!(
        rt.block_on(handle.run_turn(TurnRequest::new("hello")))
            .unwrap()
            .content,
        "ok:hello"
    );
    // Modified in place while the first worker runs; then the worker dies.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&lib)
        .unwrap()
        .write_all(b"appended")
        .unwrap();
    let crashed = rt
        .block_on(handle.run_turn(TurnRequest::new("abort")))
        .unwrap_err();
    assert_eq!(crashed.kind, ErrorKind::Crashed, "{crashed}");
    // The next worker inherits the same open file, sees it changed and refuses it.
    let refused = rt
        .block_on(handle.run_turn(TurnRequest::new("hello")))
        .unwrap_err();
    assert!(
        refused.message.contains("changed after it was checked")
            && refused.message.contains("modified"),
        "{refused}"
    );
}

fn io() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Escape attempts: each refused by the kernel, the host alive, the worker still serving.

/// A registry of the hostile plugin at the process level with `grants`.
fn hostile_registry(grants: Policy) -> (tempfile::TempDir, Runtimes) {
    hostile_registry_with(process_options().with_grants(grants))
}

/// A registry of the hostile plugin at the process level with these options.
fn hostile_registry_with(options: ProcessOptions) -> (tempfile::TempDir, Runtimes) {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().hostile, "libhostile");
    let runtimes = Runtimes::with_options(
        LoaderOptions::STRICT
            .with_isolation(Isolation::Process)
            .with_process(options),
    );
    runtimes.discover(&SearchPath::empty().with_dir(dir.path()));
    (dir, runtimes)
}

/// Runs each prompt on one worker; returns the answers. Asserts after each that the host is
/// alive (this process) and the worker still serves.
fn attempts(runtimes: &Runtimes, prompts: &[&str]) -> Vec<String> {
    let rt = io();
    let handle = runtimes.resolve("hostile").unwrap();
    prompts
        .iter()
        .map(|prompt| {
            let answer = rt
                .block_on(handle.run_turn(TurnRequest::new(*prompt)))
                .unwrap_or_else(|e| panic!("{prompt}: {e}"))
                .content;
            let after = rt
                .block_on(handle.run_turn(TurnRequest::new("still-here")))
                .unwrap()
                .content;
            assert_eq!(after, "ok:still-here", "after {prompt}");
            answer
        })
        .collect()
}

const LANDLOCK_DENIED: &str = "denied: Permission denied";
const SECCOMP_DENIED: &str = "denied: Operation not permitted";

#[test]
fn the_host_is_out_of_reach_environ_mem_ptrace_kill_stop() {
    let (_dir, runtimes) = hostile_registry(Policy::default());
    let answers = attempts(
        &runtimes,
        &[
            "parent-environ",
            "parent-mem",
            "ptrace-parent",
            "kill-parent",
            "stop-parent",
        ],
    );
    // /proc outside the worker's own is not granted (Landlock); ptrace is filtered (seccomp);
    // signals outside the sandbox are scoped away (Landlock ABI 6).
    assert!(
        answers[0].starts_with(LANDLOCK_DENIED),
        "environ: {}",
        answers[0]
    );
    assert!(
        answers[1].starts_with(LANDLOCK_DENIED),
        "mem: {}",
        answers[1]
    );
    assert!(
        answers[2].starts_with(SECCOMP_DENIED),
        "ptrace: {}",
        answers[2]
    );
    assert!(
        answers[3].starts_with(SECCOMP_DENIED),
        "kill: {}",
        answers[3]
    );
    assert!(
        answers[4].starts_with(SECCOMP_DENIED),
        "stop: {}",
        answers[4]
    );
}

#[test]
fn home_is_neither_readable_nor_writable_and_loopback_is_unreachable() {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    let private = tempfile::tempdir_in(&home).unwrap();
    let secret = private.path().join("secret.txt");
    std::fs::write(&secret, "the user's secret").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_dir, runtimes) = hostile_registry(Policy::default());
    let planted = private.path().join("planted.txt");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("engine.sock");
    let unix = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let answers = attempts(
        &runtimes,
        &[
            &format!("read:{}", secret.display()),
            &format!("write:{}", planted.display()),
            &format!("connect:{port}"),
            &format!("udp:{udp_port}"),
            &format!("unix:{}", socket.display()),
        ],
    );
    // UDP and unix sockets are refused by the seccomp filter when no network is granted.
    assert!(
        answers[3].starts_with(SECCOMP_DENIED),
        "udp: {}",
        answers[3]
    );
    assert!(
        answers[4].starts_with(SECCOMP_DENIED),
        "unix: {}",
        answers[4]
    );
    udp.set_nonblocking(true).unwrap();
    assert!(udp.recv_from(&mut [0; 8]).is_err(), "a datagram arrived");
    unix.set_nonblocking(true).unwrap();
    assert!(unix.accept().is_err(), "a unix connection arrived");
    assert!(answers[0].starts_with(LANDLOCK_DENIED), "{}", answers[0]);
    assert!(answers[1].starts_with(LANDLOCK_DENIED), "{}", answers[1]);
    assert!(!planted.exists());
    // No network granted: not even a socket (seccomp); with ports granted, Landlock refuses
    // the others (next test).
    assert!(answers[2].starts_with(SECCOMP_DENIED), "{}", answers[2]);
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "a connection reached the listener"
    );
}

#[test]
fn a_plugin_granted_one_port_and_one_folder_reaches_them_and_nothing_else() {
    let granted = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "outside").unwrap();
    std::fs::write(granted.path().join("notes"), "inside").unwrap();
    // A symlink inside the granted folder that leads outside it.
    std::os::unix::fs::symlink(outside.path().join("secret"), granted.path().join("link")).unwrap();
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = open.local_addr().unwrap().port();
    let other = closed.local_addr().unwrap().port();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let (_dir, runtimes) = hostile_registry(
        Policy::default()
            .with_write(granted.path())
            .with_net(Net::Ports(vec![port])),
    );
    let g = granted.path().display();
    let answers = attempts(
        &runtimes,
        &[
            &format!("read:{g}/notes"),
            &format!("write:{g}/new"),
            &format!("connect:{port}"),
            &format!("connect:{other}"),
            &format!("read:{}/secret", outside.path().display()),
            &format!("read:{g}/link"),
            &format!("udp:{udp_port}"),
            &format!("udp:{port}"),
        ],
    );
    assert_eq!(answers[0], "ok: inside");
    assert_eq!(answers[1], "ok: written");
    assert_eq!(
        std::fs::read_to_string(granted.path().join("new")).unwrap(),
        "written by a plugin"
    );
    assert_eq!(answers[2], "ok: connected");
    assert!(open.accept().is_ok());
    assert!(answers[3].starts_with(LANDLOCK_DENIED), "{}", answers[3]);
    assert!(answers[4].starts_with(LANDLOCK_DENIED), "{}", answers[4]);
    assert!(
        answers[5].starts_with(LANDLOCK_DENIED),
        "symlink: {}",
        answers[5]
    );
    // With a port granted the worker shares the host's network, but only TCP sockets open
    // (Landlock filters TCP alone): no UDP, not even to the granted port.
    assert!(
        answers[6].starts_with(SECCOMP_DENIED),
        "udp: {}",
        answers[6]
    );
    assert!(
        answers[7].starts_with(SECCOMP_DENIED),
        "udp: {}",
        answers[7]
    );
    udp.set_nonblocking(true).unwrap();
    assert!(udp.recv_from(&mut [0; 8]).is_err(), "a datagram arrived");
}

#[test]
fn name_resolution_opens_udp_only_when_a_host_is_granted_by_name() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    // What `--grant hostile=net:models.example:8443` grants: the port, and name resolution.
    let named = runtime_loader::sandbox::net::parse_entry("models.example:8443").unwrap();
    assert!(named.resolves);
    let (_dir, runtimes) = hostile_registry(named.policy());
    let answers = attempts(&runtimes, &[&format!("udp:{udp_port}")]);
    // A seccomp filter cannot see where a datagram goes: UDP is open to any port then.
    assert_eq!(answers[0], "ok: sent 3");
    let mut buffer = [0; 8];
    let (n, _) = udp.recv_from(&mut buffer).unwrap();
    assert_eq!(&buffer[..n], b"out");
    // The same port granted by address: no name to resolve, no UDP.
    let by_address = runtime_loader::sandbox::net::parse_entry("127.0.0.1:8443").unwrap();
    assert!(!by_address.resolves);
    let (_dir, runtimes) = hostile_registry(by_address.policy());
    let answers = attempts(&runtimes, &[&format!("udp:{udp_port}")]);
    assert!(answers[0].starts_with(SECCOMP_DENIED), "{}", answers[0]);
}

/// The seccomp filter's socket families and types, with one port granted (the worker on the
/// host's network): only TCP over IPv4 and IPv6, and netlink's routing protocol.
#[test]
fn with_a_port_granted_only_tcp_sockets_open() {
    let (_dir, runtimes) = hostile_registry(Policy::default().with_net(Net::Ports(vec![443])));
    let socket =
        |domain: i32, kind: i32, protocol: i32| format!("socket:{domain}:{kind}:{protocol}");
    let cases = [
        (socket(libc::AF_INET, libc::SOCK_STREAM, 0), true),
        (
            socket(
                libc::AF_INET6,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                libc::IPPROTO_TCP,
            ),
            true,
        ),
        (
            socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
            true,
        ),
        (socket(libc::AF_INET, libc::SOCK_DGRAM, 0), false),
        (
            socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
            false,
        ),
        (
            socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP),
            false,
        ),
        (socket(libc::AF_INET6, libc::SOCK_STREAM, 262), false), // MPTCP
        (socket(libc::AF_INET, 10, 0), false),                   // SOCK_PACKET
        (
            socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_SOCK_DIAG),
            false,
        ),
        (socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0), false),
        (socket(libc::AF_PACKET, libc::SOCK_RAW, 0), false),
        (socket(libc::AF_UNIX, libc::SOCK_STREAM, 0), false),
        (socket(libc::AF_ALG, libc::SOCK_SEQPACKET, 0), false),
        (socket(43, libc::SOCK_STREAM, 0), false), // AF_SMC
        (socket(libc::AF_TIPC, libc::SOCK_RDM, 0), false),
    ];
    let prompts: Vec<&str> = cases.iter().map(|(p, _)| p.as_str()).collect();
    let answers = attempts(&runtimes, &prompts);
    for ((prompt, opens), answer) in cases.iter().zip(&answers) {
        if *opens {
            assert_eq!(answer, "ok: opened", "{prompt}");
        } else {
            assert!(answer.starts_with(SECCOMP_DENIED), "{prompt}: {answer}");
        }
    }
}

/// A granted folder that a plugin turns into a symlink (here: the test does it) is not
/// followed by the next worker: the host resolved the grant, the worker opens it refusing
/// symlinks, and does not start.
#[test]
fn a_grant_turned_into_a_symlink_is_not_followed_by_the_next_worker() {
    let scratch = tempfile::tempdir().unwrap();
    let granted = scratch.path().join("granted");
    let elsewhere = scratch.path().join("elsewhere");
    std::fs::create_dir(&granted).unwrap();
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(granted.join("notes"), "granted").unwrap();
    std::fs::write(elsewhere.join("notes"), "elsewhere").unwrap();
    let (_dir, runtimes) = hostile_registry(Policy::default().with_read(&granted));
    let handle = runtimes.resolve("hostile").unwrap();
    let rt = io();
    let read = format!("read:{}/notes", granted.display());
    let first = rt
        .block_on(handle.run_turn(TurnRequest::new(read.as_str())))
        .unwrap();
    assert_eq!(first.content, "ok: granted");
    std::fs::rename(&granted, scratch.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &granted).unwrap();
    // End the pool's workers; the next ones start with the same (resolved) grant.
    for _ in 0..4 {
        let _ = rt.block_on(handle.run_turn(TurnRequest::new("abort")));
    }
    let after = rt.block_on(handle.run_turn(TurnRequest::new(read.as_str())));
    match after {
        Ok(output) => assert!(
            output.content.starts_with(LANDLOCK_DENIED),
            "the symlink was followed: {}",
            output.content
        ),
        Err(error) => assert!(
            error.message.contains("without following a symlink"),
            "{error}"
        ),
    }
}

#[test]
fn what_the_operator_denies_is_gone_whatever_grants_it() {
    use runtime_loader::sandbox::Denial;
    let readable = tempfile::tempdir().unwrap();
    let hidden = tempfile::tempdir().unwrap();
    std::fs::write(readable.path().join("notes"), "readable").unwrap();
    std::fs::write(hidden.path().join("notes"), "hidden").unwrap();
    let kept = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let kept_port = kept.local_addr().unwrap().port();
    let taken_port = taken.local_addr().unwrap().port();
    let options = process_options()
        .with_grants(
            Policy::default()
                .with_write(readable.path())
                .with_write(hidden.path())
                .with_net(Net::Ports(vec![kept_port, taken_port])),
        )
        .with_runtime_denials(vec![
            (
                "hostile".to_owned(),
                Denial::Write(Some(readable.path().to_owned())),
            ),
            ("*".to_owned(), Denial::Read(Some(hidden.path().to_owned()))),
            ("hostile".to_owned(), Denial::Net(Some(taken_port))),
        ]);
    let (_dir, runtimes) = hostile_registry_with(options);
    // What the worker gets, as `runtimes info` shows it.
    let policy = runtimes
        .sandbox_policy("hostile", &Value::Null)
        .unwrap()
        .unwrap();
    assert_eq!(policy.read, [readable.path()]);
    assert!(policy.write.is_empty(), "{policy:?}");
    assert_eq!(policy.net, Net::Ports(vec![kept_port]));
    let r = readable.path().display();
    let h = hidden.path().display();
    let answers = attempts(
        &runtimes,
        &[
            &format!("read:{r}/notes"),
            &format!("write:{r}/new"),
            &format!("read:{h}/notes"),
            &format!("connect:{kept_port}"),
            &format!("connect:{taken_port}"),
        ],
    );
    assert_eq!(answers[0], "ok: readable");
    assert!(answers[1].starts_with(LANDLOCK_DENIED), "{}", answers[1]);
    assert!(!readable.path().join("new").exists());
    assert!(answers[2].starts_with(LANDLOCK_DENIED), "{}", answers[2]);
    assert_eq!(answers[3], "ok: connected");
    assert!(answers[4].starts_with(LANDLOCK_DENIED), "{}", answers[4]);
    taken.set_nonblocking(true).unwrap();
    assert!(
        taken.accept().is_err(),
        "a connection reached the denied port"
    );
}

#[test]
fn a_denial_the_kernel_cannot_enforce_refuses_the_runtime() {
    use runtime_loader::sandbox::Denial;
    let granted = tempfile::tempdir().unwrap();
    // A file inside a granted folder: Landlock grants the whole folder, without exceptions.
    let options = process_options()
        .with_grants(Policy::default().with_read(granted.path()))
        .with_runtime_denials(vec![(
            "hostile".to_owned(),
            Denial::Read(Some(granted.path().join("secret"))),
        )]);
    let (_dir, runtimes) = hostile_registry_with(options);
    let error = match runtimes.resolve("hostile") {
        Err(ResolveError::Factory { error, .. }) => error,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error}");
    assert_eq!(error.metadata["error"], "sandbox_unenforceable", "{error}");
    assert!(
        error.message.contains("cannot deny reading")
            && error.message.contains("deny the wider grant itself"),
        "{error}"
    );
    assert!(runtimes.sandbox_policy("hostile", &Value::Null).is_err());
}

#[test]
fn allocating_past_the_default_limit_crashes_only_the_worker() {
    let (_dir, runtimes) = hostile_registry(Policy::default());
    let handle = runtimes.resolve("hostile").unwrap();
    let rt = io();
    // The default address-space limit is 4 GiB.
    let error = rt
        .block_on(handle.run_turn(TurnRequest::new("allocate:5368709120")))
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Crashed, "{error}");
    assert!(
        error
            .message
            .contains("memory allocation of 5368709120 bytes failed"),
        "{error}"
    );
    let after = rt.block_on(handle.run_turn(TurnRequest::new("x"))).unwrap();
    assert_eq!(after.content, "ok:x");
}

/// Runs `runtimes` over `dir` (as `uid` when given), returns its output.
fn cli(dir: &Path, uid: Option<u32>, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    use std::os::unix::process::CommandExt as _;
    let mut command = std::process::Command::new(&artifacts().runtimes);
    command
        .arg("--plugin-dir")
        .arg(dir)
        .args(args)
        .env_remove("AGENT_RUNTIMES_PATH")
        .env_remove("AGENT_RUNTIMES_ISOLATION")
        .env("AGENT_RUNTIMES_WORKER", &artifacts().worker)
        .stdin(std::process::Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    if let Some(uid) = uid {
        command.uid(uid);
    }
    command.output().unwrap()
}

/// The processes named `name` (their `comm`).
fn named(name: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Waits (bounded) until no process is named `name`.
fn wait_none_named(name: &str) {
    let started = std::time::Instant::now();
    while !named(name).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} outlived its worker: {:?}",
            named(name)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_setsid_daemon_is_gone_when_the_host_exits() {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().hostile, "libhostile");
    let name = format!("dmn{}", std::process::id() % 100_000);
    // Control: while its host runs, the daemon is there.
    let (_plugins, runtimes) = hostile_registry(Policy::default());
    let answer = attempts(&runtimes, &[&format!("daemon:{name}")]);
    assert!(answer[0].starts_with("daemon "), "{}", answer[0]);
    assert_eq!(named(&name).len(), 1, "the daemon is not running");
    // The runtime let go of: its worker and the daemon end.
    drop(runtimes);
    wait_none_named(&name);

    // A host that exits.
    let output = cli(
        dir.path(),
        None,
        &[],
        &["run", "hostile", &format!("daemon:{name}x"), "--isolate"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.starts_with("daemon "),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    wait_none_named(&format!("{name}x"));
}

#[test]
fn a_setsid_daemon_dies_with_a_sigkilled_host() {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().hostile, "libhostile");
    let name = format!("dmk{}", std::process::id() % 100_000);
    // The host holds the turn after the daemon has started (`daemon-hold`): it is SIGKILLed
    // meanwhile, so nothing of its own ends the worker or the daemon. As root, the host runs
    // as the unprivileged test user (namespaces without privilege).
    let mut host = std::process::Command::new(&artifacts().runtimes);
    if let Some(uid) = unprivileged_when_root(dir.path()) {
        std::os::unix::process::CommandExt::uid(&mut host, uid);
    }
    let mut host = host
        .arg("--plugin-dir")
        .arg(dir.path())
        .args([
            "run",
            "hostile",
            &format!("daemon-hold:{name}"),
            "--isolate",
        ])
        .env_remove("AGENT_RUNTIMES_PATH")
        .env_remove("AGENT_RUNTIMES_ISOLATION")
        .env("AGENT_RUNTIMES_WORKER", &artifacts().worker)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while named(&name).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the daemon never started"
        );
        if let Some(status) = host.try_wait().unwrap() {
            panic!("the host ended before the daemon started: {status}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    host.kill().unwrap();
    host.wait().unwrap();
    // The worker's relay dies with the host, its init with the relay, and with the init the
    // whole PID namespace, the daemon included.
    wait_none_named(&name);
}

/// As root: the unprivileged test user's uid, with `dir` opened to it; otherwise `None`.
fn unprivileged_when_root(dir: &Path) -> Option<u32> {
    let me = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if me.ok() != Some(0) {
        return None;
    }
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    Some(crate::support::other_user().0)
}

#[test]
fn the_plugin_is_pid_2_of_its_own_namespace() {
    let (_dir, runtimes) = hostile_registry(Policy::default());
    let answers = attempts(&runtimes, &["ns-pid", "pid"]);
    // PID 1 is the worker's init, which reaps orphans; the worker is its only child.
    assert_eq!(answers[0], "2");
    // The host still knows it by its own pid (`/proc` is the host's).
    let pid: u32 = answers[1].parse().unwrap();
    assert_ne!(pid, 2);
    assert!(Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn without_a_network_grant_there_is_no_network_interface_but_loopback() {
    let (_dir, runtimes) = hostile_registry(Policy::default());
    let answers = attempts(&runtimes, &["interfaces"]);
    // A network namespace of its own: a loopback (down), nothing else.
    assert_eq!(answers[0], "ok: lo");
    // Granted a port: the host's network, its interfaces and that port on 127.0.0.1.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_dir, runtimes) = hostile_registry(Policy::default().with_net(Net::Ports(vec![port])));
    let answers = attempts(&runtimes, &["interfaces", &format!("connect:{port}")]);
    let host: Vec<String> = std::fs::read_to_string("/proc/self/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_owned()))
        .collect();
    for interface in &host {
        assert!(
            answers[0].contains(interface.as_str()),
            "{interface}: {}",
            answers[0]
        );
    }
    assert_eq!(answers[1], "ok: connected");
    assert!(listener.accept().is_ok());
}

#[test]
fn forking_200_children_stops_at_the_process_cap() {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().hostile, "libhostile");
    // RLIMIT_NPROC binds only unprivileged users: as root, the CLI runs as the test user.
    let uid = unprivileged_when_root(dir.path());
    let output = cli(
        dir.path(),
        uid,
        &[("AGENT_RUNTIMES_WORKER_PROCESSES", "150")],
        &["run", "hostile", "fork:200", "--isolate"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let started: usize = stdout.trim().parse().unwrap();
    assert!(
        started < 200,
        "{started} children started past a cap of 150"
    );
}

// ---------------------------------------------------------------------------------------
// Permissions declared, shown and granted; the bundled runtimes work in the sandbox.

#[test]
fn info_shows_what_a_runtime_declares_and_where_it_is_enforced() {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().echo, "libecho");
    install(dir.path(), &artifacts().llm, "libllm_runtimes");
    let echo = cli(dir.path(), None, &[], &["info", "echo"]);
    let text = String::from_utf8_lossy(&echo.stdout);
    assert!(
        text.contains("declares:") && text.contains("nothing"),
        "{text}"
    );
    assert!(text.contains("--allow-net"), "{text}");
    assert!(
        text.contains("NOT enforced at the inline and threads levels"),
        "{text}"
    );
    let openai = cli(
        dir.path(),
        None,
        &[],
        &["info", "openai", "--allow-read", "/srv/models"],
    );
    let text = String::from_utf8_lossy(&openai.stdout);
    assert!(text.contains("{config:base_url}"), "{text}");
    assert!(text.contains("/srv/models"), "{text}");
    let json = cli(dir.path(), None, &[], &["info", "openai", "--json"]);
    let entry: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(entry["permissions"], json!({"net": ["{config:base_url}"]}));
    // `check FILE` says what each runtime asks for; `check --sandbox` what each one gets.
    let library = dir.path().join(format!("libllm_runtimes{SUFFIX}"));
    let check = cli(dir.path(), None, &[], &["check", library.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains(r#"asks for: {"net":["{config:base_url}"]}"#),
        "{text}"
    );
    let sandbox = cli(
        dir.path(),
        None,
        &[],
        // An alias names the runtime too.
        &[
            "check",
            "--sandbox",
            "--json",
            "--deny",
            "openai-compatible=all",
        ],
    );
    let report: Value = serde_json::from_slice(&sandbox.stdout).unwrap();
    let openai = report["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "openai")
        .unwrap();
    assert_eq!(openai["gets"]["net"], "none", "{report}");
}

#[test]
fn the_command_runtime_runs_its_declared_program_in_the_sandbox() {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().command, "libcommand_runtime");
    let output = cli(
        dir.path(),
        None,
        &[],
        &[
            "run",
            "command",
            "hello",
            "--isolate",
            "--config",
            r#"{"program": "tr", "args": ["a-z", "A-Z"]}"#,
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("HELLO"),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn openai_reaches_the_port_of_its_base_url_and_only_that() {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().llm, "libllm_runtimes");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The server accepts and hangs up: the turn fails, but only after connecting.
    let server = std::thread::spawn(move || listener.accept().is_ok());
    let config = format!(r#"{{"base_url": "http://127.0.0.1:{port}/v1", "model": "m"}}"#);
    let output = cli(
        dir.path(),
        None,
        &[],
        &[
            "run",
            "openai",
            "hi",
            "--isolate",
            "--timeout",
            "20",
            "--config",
            &config,
        ],
    );
    assert!(!output.status.success());
    assert!(server.join().unwrap(), "the declared port was not reached");
}

#[test]
fn escape_attempts_fail_for_an_unprivileged_host_too() {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().hostile, "libhostile");
    // As root, the host (the CLI) runs as the unprivileged test user; otherwise as ourselves.
    let uid = unprivileged_when_root(dir.path());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let connect = format!("connect:{}", listener.local_addr().unwrap().port());
    for (prompt, expected) in [
        ("parent-environ", LANDLOCK_DENIED),
        ("parent-mem", LANDLOCK_DENIED),
        ("ptrace-parent", SECCOMP_DENIED),
        ("kill-parent", SECCOMP_DENIED),
        ("stop-parent", SECCOMP_DENIED),
        (connect.as_str(), SECCOMP_DENIED),
        ("read:/etc/passwd", LANDLOCK_DENIED),
        ("write:/tmp/agent-runtimes-planted", LANDLOCK_DENIED),
    ] {
        let output = cli(
            dir.path(),
            uid,
            &[("SECRET", "xyz")],
            &["run", "hostile", prompt, "--isolate"],
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        // The host survived (exit 0) and printed the refusal.
        assert!(
            output.status.success() && stdout.starts_with(expected),
            "{prompt}: {:?} {stdout} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !stdout.contains("xyz"),
            "{prompt}: the host's secret leaked"
        );
    }
    assert!(!Path::new("/tmp/agent-runtimes-planted").exists());
}

#[test]
fn without_user_namespaces_the_process_level_is_refused_unless_weaker_is_accepted() {
    // A user namespace of util-linux's `unshare` whose own limit of user namespaces is 0: the
    // kernel refuses the worker's namespaces there, as with the sysctl turned off.
    assert!(
        std::process::Command::new("unshare")
            .arg("--version")
            .output()
            .is_ok(),
        "this test needs util-linux's `unshare`"
    );
    let dir = plugin_dir();
    install(dir.path(), &artifacts().hostile, "libhostile");
    // Unprivileged, only our own uid is mapped into that namespace: `/` and `/tmp` (root's)
    // show as owned by `nobody` there, which the folder checks refuse whatever the sandbox.
    let root =
        std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    let insecure = if root { "" } else { "--allow-insecure" };
    let run = |extra: &str| {
        let script = format!(
            "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$0\" --plugin-dir \"$1\" {insecure} {extra} run hostile ns-pid --isolate"
        );
        std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "sh", "-c", &script])
            .arg(&artifacts().runtimes)
            .arg(dir.path())
            .env_remove("AGENT_RUNTIMES_PATH")
            .env_remove("AGENT_RUNTIMES_ISOLATION")
            .env_remove("AGENT_RUNTIMES_ACCEPT_WEAKER_SANDBOX")
            .env("AGENT_RUNTIMES_WORKER", &artifacts().worker)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let refused = run("");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains("cannot run at the process level")
            && stderr.contains("namespaces"),
        "{:?} {stderr}",
        refused.status
    );
    // Accepted: it runs, without a PID namespace of its own.
    let weaker = run("--accept-weaker-sandbox");
    let stdout = String::from_utf8_lossy(&weaker.stdout);
    assert!(
        weaker.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&weaker.stderr)
    );
    assert_ne!(stdout.trim(), "2");
}

/// `--grant RUNTIME=KIND:VALUE` gives one runtime more (here a file to read) and no other
/// runtime; `info` shows it; a malformed grant is a usage error.
#[test]
fn a_grant_for_one_runtime_reaches_that_runtime_only() {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().hostile, "libhostile");
    let shared = tempfile::tempdir().unwrap();
    let note = shared.path().join("note.txt");
    std::fs::write(&note, "granted").unwrap();
    let read = format!("read:{}", note.display());
    let grant = |runtime: &str| format!("{runtime}=read:{}", shared.path().display());
    let run = |grant: &str| {
        let output = cli(
            dir.path(),
            None,
            &[],
            &["run", "hostile", &read, "--isolate", "--grant", grant],
        );
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(run(&grant("hostile")).contains("granted"));
    let other = run(&grant("calm"));
    assert!(other.starts_with(LANDLOCK_DENIED), "{other}");

    let info = cli(
        dir.path(),
        None,
        &[],
        &["info", "hostile", "--grant", &grant("hostile")],
    );
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        text.contains(&shared.path().display().to_string()),
        "{text}"
    );

    let bad = cli(
        dir.path(),
        None,
        &[],
        &["list", "--grant", "hostile=fly:/x"],
    );
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no kind of grant"));

    // `--deny` takes the grant away again (deny wins), through the CLI and in `info`.
    let denied = cli(
        dir.path(),
        None,
        &[("AGENT_RUNTIMES_DENY", "hostile=read")],
        &[
            "run",
            "hostile",
            &read,
            "--isolate",
            "--grant",
            &grant("hostile"),
        ],
    );
    let stdout = String::from_utf8_lossy(&denied.stdout);
    assert!(stdout.starts_with(LANDLOCK_DENIED), "{denied:?}");
    let info = cli(
        dir.path(),
        None,
        &[],
        &[
            "info",
            "hostile",
            "--grant",
            &grant("hostile"),
            "--deny",
            "*=read",
        ],
    );
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        text.contains("you deny:     read\n") && text.contains(r#"worker gets:  {"read":[],"#),
        "{text}"
    );
    let bad = cli(
        dir.path(),
        None,
        &[],
        &["list", "--deny", "hostile=net:ssh"],
    );
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a port"));
}
