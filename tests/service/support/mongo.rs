//! The MongoDB side of the tests.
//!
//! The server is SecantusDB (`secantusd-rs`, a MongoDB wire-protocol server on
//! WiredTiger) run with `--auth` on a free port and a temporary directory, with a root
//! user created through the localhost exception, as with mongod. Most tests use one such
//! process for the whole test binary (`Mongo::shared`), each in databases of its own that
//! are dropped when the test ends; a test that kills, stops or steps down MongoDB starts
//! its own (`Mongo::start`).
//!
//! With `TEST_MONGODB_URI=mongodb://root:pw@host:port/?authSource=admin` every test runs
//! against that server instead (a real mongod, for instance); the user in the URI must be
//! allowed to create users. Tests that need to stop the database say so and skip there.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;

use mongodb::bson::{doc, Document, RawDocumentBuf};
use mongodb::options::{ClientOptions, ConnectionString, Credential, ServerAddress};
use mongodb::sync::{Client, Database};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use tempfile::TempDir;

pub const ROOT_USER: &str = "root";
pub const ROOT_PASSWORD: &str = "root-pw";

enum Backend {
    /// A process of this test's own, which it may kill, stop or restart.
    Own {
        child: Option<Child>,
        dir: TempDir,
        port: u16,
    },
    /// The process every test of this binary shares (`SHARED`).
    Shared,
    External {
        uri: String,
    },
}

pub struct Mongo {
    backend: Backend,
    /// Databases and users handed out, dropped at the end unless the whole server is
    /// this test's own to discard.
    databases: Mutex<Vec<String>>,
    users: Mutex<Vec<String>>,
    pub host: String,
    pub port: u16,
}

/// The process behind `Mongo::shared`, started on first use, stopped when the test
/// binary exits.
struct SharedServer {
    pid: Pid,
    port: u16,
    dir: PathBuf,
}

static SHARED: OnceLock<SharedServer> = OnceLock::new();

fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SECANTUSD") {
        return path.into();
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("secantusd-rs"))
            .find(|p| p.is_file())
    });
    let in_cargo = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cargo/bin/secantusd-rs"))
        .filter(|p| p.is_file());
    on_path.or(in_cargo).unwrap_or_else(|| {
        panic!(
            "secantusd-rs not found: install it with `just deps` (or set SECANTUSD, \
             or TEST_MONGODB_URI to use a running mongod)"
        )
    })
}

/// Starts the server; with `port` 0 it picks one and prints it.
fn spawn_server(dir: &std::path::Path, port: u16) -> (Child, u16) {
    let mut command = Command::new(server_binary());
    // Should the test binary be killed outright (no exit handlers run), the kernel stops
    // the server too. The signal follows the thread that forked it, so the shared server
    // is forked by a thread that lives as long as the process.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    let mut child = command
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--storage-path")
        .arg(dir)
        .args(["--auth", "--log-file-max", "16MB", "--cache-size", "128M"])
        // Make a journaled write (j:true, which the service asks for) reach the disk before
        // it is acknowledged, as mongod does; without it this server acknowledges from
        // memory and a SIGKILL loses the write.
        .arg("--sync-on-commit")
        .args(["--log-level", "WARNING"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start secantusd-rs");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        let line = match lines.next() {
            Some(Ok(line)) => line,
            _ => {
                let _ = child.kill();
                panic!("secantusd-rs exited before listening");
            }
        };
        if let Some(addr) = line.strip_prefix("secantusd-rs listening on ") {
            break addr
                .rsplit(':')
                .next()
                .and_then(|p| p.trim().parse().ok())
                .expect("port in the listening line");
        }
    };
    // Keep draining its output so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, port)
}

fn stop_child(child: &mut Child, signal: Signal) {
    stop_pid(Pid::from_raw(child.id() as i32), signal);
    let _ = child.wait();
}

/// Sends `signal`, waits up to five seconds for the process to exit, then kills it.
fn stop_pid(pid: Pid, signal: Signal) {
    let _ = kill(pid, signal);
    for _ in 0..100 {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(50)),
            _ => return,
        }
    }
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

/// Creates the root user through the localhost exception, as on a fresh mongod.
fn create_root_user(port: u16) {
    let anonymous = Client::with_uri_str(format!(
        "mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=5000"
    ))
    .expect("client");
    anonymous
        .database("admin")
        .run_command(doc! {
            "createUser": ROOT_USER, "pwd": ROOT_PASSWORD, "roles": ["root"]
        })
        .run()
        .expect("create the root user through the localhost exception");
}

fn shared_server() -> &'static SharedServer {
    SHARED.get_or_init(|| {
        let (started, on_start) = mpsc::channel();
        std::thread::Builder::new()
            .name("shared-mongodb".into())
            .spawn(move || {
                let dir = tempfile::tempdir().expect("temporary directory").keep();
                let (child, port) = spawn_server(&dir, 0);
                let pid = Pid::from_raw(child.id() as i32);
                started.send(SharedServer { pid, port, dir }).unwrap();
                // Lives as long as the process: its exit would deliver the death signal.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn the thread that owns the shared MongoDB");
        let server = on_start.recv().expect("the shared MongoDB starts");
        // SAFETY: registering a plain function; it runs once, at exit.
        assert_eq!(unsafe { libc::atexit(stop_shared_server) }, 0, "atexit");
        create_root_user(server.port);
        server
    })
}

extern "C" fn stop_shared_server() {
    if let Some(server) = SHARED.get() {
        stop_pid(server.pid, Signal::SIGTERM);
        let _ = std::fs::remove_dir_all(&server.dir);
    }
}

impl Mongo {
    /// This test's view of the MongoDB process the whole test binary shares.
    pub fn shared() -> Mongo {
        Self::external().unwrap_or_else(|| Mongo {
            backend: Backend::Shared,
            databases: Default::default(),
            users: Default::default(),
            host: "127.0.0.1".into(),
            port: shared_server().port,
        })
    }

    /// A MongoDB process of this test's own.
    pub fn start() -> Mongo {
        if let Some(external) = Self::external() {
            return external;
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let (child, port) = spawn_server(dir.path(), 0);
        create_root_user(port);
        Mongo {
            backend: Backend::Own {
                child: Some(child),
                dir,
                port,
            },
            databases: Default::default(),
            users: Default::default(),
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn external() -> Option<Mongo> {
        let uri = std::env::var("TEST_MONGODB_URI").ok()?;
        let cs = ConnectionString::parse(&uri).expect("TEST_MONGODB_URI parses");
        let (host, port) = match &cs.host_info {
            mongodb::options::HostInfo::HostIdentifiers(hosts) => match &hosts[0] {
                ServerAddress::Tcp { host, port } => (host.clone(), port.unwrap_or(27017)),
                other => panic!("unsupported TEST_MONGODB_URI host {other:?}"),
            },
            _ => panic!("TEST_MONGODB_URI must name its hosts (no mongodb+srv)"),
        };
        Some(Mongo {
            backend: Backend::External { uri },
            databases: Default::default(),
            users: Default::default(),
            host,
            port,
        })
    }

    /// With `TEST_MONGO_REPLICA_SET=NAME`, how the service connects: through a replica-set
    /// URI (the driver discovers the set from the server and follows its primary), as on
    /// a replica set run by the operator, instead of to the one named host directly.
    pub fn replica_set_uri(&self, user: &str, password: &str, db: &str) -> Option<String> {
        let set = std::env::var("TEST_MONGO_REPLICA_SET")
            .ok()
            .filter(|set| !set.is_empty())?;
        Some(self.set_uri(&set, user, password, db))
    }

    /// A URI naming replica set `set`, with this server as its seed.
    pub fn set_uri(&self, set: &str, user: &str, password: &str, db: &str) -> String {
        let escape = |text| utf8_percent_encode(text, NON_ALPHANUMERIC);
        format!(
            "mongodb://{}:{}@{}:{}/{db}?authSource=admin&replicaSet={set}",
            escape(user),
            escape(password),
            self.host,
            self.port
        )
    }

    /// A database name no other test uses.
    pub fn fresh_db(&self, name: &str) -> String {
        let db = super::unique_db(name);
        self.databases.lock().unwrap().push(db.clone());
        db
    }

    /// True when this test owns the server process (`Mongo::start` without
    /// `TEST_MONGODB_URI`).
    pub fn is_managed(&self) -> bool {
        matches!(self.backend, Backend::Own { .. })
    }

    /// A client logged in as root.
    pub fn admin(&self) -> Client {
        let mut options = match &self.backend {
            Backend::External { uri } => ClientOptions::parse(uri).run().expect("URI parses"),
            Backend::Own { .. } | Backend::Shared => {
                let mut o = ClientOptions::default();
                o.hosts = vec![ServerAddress::Tcp {
                    host: self.host.clone(),
                    port: Some(self.port),
                }];
                o.direct_connection = Some(true);
                o.credential = Some(
                    Credential::builder()
                        .username(ROOT_USER.to_owned())
                        .password(ROOT_PASSWORD.to_owned())
                        .source("admin".to_owned())
                        .build(),
                );
                o
            }
        };
        options.server_selection_timeout = Some(Duration::from_secs(10));
        Client::with_options(options).expect("client")
    }

    /// The username and password the service should log in with (root's).
    pub fn root_credentials(&self) -> (String, String) {
        match &self.backend {
            Backend::External { uri } => {
                let cs = ConnectionString::parse(uri).expect("URI parses");
                let c = cs.credential.expect("TEST_MONGODB_URI has credentials");
                (c.username.expect("user"), c.password.expect("password"))
            }
            Backend::Own { .. } | Backend::Shared => (ROOT_USER.into(), ROOT_PASSWORD.into()),
        }
    }

    pub fn create_user(&self, user: &str, password: &str, db: &str) {
        self.admin()
            .database("admin")
            .run_command(doc! {
                "createUser": user, "pwd": password,
                "roles": [{ "role": "readWrite", "db": db }]
            })
            .run()
            .expect("createUser");
        self.users.lock().unwrap().push(user.to_owned());
    }

    /// Inserts `count` documents `{"i": n, "pad": "xxx..."}` straight through the driver.
    pub fn preload(&self, db: &str, count: i32, pad: usize) {
        let documents: Vec<Document> = (0..count)
            .map(|i| doc! {"i": i, "pad": "x".repeat(pad)})
            .collect();
        self.database(db)
            .collection::<Document>("data")
            .insert_many(documents)
            .run()
            .expect("preload documents");
    }

    pub fn database(&self, name: &str) -> Database {
        self.admin().database(name)
    }

    /// Every document of `data`, in `_id` order, as stored.
    pub fn documents(&self, db: &str) -> Vec<Document> {
        // Read raw: deserializing into `Document` would take a stored {"$oid": ...} field
        // for Extended JSON and fail.
        self.database(db)
            .collection::<RawDocumentBuf>("data")
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .run()
            .expect("find")
            .map(|raw| raw.expect("cursor").to_document().expect("valid BSON"))
            .collect()
    }

    /// Makes the primary step down for `seconds` (forced: the stand-in is a one-member
    /// set, with no secondary to catch up), as MongoDB does before an upgrade or when an
    /// operator moves the primary; it rejects writes with NotWritablePrimary until it is
    /// elected again.
    pub fn step_down(&self, seconds: i32) {
        self.admin()
            .database("admin")
            .run_command(doc! {"replSetStepDown": seconds, "force": true})
            .run()
            .expect("replSetStepDown");
    }

    /// Kills the server (SIGKILL: no chance to flush anything).
    pub fn kill(&mut self) {
        match &mut self.backend {
            Backend::Own { child, .. } => {
                if let Some(mut c) = child.take() {
                    stop_child(&mut c, Signal::SIGKILL);
                }
            }
            _ => panic!("cannot stop a shared or external MongoDB: use Mongo::start"),
        }
    }

    /// Sends the server a signal: SIGSTOP makes it accept connections and never answer,
    /// like a hung or partitioned node; SIGCONT lets it go on.
    pub fn signal(&self, signal: Signal) {
        match &self.backend {
            Backend::Own {
                child: Some(child), ..
            } => kill(Pid::from_raw(child.id() as i32), signal).expect("signal MongoDB"),
            _ => panic!("cannot signal a shared, external or stopped MongoDB"),
        }
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        match &mut self.backend {
            Backend::Own { child, dir, port } => {
                assert!(child.is_none(), "server still running");
                let (c, _) = spawn_server(dir.path(), *port);
                *child = Some(c);
            }
            _ => panic!("cannot restart a shared or external MongoDB"),
        }
    }
}

impl Drop for Mongo {
    fn drop(&mut self) {
        if let Backend::Own { child, .. } = &mut self.backend {
            if let Some(mut c) = child.take() {
                stop_child(&mut c, Signal::SIGTERM);
            }
            return;
        }
        let admin = self.admin();
        for db in self.databases.get_mut().unwrap().iter() {
            let _ = admin.database(db).drop().run();
        }
        for user in self.users.get_mut().unwrap().iter() {
            let _ = admin
                .database("admin")
                .run_command(doc! {"dropUser": user})
                .run();
        }
    }
}

/// Prints why a test stops early; never used to hide a failure.
pub fn skip_unless_managed(mongo: &Mongo, test: &str) -> bool {
    if mongo.is_managed() {
        return false;
    }
    eprintln!(
        "SKIPPED {test}: it stops and restarts MongoDB, which TEST_MONGODB_URI does not allow"
    );
    true
}
