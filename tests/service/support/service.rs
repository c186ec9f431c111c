//! The service under test: in-process through `app::run` (as `main` runs it), or as the
//! real binary in its own process for signals, exit codes, logs and memory.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mongo_api::app::{self, AppError, Listeners};
use mongo_api::settings::Settings;
use mongo_api::shutdown::Shutdown;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::mongo::Mongo;

pub const BINARY: &str = env!("CARGO_BIN_EXE_mongo-api");

/// Settings connecting the service to `mongo` and database `db` as root; every other
/// setting at its default (whatever the shell running the tests exports).
pub fn settings(mongo: &Mongo, db: &str) -> Settings {
    let (user, password) = mongo.root_credentials();
    login_settings(mongo, db, &user, &password)
}

/// Settings connecting the service to `mongo` and database `db` as `user`: its host and
/// port, or, with `TEST_MONGO_REPLICA_SET`, a replica-set URI.
pub fn login_settings(mongo: &Mongo, db: &str, user: &str, password: &str) -> Settings {
    let mut settings = Settings::defaults();
    match mongo.replica_set_uri(user, password, db) {
        Some(uri) => settings.mongo.uri = Some(uri.into()),
        None => {
            settings.mongo.host = mongo.host.clone();
            settings.mongo.port = mongo.port;
            settings.mongo.user = Some(user.to_owned());
            settings.mongo.password = Some(password.to_owned().into());
        }
    }
    settings.mongo.db = Some(db.to_owned());
    settings.http.shutdown_grace_secs = 5;
    settings
}

/// The service running in this process on 127.0.0.1:0.
pub struct App {
    pub addr: SocketAddr,
    pub management: SocketAddr,
    shutdown: Shutdown,
    thread: Option<JoinHandle<Result<(), AppError>>>,
}

impl App {
    /// Connected to `mongo` as root; `adjust` changes what the test needs.
    pub fn start(mongo: &Mongo, db: &str, adjust: impl FnOnce(&mut Settings)) -> App {
        let mut settings = settings(mongo, db);
        adjust(&mut settings);
        App::start_with(settings)
    }

    pub fn start_with(settings: Settings) -> App {
        let listeners = Listeners::local().expect("bind");
        let addr = listeners.api.local_addr().expect("address");
        let management = listeners.management.local_addr().expect("address");
        let shutdown = Shutdown::new();
        let thread = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || app::run(listeners, settings, shutdown))
        };
        App {
            addr,
            management,
            shutdown,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn management_url(&self, path: &str) -> String {
        format!("http://{}{}", self.management, path)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            // A panic in the service thread is reported by the test that saw it fail.
            let _ = thread.join();
        }
    }
}

/// The real binary in its own process, its stdout and stderr collected.
pub struct Process {
    child: Child,
    pub addr: SocketAddr,
    pub management: SocketAddr,
    output: Arc<Mutex<String>>,
}

fn collect(
    stream: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
    ready: Option<std::sync::mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Some(tx) = &ready {
                if line.contains(r#""message":"listening""#) {
                    let _ = tx.send(line.clone());
                }
            }
            let mut out = into.lock().unwrap();
            out.push_str(&line);
            out.push('\n');
        }
    });
}

impl Process {
    /// Starts the binary with only these environment variables (plus a loopback listen
    /// address on a free port unless given) and waits until it listens.
    pub fn start(env: &[(&str, String)]) -> Process {
        Process::start_binary(BINARY.as_ref(), env)
    }

    /// Like [`Process::start`], for another build of the binary (the release one).
    pub fn start_binary(binary: &std::path::Path, env: &[(&str, String)]) -> Process {
        Process::spawn(Process::command(binary, env))
    }

    /// The command [`Process::start_binary`] runs.
    pub fn command(binary: &std::path::Path, env: &[(&str, String)]) -> Command {
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("BIND_ADDR", "127.0.0.1")
            .env("PORT", "0")
            .env("MANAGEMENT_PORT", "0");
        for (name, value) in env {
            command.env(name, value);
        }
        command
    }

    /// Starts `command` (which must run the binary) and waits until it listens.
    pub fn spawn(mut command: Command) -> Process {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the binary");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        collect(child.stdout.take().unwrap(), output.clone(), Some(tx));
        collect(child.stderr.take().unwrap(), output.clone(), None);
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("binary did not start; output:\n{}", output.lock().unwrap());
            }
        };
        let value: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        let address = |field: &str| -> SocketAddr {
            value[field]
                .as_str()
                .expect("address")
                .parse()
                .expect("socket address")
        };
        Process {
            child,
            addr: address("address"),
            management: address("management_address"),
            output,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A raw connection to the API port, reads timing out after 30 s.
    pub fn connect(&self) -> std::net::TcpStream {
        let stream = std::net::TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set a read timeout");
        stream
    }

    /// A URL on the management listener (probes and metrics).
    pub fn management_url(&self, path: &str) -> String {
        format!("http://{}{}", self.management, path)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether the process has exited (without reaping it twice).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).expect("signal the service");
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Everything it printed so far, stdout and stderr interleaved by line.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    fn status_field(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc status"))
    }

    /// Peak resident memory so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_field("VmHWM:")
    }

    /// Like [`Process::peak_rss_kib`], `None` once the process is gone.
    pub fn try_peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    pub fn rss_kib(&self) -> u64 {
        self.status_field("VmRSS:")
    }

    pub fn threads(&self) -> u64 {
        self.status_field("Threads:")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// The binary connected to `mongo` and `db` as root, with `extra` variables.
pub fn start(mongo: &Mongo, db: &str, extra: &[(&'static str, &str)]) -> Process {
    let mut env = mongo_env(mongo, db);
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    Process::start(&env)
}

/// Runs the binary to completion (for `--help` and configuration errors).
pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BINARY);
    command.env_clear().args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run the binary")
}

/// Environment connecting the binary to `mongo` and `db` as root.
pub fn mongo_env(mongo: &Mongo, db: &str) -> Vec<(&'static str, String)> {
    let (user, password) = mongo.root_credentials();
    if let Some(uri) = mongo.replica_set_uri(&user, &password, db) {
        return vec![("MONGODB_URI", uri), ("MONGO_DB", db.to_owned())];
    }
    vec![
        ("MONGO_HOST", mongo.host.clone()),
        ("MONGO_PORT", mongo.port.to_string()),
        ("MONGO_USER", user),
        ("MONGO_PASSWORD", password),
        ("MONGO_DB", db.to_owned()),
    ]
}
