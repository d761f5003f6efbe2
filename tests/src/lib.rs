//! Helpers for end-to-end tests: find the real binaries cargo built, start
//! them on free ports with a fresh database, and stop them again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod amqp;
pub mod bench;
pub mod proxy;
pub mod tls;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// The path of a workspace binary next to the running test executable
/// (`target/<profile>/deps/this-test` → `target/<profile>/<name>`) or
/// next to the running bench binary (`target/<profile>/bench-verify`).
/// `cargo test --workspace` builds every binary before any test runs: each
/// binary's package has integration tests of its own (`tests/cli.rs`),
/// which is what makes cargo build it.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("target dir");
    // A test runs from `deps/`; a bench binary of this crate beside them.
    let profile_dir = if dir.ends_with("deps") {
        dir.parent().expect("target dir")
    } else {
        dir
    };
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` (or `cargo test --workspace`)",
        path.display()
    );
    path
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().expect("local addr").port()
}

/// A running binary, killed when dropped. Dropped while its test panics,
/// a process `start` began prints the end of what it logged: the test
/// harness shows that with the failure, which is how a timeout seen only
/// under CI's load can be traced afterwards.
pub struct Running {
    pub child: Child,
    pub port: u16,
    /// The binary's name, for those lines.
    name: String,
    /// What was read of stderr so far, and the reader (`start`).
    drained: Option<Drained>,
}

struct Drained {
    text: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: tokio::task::JoinHandle<()>,
}

/// How much of a process's log a failing test prints.
const LOG_TAIL_LINES: usize = 200;

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Reads stderr from now on (`start` does, for every process it
    /// starts), so that a process logging more than a pipe holds does not
    /// stall on a full pipe; `stderr_text` then returns all of it.
    fn drain_stderr(&mut self) {
        use tokio::io::AsyncReadExt;
        if let Some(mut stderr) = self.child.stderr.take() {
            let text = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let into = std::sync::Arc::clone(&text);
            let reader = tokio::spawn(async move {
                let mut buf = [0_u8; 8192];
                while let Ok(n @ 1..) = stderr.read(&mut buf).await {
                    into.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
            self.drained = Some(Drained { text, reader });
        }
    }

    /// Everything a process `start` began wrote to stderr; call once it
    /// has exited.
    pub async fn stderr_text(&mut self) -> String {
        let drained = self
            .drained
            .take()
            .expect("stderr is kept only for processes `start` began, and returned once");
        drained.reader.await.expect("stderr reader");
        let all = std::mem::take(&mut *drained.text.lock().unwrap());
        String::from_utf8_lossy(&all).into_owned()
    }

    /// The URL of `path` on this process when it serves HTTPS (with a
    /// certificate for `localhost`).
    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// Waits until `GET path` answers 200, or panics after `timeout`.
    pub async fn wait_ready(&mut self, path: &str, timeout: Duration) {
        let client = reqwest::Client::new();
        let url = self.url(path);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the process exited early with {status}");
            }
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path} not ready within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Starts a workspace binary with `KEYWARD_LISTEN` on a free port and
/// `env` added (and nothing else from this process's environment), its
/// stderr read from the start (`drain_stderr`; `stderr_text` still returns
/// it all): once a pipe nobody reads is full (~250 lines of the API's
/// per-request log) the process blocks on the write — a test polling a
/// revocation every 20 ms filled it in 5 s and then waited for ever on an
/// answer that could not come — and a failing test prints what was read.
pub fn start(name: &str, env: &[(&str, &str)]) -> Running {
    let mut running = start_under(&[], name, env);
    running.drain_stderr();
    running
}

/// `start`, the binary run by the command `under` names (a profiler such
/// as `valgrind --tool=callgrind`); with nothing `under`, the binary itself.
pub fn start_under(under: &[&str], name: &str, env: &[(&str, &str)]) -> Running {
    spawn_at(under, name, free_port(), env)
}

/// `start` on a given port: a process restarted where its clients expect
/// it (the soak's SIGKILL and restart).
pub fn start_at(name: &str, port: u16, env: &[(&str, &str)]) -> Running {
    spawn_at(&[], name, port, env)
}

fn spawn_at(under: &[&str], name: &str, port: u16, env: &[(&str, &str)]) -> Running {
    let mut cmd = match under.split_first() {
        Some((runner, args)) => {
            let mut cmd = Command::new(runner);
            cmd.args(args).arg(binary(name));
            cmd
        }
        None => Command::new(binary(name)),
    };
    cmd.current_dir(std::env::temp_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KEYWARD_LISTEN", format!("127.0.0.1:{port}"))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    Running {
        child: cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}")),
        port,
        name: name.to_owned(),
        drained: None,
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Some(drained) = &self.drained else {
            return;
        };
        let text = drained.text.lock().map(|t| t.clone()).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(LOG_TAIL_LINES);
        eprintln!(
            "---- {} (port {}): the last {} of {} lines it logged ----",
            self.name,
            self.port,
            lines.len() - from,
            lines.len()
        );
        for line in &lines[from..] {
            eprintln!("{line}");
        }
    }
}

/// Starts `keyward-api` on a free port with `env` added (`start`).
pub fn start_api(env: &[(&str, &str)]) -> Running {
    // Cheap argon2: these tests are about the process, not the cost.
    let mut all = vec![
        ("KEYWARD_ARGON2_MEMORY_KIB", "256"),
        ("KEYWARD_ARGON2_ITERATIONS", "1"),
    ];
    all.extend_from_slice(env);
    start("keyward-api", &all)
}

impl Running {
    /// Sends a signal (`TERM`, `KILL`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("process still running").to_string();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{name} {pid}");
    }

    /// Waits for the process to exit (at most `timeout`); its exit status.
    pub async fn exit_status(&mut self, timeout: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("did not exit within {timeout:?}"))
            .expect("wait for the process")
    }
}

/// Runs a binary to completion (killed after 60 s: a test never hangs on
/// a process that unexpectedly serves); returns (exit code, stdout, stderr).
pub async fn run_to_end(
    exe: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let running = Command::new(exe)
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} did not exit within 60 s", exe.display()))
        .expect("run binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts the contract for a bad setting: a non-zero exit, exactly one
/// line on stderr, no panic, and `secret` (if any) nowhere in it.
pub async fn assert_rejected(
    exe: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    secret: Option<&str>,
) {
    let (code, _, err) = run_to_end(exe, args, env).await;
    let what = format!("{} {args:?} {env:?}", exe.display());
    assert_ne!(code, 0, "{what}: should fail");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{what}: one line, got: {err}"
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
    if let Some(secret) = secret {
        assert!(!err.contains(secret), "{what}: echoed a secret: {err}");
    }
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after
/// `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
