//! The product: the static release binary (musl) that goes into the image. Memory is
//! measured on this binary only: a debug build's memory is not the product's (the
//! Deployment's limits it runs under: `pod`).

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
