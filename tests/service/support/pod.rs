//! The pod as the kubelet limits it. The API container's limits and plain environment are
//! read from the rendered Deployment (`kubectl kustomize k8s/base`, never a copy of the
//! numbers), and the release binary is started inside a memory cgroup with that memory
//! limit (and the CPU limit as a CFS quota where a claim depends on CPU). The cgroup counts
//! what the kubelet's does: user memory and what the kernel allocates for the process
//! (thread stacks and task structures, sockets, page tables), and the kernel OOM-kills the
//! process past the limit. `VmHWM` only sees the first part.
//!
//! cgroup v1 (a writable `memory` hierarchy, as on this project's machines) and v2 (a
//! subtree where the memory controller can be enabled) both work; where no memory cgroup
//! can be written (not root, no delegation) one line says so and only `VmHWM` is reported.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::release;
use super::service::Process;

/// What the rendered Deployment gives the API container.
pub struct Deployment {
    /// `resources.limits.memory`, in bytes.
    pub memory_limit: u64,
    /// The plain `env` values (`name`, `value`), in order.
    pub env: Vec<(String, String)>,
}

impl Deployment {
    /// A plain environment value the Deployment sets.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A numeric environment value the Deployment sets, or the service's default.
    pub fn number(&self, name: &str, default: u64) -> u64 {
        self.var(name)
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v} is a number"))
            })
            .unwrap_or(default)
    }
}

/// The base overlay's Deployment, rendered once per test binary.
pub fn deployment() -> &'static Deployment {
    static DEPLOYMENT: OnceLock<Deployment> = OnceLock::new();
    DEPLOYMENT.get_or_init(render_deployment)
}

fn render_deployment() -> Deployment {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // Rendered from a copy, with the example credentials: kustomize needs secrets.env,
    // which only `just secrets` writes, and nothing here depends on the passwords.
    let copy = tempfile::tempdir().expect("temporary directory");
    let base = copy.path().join("base");
    fs::create_dir(&base).expect("mkdir");
    for entry in fs::read_dir(root.join("k8s/base")).expect("read k8s/base") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            fs::copy(&path, base.join(path.file_name().unwrap())).expect("copy");
        }
    }
    fs::copy(base.join("secrets.env.example"), base.join("secrets.env")).expect("secrets");
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(&base)
        .output()
        .expect("run kubectl (it renders the manifests the memory limits are read from)");
    assert!(
        output.status.success(),
        "kubectl kustomize k8s/base: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 manifests");
    let deployment = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            <serde_json::Value as serde::Deserialize>::deserialize(document).expect("YAML")
        })
        .find(|object| object["kind"] == "Deployment" && object["metadata"]["name"] == "mongo-api")
        .expect("the mongo-api Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let limits = &container["resources"]["limits"];
    let env = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|var| {
            Some((
                var["name"].as_str()?.to_owned(),
                var["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    Deployment {
        memory_limit: quantity_bytes(limits["memory"].as_str().expect("a memory limit")),
        env,
    }
}

/// A Kubernetes memory quantity (`80Mi`, `1Gi`, `100M`, plain bytes) in bytes.
fn quantity_bytes(text: &str) -> u64 {
    let units: &[(&str, u64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    let (number, unit) = units
        .iter()
        .find_map(|(suffix, unit)| Some((text.strip_suffix(suffix)?, *unit)))
        .unwrap_or((text, 1));
    number.parse::<u64>().expect("a whole memory quantity") * unit
}

/// A memory cgroup of its own for one process, removed when dropped.
pub struct Cgroup {
    kind: Kind,
}

enum Kind {
    V1 { dir: PathBuf },
    V2 { dir: PathBuf },
}

/// What the cgroup counted, next to what the process itself reports.
#[derive(Debug, Clone, Copy)]
pub struct MemoryReport {
    /// The cgroup's peak usage (user and kernel memory), in bytes; `None` without a cgroup.
    pub cgroup_peak: Option<u64>,
    /// The cgroup's usage now.
    pub cgroup_now: Option<u64>,
    /// Processes of the group the kernel OOM-killed.
    pub oom_kills: u64,
    /// The process's peak resident memory (`VmHWM`), in bytes.
    pub vm_hwm: u64,
}

impl MemoryReport {
    /// What the claim is checked on: the cgroup's peak where there is one.
    pub fn peak(&self) -> u64 {
        self.cgroup_peak.unwrap_or(self.vm_hwm)
    }
}

impl std::fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        match self.cgroup_peak {
            Some(peak) => write!(
                f,
                "cgroup peak {:.1} MiB, now {:.1} MiB, {} OOM kill(s); VmHWM {:.1} MiB",
                mib(peak),
                mib(self.cgroup_now.unwrap_or(0)),
                self.oom_kills,
                mib(self.vm_hwm)
            ),
            None => write!(f, "VmHWM {:.1} MiB (no cgroup)", mib(self.vm_hwm)),
        }
    }
}

/// Where this process sits in a hierarchy: `/proc/self/cgroup`'s path for `controller`
/// (v1), or the unified path (`controller` empty).
fn own_path(controller: &str) -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        matches.then(|| path.to_owned())
    })
}

/// The mount point of the v1 hierarchy holding `controller`, or of cgroup2 (`None`).
fn mount_point(controller: Option<&str>) -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut fields = right.split_whitespace();
        let (fstype, _source, options) = (fields.next()?, fields.next()?, fields.next()?);
        let point = left.split_whitespace().nth(4)?;
        let found = match controller {
            Some(c) => fstype == "cgroup" && options.split(',').any(|o| o == c),
            None => fstype == "cgroup2",
        };
        found.then(|| PathBuf::from(point))
    })
}

fn unique_name(name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("mongo-api-test-{}-{}-{n}", name, std::process::id())
}

impl Cgroup {
    /// A new group with `memory_limit` bytes; `None`, with one line on stderr, where none
    /// can be made here.
    pub fn new(name: &str, memory_limit: u64) -> Option<Cgroup> {
        let name = unique_name(name);
        let made = Cgroup::v1(&name, memory_limit).or_else(|| Cgroup::v2(&name, memory_limit));
        if made.is_none() {
            eprintln!(
                "cgroup figures SKIPPED: no memory cgroup can be created here (needs root or a \
                 delegated cgroup v2 subtree); memory is checked on VmHWM only"
            );
        }
        made
    }

    fn v1(name: &str, memory_limit: u64) -> Option<Cgroup> {
        let mount = mount_point(Some("memory"))?;
        let dir = mount
            .join(own_path("memory")?.trim_start_matches('/'))
            .join(name);
        fs::create_dir(&dir).ok()?;
        // From here on, the group exists: dropping it removes it, whatever fails next.
        let group = Cgroup {
            kind: Kind::V1 { dir: dir.clone() },
        };
        fs::write(dir.join("memory.limit_in_bytes"), memory_limit.to_string()).ok()?;
        // No swap to hide an overrun in (where swap accounting exists at all).
        let _ = fs::write(
            dir.join("memory.memsw.limit_in_bytes"),
            memory_limit.to_string(),
        );
        Some(group)
    }

    fn v2(name: &str, memory_limit: u64) -> Option<Cgroup> {
        let mount = mount_point(None)?;
        let own = mount.join(own_path("")?.trim_start_matches('/'));
        // Under our own group if it may have children with controllers (it holds no
        // process, or it is the root), else beside it: v2 keeps processes in leaves only.
        for parent in [own.clone(), own.parent()?.to_path_buf()] {
            let _ = fs::write(parent.join("cgroup.subtree_control"), "+memory");
            let dir = parent.join(name);
            if fs::create_dir(&dir).is_err() {
                continue;
            }
            let group = Cgroup {
                kind: Kind::V2 { dir: dir.clone() },
            };
            let controllers =
                fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            if !controllers.split_whitespace().any(|c| c == "memory")
                || fs::write(dir.join("memory.max"), memory_limit.to_string()).is_err()
            {
                continue;
            }
            let _ = fs::write(dir.join("memory.swap.max"), "0");
            return Some(group);
        }
        None
    }

    fn memory_dir(&self) -> &Path {
        match &self.kind {
            Kind::V1 { dir } | Kind::V2 { dir } => dir,
        }
    }

    /// Makes `command`'s process join this group before it runs the program, so every
    /// page it ever touches is counted.
    pub fn enter_on_spawn(&self, command: &mut Command) {
        let procs: File = fs::OpenOptions::new()
            .write(true)
            .open(self.memory_dir().join("cgroup.procs"))
            .expect("open cgroup.procs");
        // SAFETY: between fork and exec only `write(2)` runs, on a descriptor opened
        // before the fork: no allocation, no lock.
        unsafe {
            command.pre_exec(move || {
                // "0" is the writing process itself, in v1 and v2 alike.
                std::io::Write::write_all(&mut &procs, b"0")
            });
        }
    }

    fn read_number(&self, file: &str) -> u64 {
        fs::read_to_string(self.memory_dir().join(file))
            .unwrap_or_else(|e| panic!("read {file}: {e}"))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    /// Peak usage since the group was made (or last reset), in bytes.
    pub fn peak(&self) -> u64 {
        match self.kind {
            Kind::V1 { .. } => self.read_number("memory.max_usage_in_bytes"),
            Kind::V2 { .. } => self.read_number("memory.peak"),
        }
    }

    pub fn usage(&self) -> u64 {
        match self.kind {
            Kind::V1 { .. } => self.read_number("memory.usage_in_bytes"),
            Kind::V2 { .. } => self.read_number("memory.current"),
        }
    }

    /// How many times the kernel OOM-killed a process of this group.
    pub fn oom_kills(&self) -> u64 {
        let file = match self.kind {
            Kind::V1 { .. } => "memory.oom_control",
            Kind::V2 { .. } => "memory.events",
        };
        fs::read_to_string(self.memory_dir().join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let dir = self.memory_dir();
        // The process was stopped by its PID before this; its exit can take a moment to
        // release the group.
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The release binary in a memory cgroup with the Deployment's limit, started with the
/// Deployment's plain environment plus `env` (which wins).
pub struct Pod {
    // Declared first: the process is stopped before its group is removed.
    pub service: Process,
    cgroup: Option<Cgroup>,
    memory_limit: u64,
}

impl Pod {
    /// With the Deployment's memory limit.
    pub fn start(name: &str, env: &[(&str, String)]) -> Pod {
        let memory_limit = deployment().memory_limit;
        let cgroup = Cgroup::new(name, memory_limit);
        let mut command = Process::command(&release::binary(), &pod_env(env));
        if let Some(cgroup) = &cgroup {
            cgroup.enter_on_spawn(&mut command);
        }
        Pod {
            service: Process::spawn(command),
            cgroup,
            memory_limit,
        }
    }

    /// Runs the release binary to its end in such a group (for configurations it refuses
    /// at start); `None` where no group can be made.
    pub fn run_to_exit(env: &[(&str, String)], memory_limit: u64) -> Option<std::process::Output> {
        let cgroup = Cgroup::new("exit", memory_limit)?;
        let mut command = Process::command(&release::binary(), &pod_env(env));
        cgroup.enter_on_spawn(&mut command);
        Some(command.output().expect("run the release binary"))
    }

    /// What the cgroup counted so far, and `VmHWM` (0 once the process is gone).
    pub fn memory(&self) -> MemoryReport {
        MemoryReport {
            cgroup_peak: self.cgroup.as_ref().map(Cgroup::peak),
            cgroup_now: self.cgroup.as_ref().map(Cgroup::usage),
            oom_kills: self.cgroup.as_ref().map_or(0, Cgroup::oom_kills),
            vm_hwm: self.service.try_peak_rss_kib().unwrap_or(0) * 1024,
        }
    }

    /// Fails the test if the process was OOM-killed or went past the limit; prints and
    /// returns the figures.
    pub fn assert_within_limit(&mut self, what: &str) -> MemoryReport {
        let report = self.memory();
        let limit_mib = self.memory_limit / (1024 * 1024);
        eprintln!("{what}: {report} (limit {limit_mib} MiB)");
        assert_eq!(
            report.oom_kills, 0,
            "{what}: the kernel OOM-killed the service inside its {limit_mib} MiB memory cgroup \
             (the pod would restart): {report}"
        );
        assert!(
            self.service.exited().is_none(),
            "{what}: the service exited: {report}\n{}",
            self.service.output()
        );
        assert!(
            report.peak() < self.memory_limit,
            "{what}: peak {report}, the limit is {limit_mib} MiB"
        );
        report
    }
}

/// The Deployment's plain environment, then `env`, which wins (a later value of a
/// variable replaces an earlier one when the process starts).
fn pod_env(env: &[(&str, String)]) -> Vec<(&'static str, String)> {
    let leak = |name: &str| -> &'static str { Box::leak(name.to_owned().into_boxed_str()) };
    deployment()
        .env
        .iter()
        .map(|(k, v)| (leak(k), v.clone()))
        .chain(env.iter().map(|(k, v)| (leak(k), v.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_kubernetes_reads_them() {
        assert_eq!(quantity_bytes("80Mi"), 80 << 20);
        assert_eq!(quantity_bytes("1Gi"), 1 << 30);
        assert_eq!(quantity_bytes("100M"), 100_000_000);
        assert_eq!(quantity_bytes("4096"), 4096);
    }
}
