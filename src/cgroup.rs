//! The memory limit of the cgroup this process runs in: what the kubelet (or any
//! container runtime) set as the container's limit, past which the kernel OOM-kills it.
//! Read once at start, so that a configuration that cannot fit is refused with a clear
//! line instead of being killed under load.
//!
//! Both hierarchies are read: cgroup v2 (`memory.max`) and v1 (`memory.limit_in_bytes`),
//! from the process's own group up to the mount point, the smallest limit winning (a
//! parent's limit bounds its children). Inside a container the mount point is the
//! container's own group.

use std::fs;
use std::path::{Path, PathBuf};

/// The memory limit in bytes, if this process has one it can read.
pub fn memory_limit() -> Option<u64> {
    let cgroups = fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    limit_from(&cgroups, &mountinfo, &|path| fs::read_to_string(path).ok())
}

/// The limit from the text of `/proc/self/cgroup` and `/proc/self/mountinfo`, reading
/// control files through `read`.
fn limit_from(
    cgroups: &str,
    mountinfo: &str,
    read: &dyn Fn(&Path) -> Option<String>,
) -> Option<u64> {
    let mut limits = Vec::new();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (mount, file) = if controllers.is_empty() {
            (mount_of(mountinfo, None), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (mount_of(mountinfo, Some("memory")), "memory.limit_in_bytes")
        } else {
            continue;
        };
        let Some((root, point)) = mount else {
            continue;
        };
        limits.extend(walk_up(&point, &root, path, file, read));
    }
    limits.into_iter().min()
}

/// A mount of the hierarchy: its root within the hierarchy, and where it is mounted.
fn mount_of(mountinfo: &str, controller: Option<&str>) -> Option<(String, PathBuf)> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut fields = right.split_whitespace();
        let (fstype, _source, options) = (fields.next()?, fields.next()?, fields.next()?);
        let found = match controller {
            Some(c) => fstype == "cgroup" && options.split(',').any(|o| o == c),
            None => fstype == "cgroup2",
        };
        let mut left = left.split_whitespace();
        let root = left.nth(3)?;
        let point = left.next()?;
        found.then(|| (root.to_owned(), PathBuf::from(point)))
    })
}

/// Every limit from the process's group up to the mount point.
fn walk_up(
    point: &Path,
    root: &str,
    path: &str,
    file: &str,
    read: &dyn Fn(&Path) -> Option<String>,
) -> Vec<u64> {
    // The group's path relative to what is mounted (with a cgroup namespace, the path is
    // already relative and the root is "/").
    let relative = path
        .strip_prefix(root)
        .unwrap_or(path)
        .trim_start_matches('/');
    let mut dir = point.join(relative);
    let mut limits = Vec::new();
    loop {
        if let Some(limit) = read(&dir.join(file)).as_deref().and_then(parse_limit) {
            limits.push(limit);
        }
        if dir == point || !dir.pop() || !dir.starts_with(point) {
            return limits;
        }
    }
}

/// `max` (v2) and v1's "no limit" (a page-rounded `i64::MAX`) are no limit.
fn parse_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    let bytes: u64 = text.parse().ok()?;
    (bytes < 1 << 62).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn reader(files: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
            .collect();
        move |path| files.get(path).cloned()
    }

    const V1_MOUNTS: &str = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                             41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

    #[test]
    fn v1_takes_the_smallest_limit_from_the_group_up() {
        let read = reader(&[
            (
                "/sys/fs/cgroup/memory/pod/api/memory.limit_in_bytes",
                "83886080\n",
            ),
            (
                "/sys/fs/cgroup/memory/pod/memory.limit_in_bytes",
                "1073741824\n",
            ),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        let cgroups = "4:memory:/pod/api\n1:cpu:/\n0::/\n";
        assert_eq!(limit_from(cgroups, V1_MOUNTS, &read), Some(80 << 20));
        let read = reader(&[(
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712",
        )]);
        assert_eq!(limit_from("4:memory:/\n", V1_MOUNTS, &read), None);
    }

    #[test]
    fn v2_reads_memory_max_and_max_means_none() {
        let mounts = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let read = reader(&[
            ("/sys/fs/cgroup/kubepods/pod1/ctr/memory.max", "83886080\n"),
            ("/sys/fs/cgroup/kubepods/memory.max", "max\n"),
        ]);
        assert_eq!(
            limit_from("0::/kubepods/pod1/ctr\n", mounts, &read),
            Some(80 << 20)
        );
        assert_eq!(limit_from("0::/other\n", mounts, &read), None);
    }

    #[test]
    fn inside_a_container_the_mount_is_the_containers_own_group() {
        // containerd without a cgroup namespace: the container's group is mounted at
        // /sys/fs/cgroup, and /proc/self/cgroup names it in full.
        let mounts = "30 23 0:27 /kubepods/pod1/ctr /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        let read = reader(&[("/sys/fs/cgroup/memory.max", "83886080")]);
        assert_eq!(
            limit_from("0::/kubepods/pod1/ctr\n", mounts, &read),
            Some(80 << 20)
        );
        // With a cgroup namespace the path is "/".
        let mounts = "30 23 0:27 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        assert_eq!(limit_from("0::/\n", mounts, &read), Some(80 << 20));
    }
}
