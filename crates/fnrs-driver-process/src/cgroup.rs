//! A small cgroup v1/v2 module: one cgroup per instance under one parent per
//! controller, memory and pids limits, OOM counter, kill and removal.
//!
//! Layout: v1 `/sys/fs/cgroup/memory/<parent>/<id>` and
//! `/sys/fs/cgroup/pids/<parent>/<id>`; v2 `/sys/fs/cgroup/<parent>/<id>`
//! (mount points as found in `/proc/self/mountinfo`).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which cgroup hierarchy is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy per-controller hierarchies (`memory`, `pids`).
    V1,
    /// The unified hierarchy.
    V2,
}

impl CgroupVersion {
    /// `v1` or `v2`.
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        }
    }
}

/// The parent cgroups every instance cgroup is created under.
#[derive(Debug, Clone)]
pub(crate) struct Cgroups {
    pub(crate) version: CgroupVersion,
    /// v1: `[memory parent, pids parent?]`; v2: `[parent]`. The memory one
    /// is always first.
    parents: Vec<PathBuf>,
}

/// The mount points found for the controllers we use.
#[derive(Debug, Default)]
struct Mounts {
    v1_memory: Option<PathBuf>,
    v1_pids: Option<PathBuf>,
    v2: Option<PathBuf>,
}

fn read_mounts() -> io::Result<Mounts> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut m = Mounts::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < 5 || fields.len() < sep + 4 {
            continue;
        }
        let mount_point = PathBuf::from(unescape_mountinfo(fields[4]));
        let fstype = fields[sep + 1];
        let super_opts = fields[sep + 3];
        match fstype {
            "cgroup" => {
                let opts: Vec<&str> = super_opts.split(',').collect();
                if opts.contains(&"memory") && m.v1_memory.is_none() {
                    m.v1_memory = Some(mount_point.clone());
                }
                if opts.contains(&"pids") && m.v1_pids.is_none() {
                    m.v1_pids = Some(mount_point);
                }
            }
            "cgroup2" if m.v2.is_none() => m.v2 = Some(mount_point),
            _ => {}
        }
    }
    Ok(m)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && let Ok(oct) = std::str::from_utf8(&b[i + 1..i + 4])
            && let Ok(v) = u8::from_str_radix(oct, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Cgroups {
    /// Find the hierarchies and create the parent cgroups (`parent` is a
    /// relative path such as `fnrs`). v1 wins when a v1 memory hierarchy is
    /// mounted (hybrid systems); v2 is used when its root offers `memory`.
    pub(crate) fn setup(parent: &str) -> Result<Cgroups, String> {
        Self::open(parent, true)
    }

    /// The parent cgroups if they exist, without creating anything (for
    /// cleaning up another server's tree).
    pub(crate) fn existing(parent: &str) -> Result<Cgroups, String> {
        let mut c = Self::open(parent, false)?;
        c.parents.retain(|p| p.is_dir());
        Ok(c)
    }

    fn open(parent: &str, create: bool) -> Result<Cgroups, String> {
        let rel = Path::new(parent.trim_matches('/'));
        if rel.as_os_str().is_empty()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!("invalid cgroup parent {parent:?}"));
        }
        let mounts = read_mounts().map_err(|e| format!("cannot read mountinfo: {e}"))?;
        if let Some(mem) = mounts.v1_memory {
            let mut parents = vec![mem.join(rel)];
            if let Some(pids) = mounts.v1_pids {
                parents.push(pids.join(rel));
            }
            for p in parents.iter().filter(|_| create) {
                std::fs::create_dir_all(p)
                    .map_err(|e| format!("cannot create cgroup {}: {e}", p.display()))?;
            }
            return Ok(Cgroups {
                version: CgroupVersion::V1,
                parents,
            });
        }
        if let Some(root) = mounts.v2 {
            let controllers = std::fs::read_to_string(root.join("cgroup.controllers"))
                .map_err(|e| format!("cannot read {}: {e}", root.display()))?;
            if !controllers.split_whitespace().any(|c| c == "memory") {
                return Err(format!(
                    "the cgroup v2 hierarchy at {} offers no memory controller",
                    root.display()
                ));
            }
            let parent = root.join(rel);
            if !create {
                return Ok(Cgroups {
                    version: CgroupVersion::V2,
                    parents: vec![parent],
                });
            }
            std::fs::create_dir_all(&parent)
                .map_err(|e| format!("cannot create cgroup {}: {e}", parent.display()))?;
            // Enable memory and pids for the children of every level down to
            // the parent (the root usually has them on already).
            let mut level = root;
            let mut levels = vec![level.clone()];
            for c in rel.components() {
                level = level.join(c);
                levels.push(level.clone());
            }
            for l in &levels {
                let sc = l.join("cgroup.subtree_control");
                for ctl in ["+memory", "+pids"] {
                    if let Err(e) = std::fs::write(&sc, ctl)
                        && ctl == "+memory"
                    {
                        return Err(format!("cannot enable memory in {}: {e}", sc.display()));
                    }
                }
            }
            return Ok(Cgroups {
                version: CgroupVersion::V2,
                parents: vec![parent],
            });
        }
        Err("no cgroup memory controller is mounted".to_string())
    }

    /// The parent cgroup directories.
    pub(crate) fn parents(&self) -> &[PathBuf] {
        &self.parents
    }

    /// Remove the (empty) parent directories, deepest first.
    pub(crate) fn remove_parents(&self) -> io::Result<()> {
        let mut last = Ok(());
        for p in &self.parents {
            match std::fs::remove_dir(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => last = Err(e),
                _ => {}
            }
        }
        last
    }

    /// Create the cgroup(s) of one instance with its limits. `memory_mb` 0
    /// means no memory limit. Nothing is left behind on error.
    pub(crate) fn create(
        &self,
        id: &str,
        memory_mb: u64,
        max_pids: u32,
    ) -> io::Result<InstanceCgroup> {
        let cg = InstanceCgroup {
            version: self.version,
            dirs: self.parents.iter().map(|p| p.join(id)).collect(),
        };
        let mut created = Vec::new();
        let res = (|| {
            for d in &cg.dirs {
                std::fs::create_dir(d)?;
                created.push(d.clone());
            }
            cg.set_limits(memory_mb, max_pids)
        })();
        if let Err(e) = res {
            for d in created.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
            return Err(e);
        }
        Ok(cg)
    }

    /// Kill everything in every instance cgroup under the parents but those
    /// named in `keep` and remove them. Returns how many cgroups were
    /// removed.
    pub(crate) fn cleanup_all(&self, keep: &[std::ffi::OsString]) -> usize {
        let mut names = std::collections::BTreeSet::new();
        for p in &self.parents {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false)
                        && !keep.contains(&e.file_name())
                    {
                        names.insert(e.file_name());
                    }
                }
            }
        }
        let mut removed = 0;
        for name in names {
            let cg = InstanceCgroup {
                version: self.version,
                dirs: self
                    .parents
                    .iter()
                    .map(|p| p.join(&name))
                    .filter(|d| d.is_dir())
                    .collect(),
            };
            let alive = cg.kill_all(Vec::new());
            if !alive.is_empty() {
                tracing::warn!(cgroup = ?name, pids = ?alive, "leftover cgroup: processes survive SIGKILL");
            }
            match cg.remove() {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(cgroup = ?name, error = %e, "leftover cgroup: cannot remove");
                }
            }
        }
        removed
    }
}

/// The cgroup(s) of one instance.
#[derive(Debug)]
pub(crate) struct InstanceCgroup {
    version: CgroupVersion,
    /// v1: memory dir, then pids dir; v2: the one dir.
    dirs: Vec<PathBuf>,
}

impl InstanceCgroup {
    /// The directories (memory first).
    pub(crate) fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// `cgroup.procs` of every directory, as C strings for the child to
    /// write its pid into before it execs.
    pub(crate) fn procs_paths(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .filter_map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).ok())
            .collect()
    }

    fn set_limits(&self, memory_mb: u64, max_pids: u32) -> io::Result<()> {
        self.set_memory(memory_mb)?;
        match self.version {
            CgroupVersion::V1 => {
                if let Some(pids) = self.dirs.get(1) {
                    std::fs::write(pids.join("pids.max"), max_pids.to_string())?;
                }
            }
            CgroupVersion::V2 => {
                let pids = self.dirs[0].join("pids.max");
                if pids.exists() {
                    std::fs::write(pids, max_pids.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Set the memory limit (no swap beyond it); 0 leaves it unlimited.
    /// Also right for a cgroup that already has a (small) process in it.
    pub(crate) fn set_memory(&self, memory_mb: u64) -> io::Result<()> {
        if memory_mb == 0 {
            return Ok(());
        }
        let bytes = memory_mb.saturating_mul(1024 * 1024);
        let mem = &self.dirs[0];
        match self.version {
            CgroupVersion::V1 => {
                // memsw must stay >= the limit: the limit first (both start
                // unlimited).
                std::fs::write(mem.join("memory.limit_in_bytes"), bytes.to_string())?;
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    std::fs::write(memsw, bytes.to_string())?;
                }
                // Best effort: older kernels only.
                let _ = std::fs::write(mem.join("memory.swappiness"), "0");
            }
            CgroupVersion::V2 => {
                std::fs::write(mem.join("memory.max"), bytes.to_string())?;
                let swap = mem.join("memory.swap.max");
                if swap.exists() {
                    std::fs::write(swap, "0")?;
                }
            }
        }
        Ok(())
    }

    /// Rename the cgroup (every directory) to `id` under the same parents:
    /// a pooled launcher's cgroup becomes its instance's. A rename keeps
    /// the processes in it (no migration). On error the old names stay.
    pub(crate) fn rename(&mut self, id: &str) -> io::Result<()> {
        let new: Vec<PathBuf> = self.dirs.iter().map(|d| d.with_file_name(id)).collect();
        for (i, (old, to)) in self.dirs.iter().zip(&new).enumerate() {
            if let Err(e) = std::fs::rename(old, to) {
                // Undo the ones done.
                for (o, t) in self.dirs.iter().zip(&new).take(i) {
                    let _ = std::fs::rename(t, o);
                }
                return Err(e);
            }
        }
        self.dirs = new;
        Ok(())
    }

    /// Whether the kernel's OOM killer killed something in this cgroup.
    pub(crate) fn oom_killed(&self) -> bool {
        let mem = &self.dirs[0];
        match self.version {
            CgroupVersion::V1 => {
                if let Ok(s) = std::fs::read_to_string(mem.join("memory.oom_control"))
                    && let Some(n) = counter(&s, "oom_kill")
                {
                    return n > 0;
                }
                // Kernels before 4.13 have no oom_kill line: the limit was hit.
                std::fs::read_to_string(mem.join("memory.failcnt"))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            }
            CgroupVersion::V2 => std::fs::read_to_string(mem.join("memory.events"))
                .ok()
                .and_then(|s| counter(&s, "oom_kill"))
                .is_some_and(|n| n > 0),
        }
    }

    /// The pids in the cgroup (all directories).
    pub(crate) fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for d in &self.dirs {
            if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for l in s.lines() {
                    if let Ok(p) = l.trim().parse::<i32>()
                        && !pids.contains(&p)
                    {
                        pids.push(p);
                    }
                }
            }
        }
        pids
    }

    /// One SIGKILL pass over everything in the cgroup (v2: `cgroup.kill`).
    pub(crate) fn kill_once(&self) {
        if self.version == CgroupVersion::V2 {
            let k = self.dirs[0].join("cgroup.kill");
            if std::fs::write(&k, "1").is_ok() {
                return;
            }
        }
        for p in self.pids() {
            if p > 0 {
                // SAFETY: kill(2) has no memory-safety requirements.
                unsafe {
                    libc::kill(p, libc::SIGKILL);
                }
            }
        }
    }

    /// SIGKILL everything in the cgroup until it is empty, then wait until
    /// every process seen in it has finished exiting (a task leaves the
    /// cgroup early in its exit; a pid namespace's init then still waits for
    /// its children). `seen` are pids known to have been in it. Bounded: a
    /// few seconds. Returns the pids still alive at the end (normally none).
    pub(crate) fn kill_all(&self, mut seen: Vec<i32>) -> Vec<i32> {
        for _ in 0..400 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                if !seen.contains(&p) {
                    seen.push(p);
                }
            }
            self.kill_once();
            std::thread::sleep(Duration::from_millis(5));
        }
        for _ in 0..400 {
            seen.retain(|p| running(*p));
            if seen.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut left = self.pids();
        for p in seen {
            if !left.contains(&p) {
                left.push(p);
            }
        }
        left
    }

    /// Remove the directories, retrying while the kernel still counts exiting
    /// tasks (EBUSY) and killing whatever is (still or newly) in them, about
    /// one second at most.
    pub(crate) fn remove(&self) -> io::Result<()> {
        let mut last = Ok(());
        for d in self.dirs.iter().rev() {
            let mut res = Ok(());
            // Short sleeps first (usually one is enough), about a second in all.
            for i in 0..120u64 {
                res = match std::fs::remove_dir(d) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                };
                if res.is_ok() {
                    break;
                }
                // A process may have joined after the last kill (a start
                // being cancelled races with its own fork).
                self.kill_once();
                std::thread::sleep(Duration::from_micros(100 * (i + 1).min(100)));
            }
            if res.is_err() {
                last = res;
            }
        }
        last
    }
}

/// Whether a pid exists and is not a zombie (dead, waiting to be reaped).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next()),
            Some("Z" | "X" | "x")
        ),
        Err(_) => false,
    }
}

/// The value of a `name N` line.
fn counter(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(name))
            .then(|| it.next().and_then(|v| v.parse().ok()))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_escapes() {
        let s = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(counter(s, "oom_kill"), Some(3));
        assert_eq!(counter(s, "under_oom"), Some(0));
        assert_eq!(counter(s, "nope"), None);
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\"), "/end\\");
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    /// The files written for v2, on a plain directory standing in for
    /// cgroupfs (this machine has no v2 memory controller).
    #[test]
    fn v2_limits_and_oom_counter() {
        let root = std::env::temp_dir().join(format!("fnrs-cg2-{}", std::process::id()));
        let parent = root.join("fnrs");
        std::fs::create_dir_all(&parent).unwrap();
        let cgs = Cgroups {
            version: CgroupVersion::V2,
            parents: vec![parent.clone()],
        };
        // An existing cgroup of the same id is an error and stays as it is.
        let pre = parent.join("ID2");
        std::fs::create_dir(&pre).unwrap();
        for f in ["memory.swap.max", "pids.max"] {
            std::fs::write(pre.join(f), "max").unwrap();
        }
        let err = cgs.create("ID2", 64, 50).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(pre.exists());
        std::fs::remove_dir_all(&pre).unwrap();
        let cg = cgs.create("ID2", 64, 50).unwrap();
        assert_eq!(cg.dirs(), std::slice::from_ref(&pre));
        assert_eq!(read(&pre.join("memory.max")), (64u64 << 20).to_string());
        assert!(
            !pre.join("memory.swap.max").exists(),
            "only written when the kernel has it"
        );
        assert!(!cg.oom_killed());
        std::fs::write(
            pre.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 0\n",
        )
        .unwrap();
        assert!(!cg.oom_killed());
        std::fs::write(
            pre.join("memory.events"),
            "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n",
        )
        .unwrap();
        assert!(cg.oom_killed());
        std::fs::write(pre.join("cgroup.procs"), "12\n34\n").unwrap();
        assert_eq!(cg.pids(), [12, 34]);
        assert_eq!(
            cg.procs_paths(),
            [CString::new(pre.join("cgroup.procs").as_os_str().as_bytes()).unwrap()]
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// The files written for v1 (memory + pids hierarchies).
    #[test]
    fn v1_limits_and_oom_counter() {
        let root = std::env::temp_dir().join(format!("fnrs-cg1-{}", std::process::id()));
        let (mem, pids) = (root.join("memory/fnrs"), root.join("pids/fnrs"));
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::create_dir_all(&pids).unwrap();
        let cgs = Cgroups {
            version: CgroupVersion::V1,
            parents: vec![mem.clone(), pids.clone()],
        };
        let cg = cgs.create("ID", 128, 7).unwrap();
        assert_eq!(cg.dirs(), [mem.join("ID"), pids.join("ID")]);
        assert_eq!(
            read(&mem.join("ID/memory.limit_in_bytes")),
            (128u64 << 20).to_string()
        );
        assert_eq!(read(&pids.join("ID/pids.max")), "7");
        std::fs::write(
            mem.join("ID/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert!(cg.oom_killed());
        std::fs::write(
            mem.join("ID/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        )
        .unwrap();
        assert!(!cg.oom_killed());
        // No memory limit at 0 MB.
        let cg0 = cgs.create("ID0", 0, 7).unwrap();
        assert!(!cg0.dirs()[0].join("memory.limit_in_bytes").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn parent_must_be_relative_and_plain() {
        assert!(Cgroups::setup("../x").is_err());
        assert!(Cgroups::setup("").is_err());
        assert!(Cgroups::setup("a/../b").is_err());
    }
}
