//! The product: the static release binary (musl) that goes into the image, and
//! the settings and memory limit the Deployment gives it. Memory is measured on this
//! binary only: a debug build's memory is not the product's.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

const TARGET: &str = "x86_64-unknown-linux-musl";

/// The release binary: `MONGO_API_RELEASE_BIN` if set (`just test` builds it first),
/// else built here once, in a target directory of its own (the one `cargo test` holds
/// stays locked while tests run).
pub fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("MONGO_API_RELEASE_BIN") {
                return path.into();
            }
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let target_dir = root.join("target/release-for-tests");
            eprintln!("building the static release binary for the memory tests (minutes, once)");
            let status = Command::new(env!("CARGO"))
                .current_dir(&root)
                .args(["build", "--release", "-p", "mongo-api"])
                .args(["--target", TARGET, "--target-dir"])
                .arg(&target_dir)
                .status()
                .expect("run cargo");
            assert!(status.success(), "building the release binary failed");
            target_dir.join(TARGET).join("release/mongo-api")
        })
        .clone()
}

/// What `k8s/base/api-deployment.yaml` gives the API container.
pub struct Deployment {
    /// `resources.limits.memory`, in MiB.
    pub memory_limit_mib: u64,
    /// The plain `env` values (`name`, `value`).
    pub env: Vec<(String, String)>,
}

/// Reads the Deployment's memory limit and plain environment values.
pub fn deployment() -> Deployment {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("k8s/base/api-deployment.yaml");
    let text = std::fs::read_to_string(&path).expect("read the Deployment");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let limits = lines
        .iter()
        .position(|l| *l == "limits:")
        .expect("resources.limits");
    let memory_limit_mib = lines[limits..]
        .iter()
        .find_map(|l| l.strip_prefix("memory: "))
        .and_then(|v| v.strip_suffix("Mi"))
        .and_then(|v| v.parse().ok())
        .expect("a memory limit in Mi");
    let env = lines
        .windows(2)
        .filter_map(|w| {
            let name = w[0].strip_prefix("- name: ")?;
            let value = w[1].strip_prefix("value: ")?;
            Some((name.to_owned(), value.trim_matches('"').to_owned()))
        })
        .collect();
    Deployment {
        memory_limit_mib,
        env,
    }
}
