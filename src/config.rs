//! Configuration, read from the environment (each variable can also be given as a flag).
//!
//! The MongoDB variables keep the names and defaults of the Flask reference app, so an
//! existing deployment's Secret and Deployment work unchanged.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;
use mongodb::options::ConnectionString;
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
pub struct Config {
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

    /// Full MongoDB connection string; when set it wins over MONGO_HOST, MONGO_PORT,
    /// MONGO_USER, MONGO_PASSWORD and MONGO_AUTH_DB
    #[arg(long, env = "MONGODB_URI", hide_env_values = true, value_parser = parse_secret)]
    pub mongodb_uri: Option<Secret>,

    /// MongoDB host name (a Kubernetes Service name resolves through cluster DNS)
    #[arg(long, env = "MONGO_HOST", default_value = "mongo")]
    pub mongo_host: String,

    /// MongoDB port
    #[arg(long, env = "MONGO_PORT", default_value_t = 27017)]
    pub mongo_port: u16,

    /// MongoDB user; no authentication when unset
    #[arg(long, env = "MONGO_USER")]
    pub mongo_user: Option<String>,

    /// MongoDB password; required with MONGO_USER, no default
    #[arg(long, env = "MONGO_PASSWORD", hide_env_values = true, value_parser = parse_secret)]
    pub mongo_password: Option<Secret>,

    /// Database holding the `data` collection [default: the database named in MONGODB_URI,
    /// else flask_db]
    #[arg(long, env = "MONGO_DB")]
    pub mongo_db: Option<String>,

    /// Database the user is defined in
    #[arg(long, env = "MONGO_AUTH_DB", default_value = "admin")]
    pub mongo_auth_db: String,

    /// How long a MongoDB operation may wait for a usable server before the request gets
    /// 503; also the connect timeout
    #[arg(long, env = "MONGO_TIMEOUT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub mongo_timeout_ms: u64,

    /// Worker threads handling requests; the MongoDB connection pool has the same size
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
    /// memory limit from it (README, "Memory")
    #[arg(long, env = "REQUEST_MEMORY_MIB", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub request_memory_mib: u64,

    /// Connections served at once; more are answered 503 and closed
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

    /// Seconds writing one response may take before the connection is cut
    #[arg(long, env = "RESPONSE_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub response_timeout_secs: u64,

    /// A request that waited longer than this for a worker gets a fast 503 with
    /// Retry-After instead of being served late
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

    /// Log level: error, warn, info (one line per request) or debug
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: LevelFilter,
}

/// A configuration problem, as one line for the operator.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Where and how to reach MongoDB, resolved from the variables.
#[derive(Debug, Clone)]
pub enum MongoTarget {
    Uri(Secret),
    Host {
        host: String,
        port: u16,
        credential: Option<(String, Secret, String)>,
    },
}

impl Config {
    /// Reads the environment and the command line. `--help` and `--version` print and exit.
    pub fn load() -> Result<Config, ConfigError> {
        Self::from_args(std::env::args_os())
    }

    /// Like [`Config::load`], from explicit arguments (the environment still applies).
    pub fn from_args<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let config = Config::try_parse_from(args).map_err(|e| {
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) {
                e.exit();
            }
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("invalid configuration");
            ConfigError(line.trim_start_matches("error: ").to_owned())
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.mongodb_uri.is_none() {
            match (&self.mongo_user, &self.mongo_password) {
                (Some(_), None) => {
                    return Err(ConfigError(
                        "MONGO_PASSWORD must be set when MONGO_USER is set".into(),
                    ))
                }
                (None, Some(_)) => {
                    return Err(ConfigError(
                        "MONGO_USER must be set when MONGO_PASSWORD is set".into(),
                    ))
                }
                _ => {}
            }
        }
        if let Some(uri) = &self.mongodb_uri {
            // The driver's message may quote the string it failed on, password included.
            ConnectionString::parse(uri.expose()).map_err(|_| {
                ConfigError(
                    "MONGODB_URI is not a valid MongoDB connection string \
                     (mongodb://[user:password@]host[:port][/database][?options])"
                        .into(),
                )
            })?;
        }
        Ok(())
    }

    pub fn mongo_target(&self) -> MongoTarget {
        if let Some(uri) = &self.mongodb_uri {
            return MongoTarget::Uri(uri.clone());
        }
        let credential = match (&self.mongo_user, &self.mongo_password) {
            (Some(user), Some(password)) => {
                Some((user.clone(), password.clone(), self.mongo_auth_db.clone()))
            }
            _ => None,
        };
        MongoTarget::Host {
            host: self.mongo_host.clone(),
            port: self.mongo_port,
            credential,
        }
    }

    /// The database to use: MONGO_DB, else the one named in MONGODB_URI, else flask_db.
    pub fn database(&self) -> String {
        if let Some(db) = &self.mongo_db {
            return db.clone();
        }
        self.mongodb_uri
            .as_ref()
            .and_then(|uri| ConnectionString::parse(uri.expose()).ok())
            .and_then(|cs| cs.default_database)
            .unwrap_or_else(|| DEFAULT_DB.to_owned())
    }

    pub fn mongo_timeout(&self) -> Duration {
        Duration::from_millis(self.mongo_timeout_ms)
    }

    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.queue_timeout_ms)
    }

    /// The memory budget for requests, in bytes.
    pub fn request_memory(&self) -> u64 {
        self.request_memory_mib * 1024 * 1024
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// The management listener's limits: a handful of probe and scrape connections, each
    /// answered on its own thread, never queued behind the API's workers.
    pub fn management_options(&self) -> tiny_http::ServerOptions {
        tiny_http::ServerOptions {
            max_connections: MANAGEMENT_CONNECTIONS,
            max_body_bytes: 0,
            memory: None,
            ..self.server_options(&tiny_http::Budget::new(0))
        }
    }

    /// The API listener's limits; request bodies are taken from `memory`.
    pub fn server_options(&self, memory: &tiny_http::Budget) -> tiny_http::ServerOptions {
        tiny_http::ServerOptions {
            keep_alive_timeout: Duration::from_secs(self.keep_alive_timeout_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            response_timeout: Duration::from_secs(self.response_timeout_secs),
            max_body_bytes: self.max_body_bytes as usize,
            max_connections: self.max_connections as usize,
            memory: Some(memory.clone()),
            memory_wait: self.queue_timeout(),
            accept_failure_limit: Duration::from_secs(self.accept_failure_limit_secs),
            ..tiny_http::ServerOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        Config::from_args(std::iter::once("mongo-api").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_follow_the_reference_app() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.port, 5000);
        assert_eq!(c.bind_addr.to_string(), "0.0.0.0");
        assert_eq!(c.database(), "flask_db");
        match c.mongo_target() {
            MongoTarget::Host {
                host,
                port,
                credential,
            } => {
                assert_eq!((host.as_str(), port), ("mongo", 27017));
                assert!(credential.is_none());
            }
            MongoTarget::Uri(_) => panic!("no URI was given"),
        }
    }

    #[test]
    fn user_and_password_come_together() {
        let err = parse(&["--mongo-user", "app"]).unwrap_err();
        assert!(err.0.contains("MONGO_PASSWORD"), "{err}");
        let err = parse(&["--mongo-password", "pw"]).unwrap_err();
        assert!(err.0.contains("MONGO_USER"), "{err}");
        let ok = parse(&["--mongo-user", "app", "--mongo-password", "p@ss:w/rd%"]).unwrap();
        match ok.mongo_target() {
            MongoTarget::Host {
                credential: Some((u, p, src)),
                ..
            } => {
                assert_eq!(
                    (u.as_str(), p.expose(), src.as_str()),
                    ("app", "p@ss:w/rd%", "admin")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn uri_wins_and_names_the_database() {
        let c = parse(&[
            "--mongodb-uri",
            "mongodb://u:p@db:1234/shop?authSource=admin",
        ])
        .unwrap();
        assert!(matches!(c.mongo_target(), MongoTarget::Uri(_)));
        assert_eq!(c.database(), "shop");
        let c = parse(&["--mongodb-uri", "mongodb://db/shop", "--mongo-db", "other"]).unwrap();
        assert_eq!(c.database(), "other");
    }

    #[test]
    fn errors_are_one_line_and_never_show_the_password() {
        let err = parse(&["--mongodb-uri", "mongodb://u:hunter2@/bad?x=1:"]).unwrap_err();
        assert!(!err.0.contains("hunter2"), "{err}");
        assert!(!err.0.contains('\n'));
        let err = parse(&["--port", "http"]).unwrap_err();
        assert!(err.0.contains("http") && !err.0.contains('\n'), "{err}");
        let err = parse(&["--workers", "0"]).unwrap_err();
        assert!(err.0.contains("workers"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let c = parse(&["--mongo-user", "app", "--mongo-password", "hunter2"]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
