//! The real `edgeflow-edge` binary as a child process: `edgeflow-edge --config <file>`.
//!
//! The binary lives in another package, so `CARGO_BIN_EXE_edgeflow-edge` is not available
//! here. The first use in a test process runs `cargo build -p edgeflow-edge --bin
//! edgeflow-edge --features crash-points` into the same target directory and profile as
//! the running test (a no-op when it is up to date) and uses
//! `<target>/<profile>/edgeflow-edge`. Set `EDGEFLOW_EDGE_BIN=/path/to/edgeflow-edge` to
//! skip the build (the crash-point tests then need a binary built with that feature).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Builds a running [`EdgeAgent`].
///
/// ```ignore
/// let builder = EdgeAgent::builder();
/// let data_dir = builder.workdir().join("data");
/// let agent = builder
///     .config(format!(r#"data_dir = "{}" ..."#, data_dir.display()))
///     .spawn();
/// agent.wait_for_log_line("ready", Duration::from_secs(10)).await;
/// ```
pub struct EdgeAgentBuilder {
    binary: Option<PathBuf>,
    leading_args: Vec<OsString>,
    workdir: TempDir,
    config: Option<Config>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    name: String,
}

enum Config {
    Text(String),
    File(PathBuf),
}

impl EdgeAgentBuilder {
    /// A private temporary directory, removed when the agent is dropped: put the agent's
    /// data directory (store-and-forward log) here so it survives [`EdgeAgent::kill9`] +
    /// [`EdgeAgent::restart`].
    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    /// TOML config text, written to `<workdir>/edge.toml` and passed as `--config`.
    pub fn config(mut self, toml: impl Into<String>) -> Self {
        self.config = Some(Config::Text(toml.into()));
        self
    }

    /// An existing config file (e.g. one from `configs/`), passed as `--config`.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = Some(Config::File(path.into()));
        self
    }

    /// An extra command-line argument (after `--config <file>`).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// An environment variable for the agent. `RUST_LOG` defaults to the test's own or
    /// `info`; `NO_COLOR=1` is always set so log lines can be matched.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Runs another binary with the same harness (e.g. `edgeflow process`): `binary
    /// <leading_args..> --config <file> [args..]`.
    pub fn program(mut self, binary: impl Into<PathBuf>, leading_args: &[&str]) -> Self {
        self.binary = Some(binary.into());
        self.leading_args = leading_args.iter().map(OsString::from).collect();
        self
    }

    /// Prefix of the agent's echoed log lines (default `edge`), to tell agents apart.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Writes the config and starts `edgeflow-edge --config <file> [args..]`.
    pub fn spawn(self) -> EdgeAgent {
        let config_path = match self.config {
            Some(Config::File(path)) => path,
            Some(Config::Text(text)) => {
                let path = self.workdir.path().join("edge.toml");
                std::fs::write(&path, text)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
                path
            }
            None => panic!("EdgeAgent::builder(): call .config(..) or .config_file(..) first"),
        };
        let mut agent = EdgeAgent {
            binary: self.binary.unwrap_or_else(edge_binary),
            leading_args: self.leading_args,
            config_path,
            args: self.args,
            envs: self.envs,
            name: self.name,
            workdir: self.workdir,
            child: None,
            logs: Arc::new(Mutex::new(Vec::new())),
            run_started_at_line: 0,
        };
        agent.spawn_child();
        agent
    }
}

/// A running `edgeflow-edge` process, killed (SIGKILL) on drop. Its stdout and stderr
/// are collected line by line (and echoed, prefixed, into the test's captured output).
pub struct EdgeAgent {
    binary: PathBuf,
    leading_args: Vec<OsString>,
    config_path: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    name: String,
    workdir: TempDir,
    child: Option<Child>,
    logs: Arc<Mutex<Vec<String>>>,
    /// Index in `logs` of the first line of the current run.
    run_started_at_line: usize,
}

impl EdgeAgent {
    pub fn builder() -> EdgeAgentBuilder {
        EdgeAgentBuilder {
            binary: None,
            leading_args: Vec::new(),
            workdir: tempfile::Builder::new()
                .prefix("edgeflow-edge-test-")
                .tempdir()
                .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}")),
            config: None,
            args: Vec::new(),
            envs: Vec::new(),
            name: "edge".to_owned(),
        }
    }

    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Process id of the current run, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`: the agent dies without any chance to flush or acknowledge, like a
    /// gateway losing power. Waits until the process is gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL on Unix; fails only if already exited
            let _ = child.wait();
            self.note("--- killed with SIGKILL ---");
        }
    }

    /// SIGTERM (graceful shutdown request); use [`EdgeAgent::wait_exit`] afterwards.
    pub fn terminate(&mut self) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap_or_else(|e| panic!("cannot run `kill -TERM {pid}`: {e}"));
            assert!(status.success(), "`kill -TERM {pid}` failed: {status}");
        }
    }

    /// Waits for the current run to exit and returns its status; panics (with the logs)
    /// after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not exit within {timeout:?}\n{}",
                    self.name,
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The exit status if the current run has ended (without blocking).
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                self.note(&format!("--- exited: {status} ---"));
                Some(status)
            }
            Ok(None) => None,
            Err(e) => panic!("cannot poll {}: {e}", self.name),
        }
    }

    /// Sets (`Some`) or removes (`None`) an environment variable for the next run.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.envs.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.envs.push((key.into(), v.into()));
        }
    }

    /// Kills the current run (SIGKILL) if it is still running and starts the agent again
    /// with the same binary, config, arguments and working directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.note("--- restarted ---");
        self.spawn_child();
    }

    /// All log lines so far (every run), stdout and stderr interleaved as read.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// All log lines so far, one per line.
    pub fn log_text(&self) -> String {
        self.logs().join("\n")
    }

    /// Waits until a log line of the current run contains `needle` and returns it.
    /// Panics with the whole log if the run exits first or `timeout` passes.
    pub async fn wait_for_log_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.find_line(needle) {
                return line;
            }
            if let Some(status) = self.try_exit_status() {
                // The reader threads may still be draining the pipes.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Some(line) = self.find_line(needle) {
                    return line;
                }
                panic!(
                    "{} exited ({status}) without logging a line containing {needle:?}\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} logged no line containing {needle:?} within {timeout:?}\n{}",
                    self.name,
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn find_line(&self, needle: &str) -> Option<String> {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.iter()
            .skip(self.run_started_at_line)
            .find(|line| line.contains(needle))
            .cloned()
    }

    fn note(&self, line: &str) {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line.to_owned());
    }

    fn spawn_child(&mut self) {
        let mut command = Command::new(&self.binary);
        command
            .args(&self.leading_args)
            .arg("--config")
            .arg(&self.config_path)
            .args(&self.args)
            .current_dir(self.workdir.path())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .env("NO_COLOR", "1")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} --config {}: {e}",
                self.binary.display(),
                self.config_path.display()
            )
        });
        self.run_started_at_line = self.logs.lock().unwrap_or_else(|e| e.into_inner()).len();
        if let Some(stdout) = child.stdout.take() {
            collect_lines(stdout, Arc::clone(&self.logs), self.name.clone());
        }
        if let Some(stderr) = child.stderr.take() {
            collect_lines(stderr, Arc::clone(&self.logs), self.name.clone());
        }
        self.child = Some(child);
    }
}

impl Drop for EdgeAgent {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn collect_lines(pipe: impl Read + Send + 'static, logs: Arc<Mutex<Vec<String>>>, name: String) {
    // Spawned threads inherit the test's output capture, so the echo only shows for
    // failing tests (or with --nocapture).
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            eprintln!("[{name}] {line}");
            logs.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
}

/// Path of an up-to-date `edgeflow-edge` binary (built once per test process).
pub fn edge_binary() -> PathBuf {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(find_or_build_edge_binary) {
        Ok(path) => path.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn find_or_build_edge_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("EDGEFLOW_EDGE_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "EDGEFLOW_EDGE_BIN={} is not a file",
                path.display()
            ))
        };
    }
    // The test executable is <target>/<profile-dir>/deps/<test>-<hash>.
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected test executable path {}", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| format!("unexpected test executable path {}", exe.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .args([
            "build",
            "--quiet",
            "-p",
            "edgeflow-edge",
            "--bin",
            "edgeflow-edge",
            // inert unless a test sets EDGEFLOW_EDGE_CRASH_AT (edge/src/crash.rs)
            "--features",
            "crash-points",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some(profile) => {
            command.args(["--profile", profile]);
        }
        None => {
            return Err(format!(
                "unexpected profile directory {}",
                profile_dir.display()
            ))
        }
    }
    let output = command
        .output()
        .map_err(|e| format!("cannot run {cargo:?} build -p edgeflow-edge: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo build -p edgeflow-edge` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let binary = profile_dir.join(format!("edgeflow-edge{}", std::env::consts::EXE_SUFFIX));
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "cargo built edgeflow-edge but {} does not exist",
            binary.display()
        ))
    }
}
