//! The MongoDB side of the tests.
//!
//! By default each test starts its own SecantusDB process (`secantusd-rs`, a MongoDB
//! wire-protocol server on WiredTiger) with `--auth`, on a free port and a temporary
//! directory, and creates a root user through the localhost exception, as with mongod.
//! With `TEST_MONGODB_URI=mongodb://root:pw@host:port/?authSource=admin` the tests run
//! against that server instead (a real mongod, for instance); the user in the URI must be
//! allowed to create users. Tests that need to stop the database say so and skip there.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mongodb::bson::{doc, Document, RawDocumentBuf};
use mongodb::options::{ClientOptions, ConnectionString, Credential, ServerAddress};
use mongodb::sync::{Client, Database};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use tempfile::TempDir;

pub const ROOT_USER: &str = "root";
pub const ROOT_PASSWORD: &str = "root-pw";

enum Backend {
    Managed {
        child: Option<Child>,
        dir: TempDir,
        port: u16,
    },
    External {
        uri: String,
    },
}

pub struct Mongo {
    backend: Backend,
    /// Databases handed out, dropped at the end when the server is not ours to discard.
    databases: std::sync::Mutex<Vec<String>>,
    pub host: String,
    pub port: u16,
}

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
fn spawn_server(dir: &TempDir, port: u16) -> (Child, u16) {
    let mut child = Command::new(server_binary())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--storage-path")
        .arg(dir.path())
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
    let _ = kill(Pid::from_raw(child.id() as i32), signal);
    for _ in 0..100 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Mongo {
    pub fn start() -> Mongo {
        if let Ok(uri) = std::env::var("TEST_MONGODB_URI") {
            let cs = ConnectionString::parse(&uri).expect("TEST_MONGODB_URI parses");
            let (host, port) = match &cs.host_info {
                mongodb::options::HostInfo::HostIdentifiers(hosts) => match &hosts[0] {
                    ServerAddress::Tcp { host, port } => (host.clone(), port.unwrap_or(27017)),
                    other => panic!("unsupported TEST_MONGODB_URI host {other:?}"),
                },
                _ => panic!("TEST_MONGODB_URI must name its hosts (no mongodb+srv)"),
            };
            return Mongo {
                backend: Backend::External { uri },
                databases: Default::default(),
                host,
                port,
            };
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let (child, port) = spawn_server(&dir, 0);
        let mongo = Mongo {
            backend: Backend::Managed {
                child: Some(child),
                dir,
                port,
            },
            databases: Default::default(),
            host: "127.0.0.1".into(),
            port,
        };
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
        mongo
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

    /// True when this test controls the server process (not `TEST_MONGODB_URI`).
    pub fn is_managed(&self) -> bool {
        matches!(self.backend, Backend::Managed { .. })
    }

    /// A client logged in as root.
    pub fn admin(&self) -> Client {
        let mut options = match &self.backend {
            Backend::External { uri } => ClientOptions::parse(uri).run().expect("URI parses"),
            Backend::Managed { .. } => {
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
            Backend::Managed { .. } => (ROOT_USER.into(), ROOT_PASSWORD.into()),
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
            Backend::Managed { child, .. } => {
                if let Some(mut c) = child.take() {
                    stop_child(&mut c, Signal::SIGKILL);
                }
            }
            Backend::External { .. } => panic!("cannot stop an external MongoDB"),
        }
    }

    /// Sends the server a signal: SIGSTOP makes it accept connections and never answer,
    /// like a hung or partitioned node; SIGCONT lets it go on.
    pub fn signal(&self, signal: Signal) {
        match &self.backend {
            Backend::Managed {
                child: Some(child), ..
            } => kill(Pid::from_raw(child.id() as i32), signal).expect("signal MongoDB"),
            _ => panic!("cannot signal an external or stopped MongoDB"),
        }
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        match &mut self.backend {
            Backend::Managed { child, dir, port } => {
                assert!(child.is_none(), "server still running");
                let (c, _) = spawn_server(dir, *port);
                *child = Some(c);
            }
            Backend::External { .. } => panic!("cannot restart an external MongoDB"),
        }
    }
}

impl Drop for Mongo {
    fn drop(&mut self) {
        match &mut self.backend {
            Backend::Managed { child, .. } => {
                if let Some(mut c) = child.take() {
                    stop_child(&mut c, Signal::SIGTERM);
                }
            }
            Backend::External { .. } => {
                let admin = self.admin();
                for db in self.databases.lock().unwrap().iter() {
                    let _ = admin.database(db).drop().run();
                }
            }
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
