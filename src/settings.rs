//! Settings, read from the environment (each variable can also be given as a flag), in
//! one group per layer: the HTTP side takes [`HttpSettings`], the store [`MongoSettings`].
//!
//! The MongoDB variables keep the names and defaults of the Flask reference app, so an
//! existing deployment's Secret and Deployment work unchanged.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use budget::Budget;
use clap::{Args, CommandFactory, FromArgMatches, Parser};
use mongodb::options::{
    Acknowledgment, ClientOptions, ConnectionString, Credential, ReadPreference, SelectionCriteria,
    ServerAddress, WriteConcern,
};
use tiny_http::ServerOptions;
use tracing::level_filters::LevelFilter;

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

fn parse_secret(value: &str) -> Result<Secret, String> {
    Ok(Secret(value.to_owned()))
}

const DEFAULT_DB: &str = "flask_db";
/// What the process takes beyond `REQUEST_MEMORY_MIB`, as the pod's memory cgroup counts it
/// (user and kernel memory; docs/memory.md says how each was measured): at rest, with its
/// threads and the MongoDB driver, and for each open connection (the kernel's socket and
/// its buffers, the connection's state on its event loop). Plus a margin for what varies
/// between runs.
pub const MEMORY_AT_REST: u64 = 12 * 1024 * 1024;
pub const MEMORY_PER_CONNECTION: u64 = 4 * 1024;
pub const MEMORY_MARGIN: u64 = 8 * 1024 * 1024;

/// Connections the management listener holds at once: the kubelet's probes and a scraper
/// or two need far fewer.
const MANAGEMENT_CONNECTIONS: usize = 16;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "mongo-api",
    version,
    about = "A JSON API over MongoDB: GET / (welcome and time), GET /data, POST /data.",
    after_help = "Every option is read from the environment variable named in brackets; \
                  a flag given on the command line wins over it. Prefer the environment for \
                  MONGO_PASSWORD and MONGODB_URI: command lines are visible to other processes."
)]
pub struct Settings {
    #[command(flatten)]
    pub http: HttpSettings,

    #[command(flatten)]
    pub mongo: MongoSettings,

    /// Log level: error, warn, info (one line per request) or debug
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: LevelFilter,

    /// Print what this configuration means as JSON (ports, paths, the memory limit it
    /// needs) and exit; `k8s/check_manifests.py` checks the manifests against it
    #[arg(long)]
    pub print_config: bool,
}

/// How the service serves HTTP: listeners, connection limits, workers, memory.
#[derive(Args, Debug, Clone)]
pub struct HttpSettings {
    /// Address to listen on (all interfaces by default, as a pod needs)
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0")]
    pub bind_addr: IpAddr,

    /// Port to listen on
    #[arg(long, env = "PORT", default_value_t = 5000)]
    pub port: u16,

    /// Port of the management listener: /healthz, /readyz and /metrics for probes and
    /// scrapers, with its own connection budget, so no client of PORT can starve them
    #[arg(long, env = "MANAGEMENT_PORT", default_value_t = 8081)]
    pub management_port: u16,

    /// Event-loop threads that own the API's connections [default: half the CPUs the
    /// process may use (from its CPU quota), at least 1]
    #[arg(long, env = "IO_THREADS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub io_threads: Option<u16>,

    /// Worker threads for requests that need MongoDB, each with a MongoDB session (and
    /// connection) of its own
    #[arg(long, env = "WORKERS", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,

    /// Largest accepted request body in bytes; larger ones get 413 without being read
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1_048_576,
          value_parser = clap::value_parser!(u64).range(1..=16 * 1024 * 1024))]
    pub max_body_bytes: u64,

    /// Memory, in MiB, for everything requests hold: bodies being received, documents being
    /// converted and written, listing batches and pages. A request that cannot get its
    /// share within QUEUE_TIMEOUT_MS is answered 503 with Retry-After. Size the container's
    /// memory limit from it (docs/memory.md)
    #[arg(long, env = "REQUEST_MEMORY_MIB", default_value_t = 48,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub request_memory_mib: u64,

    /// Connections served at once; beyond it a newcomer takes the slot of an idle or slow
    /// connection (the oldest idle one first; never a steady request or one being
    /// answered), or gets 503 if none can make room. The memory limit must cover it
    /// (docs/memory.md)
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Seconds an idle keep-alive connection stays open
    #[arg(long, env = "KEEP_ALIVE_TIMEOUT_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub keep_alive_timeout_secs: u64,

    /// Seconds a request (head and body together) may take to arrive; then 408
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,

    /// Seconds a client may go without taking a byte of its response before the connection
    /// is cut (one that keeps reading gets the whole response, however long it takes)
    #[arg(long, env = "RESPONSE_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub response_timeout_secs: u64,

    /// A request that waited longer than this for a worker, or for its share of memory,
    /// gets a fast 503 with Retry-After instead of being served late
    #[arg(long, env = "QUEUE_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub queue_timeout_ms: u64,

    /// Seconds to finish in-flight requests after SIGTERM or SIGINT before exiting
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_grace_secs: u64,

    /// Seconds accept() may keep failing (e.g. no file descriptor left) before the process
    /// exits non-zero, to be restarted, instead of staying up without serving
    #[arg(long, env = "ACCEPT_FAILURE_LIMIT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub accept_failure_limit_secs: u64,

    /// Largest page GET /data?limit=N returns; larger limits are lowered to it
    #[arg(long, env = "PAGE_LIMIT_MAX", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub page_limit_max: u32,
}

/// Where MongoDB is and how to log in.
#[derive(Args, Debug, Clone)]
pub struct MongoSettings {
    /// Full MongoDB connection string; when set it wins over MONGO_HOST, MONGO_PORT,
    /// MONGO_USER, MONGO_PASSWORD and MONGO_AUTH_DB
    #[arg(id = "mongodb_uri", long = "mongodb-uri", env = "MONGODB_URI", hide_env_values = true, value_parser = parse_secret)]
    pub uri: Option<Secret>,

    /// MongoDB host name (a Kubernetes Service name resolves through cluster DNS)
    #[arg(
        id = "mongo_host",
        long = "mongo-host",
        env = "MONGO_HOST",
        default_value = "mongo"
    )]
    pub host: String,

    /// MongoDB port
    #[arg(
        id = "mongo_port",
        long = "mongo-port",
        env = "MONGO_PORT",
        default_value_t = 27017
    )]
    pub port: u16,

    /// MongoDB user; no authentication when unset
    #[arg(id = "mongo_user", long = "mongo-user", env = "MONGO_USER")]
    pub user: Option<String>,

    /// MongoDB password; required with MONGO_USER, no default
    #[arg(id = "mongo_password", long = "mongo-password", env = "MONGO_PASSWORD", hide_env_values = true,
          value_parser = parse_secret)]
    pub password: Option<Secret>,

    /// Database holding the `data` collection [default: the database named in MONGODB_URI,
    /// else flask_db]
    #[arg(id = "mongo_db", long = "mongo-db", env = "MONGO_DB")]
    pub db: Option<String>,

    /// Database the user is defined in
    #[arg(
        id = "mongo_auth_db",
        long = "mongo-auth-db",
        env = "MONGO_AUTH_DB",
        default_value = "admin"
    )]
    pub auth_db: String,

    /// Deadline of every MongoDB operation (and of server selection and connecting): a
    /// request that needs MongoDB gets 503 when it passes
    #[arg(id = "mongo_timeout_ms", long = "mongo-timeout-ms", env = "MONGO_TIMEOUT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub timeout_ms: u64,
}

/// Why settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// `--help` or `--version`: the text to print, and nothing is wrong.
    #[error("{0}")]
    Informational(String),
    /// A problem, as one line for the operator (never with a password in it).
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    /// Reads the environment and the command line, and checks that what they ask for fits
    /// the memory limit the process runs under, if it has one.
    pub fn load() -> Result<Settings, SettingsError> {
        let settings = Self::from_matches(Settings::command().try_get_matches())?;
        settings
            .http
            .check_memory_limit(crate::cgroup::memory_limit())?;
        Ok(settings)
    }

    /// From explicit arguments only, ignoring the environment (for tests, whatever the
    /// shell exports).
    pub fn from_args<I, T>(args: I) -> Result<Settings, SettingsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let command = Settings::command().mut_args(|arg| arg.env(None::<&str>));
        Self::from_matches(command.try_get_matches_from(args))
    }

    /// Every default, as if nothing were set.
    pub fn defaults() -> Settings {
        Self::from_args(["mongo-api"]).expect("the defaults are valid")
    }

    fn from_matches(
        matches: Result<clap::ArgMatches, clap::Error>,
    ) -> Result<Settings, SettingsError> {
        let settings = matches
            .and_then(|m| Settings::from_arg_matches(&m))
            .map_err(|e| match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    SettingsError::Informational(e.to_string())
                }
                _ => {
                    let text = e.to_string();
                    let line = text.lines().next().unwrap_or("invalid configuration");
                    SettingsError::Invalid(line.trim_start_matches("error: ").to_owned())
                }
            })?;
        settings.mongo.validate()?;
        Ok(settings)
    }
}

impl HttpSettings {
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.queue_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// At most this many workers for listings, beside the `workers`: half as many, so
    /// that listings, which may each hold a 16 MiB batch, are a share of the pool the
    /// operator sized.
    pub fn listings(&self) -> u16 {
        (self.workers / 2).max(1)
    }

    /// The memory budget for requests, in bytes.
    pub fn request_memory(&self) -> u64 {
        self.request_memory_mib * 1024 * 1024
    }

    /// The memory limit this configuration needs: the request budget, the process at rest,
    /// every connection it may hold, and the margin.
    pub fn memory_needed(&self) -> u64 {
        self.request_memory()
            + MEMORY_AT_REST
            + u64::from(self.max_connections) * MEMORY_PER_CONNECTION
            + MEMORY_MARGIN
    }

    /// Refuses a configuration whose connections and budget cannot fit `limit`: past it
    /// the kernel would kill the process under load, every client of the pod with it.
    /// Refused rather than lowered, so that the operator sees the mistake at once and
    /// what the pod holds is what its configuration says.
    pub fn check_memory_limit(&self, limit: Option<u64>) -> Result<(), SettingsError> {
        let Some(limit) = limit else {
            return Ok(());
        };
        let needed = self.memory_needed();
        if needed <= limit {
            return Ok(());
        }
        let mib = |bytes: u64| bytes.div_ceil(1024 * 1024);
        let fitting = limit.saturating_sub(self.request_memory() + MEMORY_AT_REST + MEMORY_MARGIN)
            / MEMORY_PER_CONNECTION;
        Err(SettingsError::Invalid(format!(
            "MAX_CONNECTIONS={} with REQUEST_MEMORY_MIB={} needs a memory limit of {} MiB, \
             and this process is limited to {} MiB: lower MAX_CONNECTIONS (at most {fitting} \
             fit) or REQUEST_MEMORY_MIB, or raise the limit",
            self.max_connections,
            self.request_memory_mib,
            mib(needed),
            mib(limit)
        )))
    }

    /// Event loops for the API, unless set: half the CPUs the process may use (the standard
    /// library reads the cgroup's CPU quota), at least one. The loops do the cheap part of
    /// every request; the workers and the MongoDB driver need the rest, and a loop that
    /// competes with them for a core switches far more than it serves.
    pub fn io_threads(&self) -> usize {
        self.io_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            usize::from,
        )
    }

    /// The API listener's limits; what connections buffer is taken from `memory`.
    pub fn server_options(&self, memory: &Budget) -> ServerOptions {
        ServerOptions {
            io_threads: self.io_threads(),
            keep_alive_timeout: Duration::from_secs(self.keep_alive_timeout_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            response_timeout: Duration::from_secs(self.response_timeout_secs),
            max_body_bytes: self.max_body_bytes as usize,
            max_connections: self.max_connections as usize,
            memory: Some(memory.clone()),
            memory_wait: self.queue_timeout(),
            accept_failure_limit: Duration::from_secs(self.accept_failure_limit_secs),
            ..ServerOptions::default()
        }
    }

    /// The management listener's limits: a handful of probe and scrape connections on an
    /// event loop of their own, never queued behind the API's.
    pub fn management_options(&self) -> ServerOptions {
        ServerOptions {
            io_threads: 1,
            max_connections: MANAGEMENT_CONNECTIONS,
            max_body_bytes: 0,
            memory: None,
            ..self.server_options(&Budget::new(0))
        }
    }
}

/// Where and how to reach MongoDB, resolved from the variables.
#[derive(Debug, Clone)]
pub enum MongoTarget {
    Uri(Secret),
    Host {
        host: String,
        port: u16,
        login: Option<Login>,
    },
}

/// A user of MongoDB and the database that holds it (`authSource`).
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub password: Secret,
    pub auth_db: String,
}

impl MongoSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if self.uri.is_none() {
            match (&self.user, &self.password) {
                (Some(_), None) => {
                    return Err(SettingsError::Invalid(
                        "MONGO_PASSWORD must be set when MONGO_USER is set".into(),
                    ))
                }
                (None, Some(_)) => {
                    return Err(SettingsError::Invalid(
                        "MONGO_USER must be set when MONGO_PASSWORD is set".into(),
                    ))
                }
                _ => {}
            }
        }
        if let Some(uri) = &self.uri {
            // The driver's message may quote the string it failed on, password included.
            ConnectionString::parse(uri.expose()).map_err(|_| {
                SettingsError::Invalid(
                    "MONGODB_URI is not a valid MongoDB connection string \
                     (mongodb://[user:password@]host[:port][/database][?options])"
                        .into(),
                )
            })?;
        }
        Ok(())
    }

    pub fn target(&self) -> MongoTarget {
        if let Some(uri) = &self.uri {
            return MongoTarget::Uri(uri.clone());
        }
        let login = match (&self.user, &self.password) {
            (Some(user), Some(password)) => Some(Login {
                user: user.clone(),
                password: password.clone(),
                auth_db: self.auth_db.clone(),
            }),
            _ => None,
        };
        MongoTarget::Host {
            host: self.host.clone(),
            port: self.port,
            login,
        }
    }

    /// Where MongoDB is, for a log line (never the URI: it may hold a password).
    pub fn label(&self) -> String {
        match self.target() {
            MongoTarget::Uri(_) => "MONGODB_URI".to_owned(),
            MongoTarget::Host { host, port, .. } => format!("{host}:{port}"),
        }
    }

    /// The database to use: MONGO_DB, else the one named in MONGODB_URI, else flask_db.
    pub fn database(&self) -> String {
        if let Some(db) = &self.db {
            return db.clone();
        }
        self.uri
            .as_ref()
            .and_then(|uri| ConnectionString::parse(uri.expose()).ok())
            .and_then(|cs| cs.default_database)
            .unwrap_or_else(|| DEFAULT_DB.to_owned())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The driver's options, for a pool of `pool_size` connections. Resolving a
    /// `mongodb+srv` URI looks up DNS, hence `async`.
    pub async fn client_options(
        &self,
        pool_size: u32,
    ) -> Result<ClientOptions, mongodb::error::Error> {
        let mut options = match self.target() {
            MongoTarget::Uri(uri) => ClientOptions::parse(uri.expose()).await?,
            MongoTarget::Host { host, port, login } => {
                let mut options = ClientOptions::default();
                options.hosts = vec![ServerAddress::Tcp {
                    host,
                    port: Some(port),
                }];
                // One named server, like the reference app's single-host URI: talk to it
                // directly rather than discovering a replica set from it.
                options.direct_connection = Some(true);
                // Handing the driver the credential as values, not pasted into a URI,
                // means no character of the password needs escaping.
                options.credential = login.map(|login| {
                    Credential::builder()
                        .username(login.user)
                        .password(login.password.expose().to_owned())
                        .source(login.auth_db)
                        .build()
                });
                options
            }
        };
        let timeout = self.timeout();
        options.app_name = Some("mongo-api".into());
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        options.max_pool_size = Some(pool_size);
        options.max_idle_time = Some(Duration::from_secs(300));
        if options.write_concern.is_none() {
            options.write_concern = Some(write_concern(timeout));
        }
        // Through a replica set's failover: a write or read that meets a step-down or a
        // lost primary is retried once on the new one (the driver's defaults, said here
        // because the service's guarantees rest on them), and reads go to the primary,
        // which has every acknowledged write.
        options.retry_writes.get_or_insert(true);
        options.retry_reads.get_or_insert(true);
        options
            .selection_criteria
            .get_or_insert(SelectionCriteria::ReadPreference(ReadPreference::Primary));
        Ok(options)
    }
}

/// Acknowledged means journaled (and replicated to a majority on a replica set): a write
/// answered 201 survives a MongoDB restart. It waits at most `timeout` for the majority.
pub fn write_concern(timeout: Duration) -> WriteConcern {
    WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .journal(true)
        .w_timeout(timeout)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, SettingsError> {
        Settings::from_args(std::iter::once("mongo-api").chain(args.iter().copied()))
    }

    fn invalid(args: &[&str]) -> String {
        match parse(args) {
            Err(SettingsError::Invalid(line)) => line,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    #[test]
    fn defaults_follow_the_reference_app() {
        let s = Settings::defaults();
        assert_eq!(s.http.port, 5000);
        assert_eq!(s.http.management_port, 8081);
        assert_eq!(s.http.bind_addr.to_string(), "0.0.0.0");
        assert_eq!(s.mongo.database(), "flask_db");
        match s.mongo.target() {
            MongoTarget::Host { host, port, login } => {
                assert_eq!((host.as_str(), port), ("mongo", 27017));
                assert!(login.is_none());
            }
            MongoTarget::Uri(_) => panic!("no URI was given"),
        }
    }

    #[test]
    fn the_environment_is_ignored_when_parsing_explicit_arguments() {
        // `load` reads PORT; `from_args` must not, whatever the shell running the tests
        // exports (the process tests cover reading the environment).
        let command = Settings::command().mut_args(|arg| arg.env(None::<&str>));
        assert!(command.get_arguments().all(|arg| arg.get_env().is_none()));
        let with_env = Settings::command();
        assert!(with_env
            .get_arguments()
            .any(|arg| arg.get_env().is_some_and(|e| e == "PORT")));
    }

    #[test]
    fn user_and_password_come_together() {
        assert!(invalid(&["--mongo-user", "app"]).contains("MONGO_PASSWORD"));
        assert!(invalid(&["--mongo-password", "pw"]).contains("MONGO_USER"));
        let ok = parse(&["--mongo-user", "app", "--mongo-password", "p@ss:w/rd%"]).unwrap();
        match ok.mongo.target() {
            MongoTarget::Host {
                login: Some(login), ..
            } => {
                assert_eq!(
                    (
                        login.user.as_str(),
                        login.password.expose(),
                        login.auth_db.as_str()
                    ),
                    ("app", "p@ss:w/rd%", "admin")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn uri_wins_and_names_the_database() {
        let s = parse(&[
            "--mongodb-uri",
            "mongodb://u:p@db:1234/shop?authSource=admin",
        ])
        .unwrap();
        assert!(matches!(s.mongo.target(), MongoTarget::Uri(_)));
        assert_eq!(s.mongo.database(), "shop");
        assert_eq!(s.mongo.label(), "MONGODB_URI");
        let s = parse(&["--mongodb-uri", "mongodb://db/shop", "--mongo-db", "other"]).unwrap();
        assert_eq!(s.mongo.database(), "other");
    }

    fn options(args: &[&str]) -> ClientOptions {
        let settings = parse(args).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(settings.mongo.client_options(4))
            .unwrap()
    }

    #[test]
    fn failover_retries_and_reads_from_the_primary_unless_the_uri_says_otherwise() {
        for args in [
            &["--mongodb-uri", "mongodb://a,b,c/?replicaSet=rs"][..],
            &["--mongo-host", "db"][..],
        ] {
            let o = options(args);
            assert_eq!((o.retry_writes, o.retry_reads), (Some(true), Some(true)));
            assert!(matches!(
                o.selection_criteria,
                Some(SelectionCriteria::ReadPreference(ReadPreference::Primary))
            ));
            assert_eq!(o.write_concern.unwrap().w, Some(Acknowledgment::Majority));
        }
        let o = options(&[
            "--mongodb-uri",
            "mongodb://a/?retryWrites=false&w=1&readPreference=secondary",
        ]);
        assert_eq!(o.retry_writes, Some(false));
        assert_eq!(o.write_concern.unwrap().w, Some(Acknowledgment::Nodes(1)));
        assert!(!matches!(
            o.selection_criteria,
            Some(SelectionCriteria::ReadPreference(ReadPreference::Primary))
        ));
    }

    #[test]
    fn errors_are_one_line_and_never_show_the_password() {
        let line = invalid(&["--mongodb-uri", "mongodb://u:hunter2@/bad?x=1:"]);
        assert!(!line.contains("hunter2") && !line.contains('\n'), "{line}");
        let line = invalid(&["--port", "http"]);
        assert!(line.contains("http") && !line.contains('\n'), "{line}");
        assert!(invalid(&["--workers", "0"]).contains("workers"));
        assert!(matches!(
            parse(&["--help"]),
            Err(SettingsError::Informational(text)) if text.contains("--mongo-timeout-ms")
        ));
    }

    #[test]
    fn a_configuration_that_cannot_fit_the_memory_limit_is_refused_with_one_line() {
        let s = parse(&["--max-connections", "256", "--request-memory-mib", "48"]).unwrap();
        assert!(
            s.http.check_memory_limit(None).is_ok(),
            "no limit, no check"
        );
        assert!(s
            .http
            .check_memory_limit(Some(s.http.memory_needed()))
            .is_ok());
        let refused = s.http.check_memory_limit(Some(s.http.memory_needed() - 1));
        let Err(SettingsError::Invalid(line)) = refused else {
            panic!("accepted")
        };
        assert!(
            line.contains("MAX_CONNECTIONS=256") && !line.contains('\n'),
            "{line}"
        );
        let big = parse(&["--max-connections", "1000000"]).unwrap();
        assert!(big.http.check_memory_limit(Some(80 << 20)).is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let s = parse(&["--mongo-user", "app", "--mongo-password", "hunter2"]).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
