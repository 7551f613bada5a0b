//! The OCI bundle (`config.json`) of a cowbench container, built with the `oci-spec` crate.
//!
//! Close to what Docker gives a default container: own pid, mount, uts, ipc and network
//! namespaces (the network namespace has only the loopback device, which the runtime brings
//! up), Docker's default capability set, masked and read-only /proc and /sys paths, /proc,
//! a /dev tmpfs, devpts, /dev/shm, mqueue and a read-only sysfs. The cgroup namespace is the
//! host's, as with Docker on cgroup v1 hosts, so the harness sees the same cgroup paths as the
//! container.

use std::path::PathBuf;

use oci_spec::runtime::{
    Capability, LinuxBlockIoBuilder, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder,
    LinuxThrottleDeviceBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder,
    Spec, SpecBuilder,
};

use super::{ContainerSpec, Error, Limits, Result};

/// Docker's default masked paths (moby `oci/defaults.go`).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's default read-only paths.
pub const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Docker's default capabilities.
const CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(PathBuf::from(dest))
        .typ(typ)
        .source(PathBuf::from(source))
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(spec_err)
}

fn spec_err(e: impl std::fmt::Display) -> Error {
    Error::Spec(e.to_string())
}

/// Everything `config.json` needs beyond the [`ContainerSpec`].
pub struct BundleParams<'a> {
    pub rootfs: PathBuf,
    pub hostname: &'a str,
    pub cgroups_path: &'a str,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// Further mounts (after the standard ones), e.g. a read-only bind of a request file.
    pub extra_mounts: Vec<Mount>,
}

/// A read-only bind mount of host file or directory `source` at `dest`.
pub fn bind_ro(source: &std::path::Path, dest: &str) -> Result<Mount> {
    mount(dest, "bind", &source.to_string_lossy(), &["rbind", "ro", "nosuid", "nodev"])
}

/// Build the runtime spec.
pub fn build(spec: &ContainerSpec, p: &BundleParams<'_>) -> Result<Spec> {
    let caps: std::collections::HashSet<Capability> = CAPS.iter().copied().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()
        .map_err(spec_err)?;
    // Open-file limit: this process's hard limit, as Docker passes on the daemon's. A higher
    // one would need CAP_SYS_RESOURCE and fail in the runtime.
    let nofile = {
        let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: rl is a valid out-pointer.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 { rl.rlim_max } else { 1024 }
    };
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(p.args.clone())
        .env(p.env.clone())
        .cwd(PathBuf::from(&p.cwd))
        .no_new_privileges(true)
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(nofile)
            .soft(nofile)
            .build()
            .map_err(spec_err)?])
        .build()
        .map_err(spec_err)?;

    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount("/dev/pts", "devpts", "devpts", &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"])?,
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"])?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?,
    ];
    mounts.extend(p.extra_mounts.iter().cloned());

    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ]
    .into_iter()
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build().map_err(spec_err))
    .collect::<Result<Vec<_>>>()?;

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(p.cgroups_path))
        .resources(resources(&spec.limits)?)
        .masked_paths(MASKED_PATHS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .readonly_paths(READONLY_PATHS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(spec_err)?;

    SpecBuilder::default()
        .version("1.0.2")
        .root(RootBuilder::default().path(p.rootfs.clone()).readonly(spec.readonly_rootfs).build().map_err(spec_err)?)
        .hostname(p.hostname.to_string())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(spec_err)
}

fn resources(l: &Limits) -> Result<oci_spec::runtime::LinuxResources> {
    // Deny every device node except the defaults the runtime always allows (null, zero, full,
    // random, urandom, tty, pts), as Docker does.
    let mut r = LinuxResourcesBuilder::default().devices(vec![LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .map_err(spec_err)?]);
    if let Some(m) = l.memory_bytes {
        r = r.memory(LinuxMemoryBuilder::default().limit(m as i64).build().map_err(spec_err)?);
    }
    if let Some(cpus) = l.cpus {
        let period = 100_000u64;
        r = r.cpu(LinuxCpuBuilder::default().period(period).quota((cpus * period as f64) as i64).build().map_err(spec_err)?);
    }
    if let Some(p) = l.pids {
        r = r.pids(LinuxPidsBuilder::default().limit(p).build().map_err(spec_err)?);
    }
    if l.io_weight.is_some() || !l.io_read_bps.is_empty() || !l.io_write_bps.is_empty() {
        let dev = |v: &[(u64, u64, u64)]| -> Result<Vec<_>> {
            v.iter()
                .map(|(maj, min, rate)| {
                    LinuxThrottleDeviceBuilder::default()
                        .major(*maj as i64)
                        .minor(*min as i64)
                        .rate(*rate)
                        .build()
                        .map_err(spec_err)
                })
                .collect()
        };
        let mut b = LinuxBlockIoBuilder::default();
        if let Some(w) = l.io_weight {
            b = b.weight(w);
        }
        if !l.io_read_bps.is_empty() {
            b = b.throttle_read_bps_device(dev(&l.io_read_bps)?);
        }
        if !l.io_write_bps.is_empty() {
            b = b.throttle_write_bps_device(dev(&l.io_write_bps)?);
        }
        r = r.block_io(b.build().map_err(spec_err)?);
    }
    r.build().map_err(spec_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxNamespaceType as NS;

    #[test]
    fn docker_like_spec() {
        let mut spec = ContainerSpec::command(["/bin/true"]);
        spec.limits = Limits {
            memory_bytes: Some(64 << 20),
            cpus: Some(1.5),
            pids: Some(100),
            io_weight: None,
            io_read_bps: vec![(8, 0, 1000)],
            io_write_bps: vec![],
        };
        let p = BundleParams {
            rootfs: "/r/rootfs".into(),
            hostname: "h1",
            cgroups_path: "/cowbench/ab/c1",
            args: vec!["/bin/true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            extra_mounts: vec![bind_ro(std::path::Path::new("/r/request.json"), "/run/req.json").unwrap()],
        };
        let s = build(&spec, &p).unwrap();
        let linux = s.linux().as_ref().unwrap();
        let ns: Vec<NS> = linux.namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect();
        assert_eq!(ns, vec![NS::Pid, NS::Network, NS::Ipc, NS::Uts, NS::Mount]);
        assert_eq!(linux.cgroups_path().as_deref(), Some(std::path::Path::new("/cowbench/ab/c1")));
        assert!(linux.masked_paths().as_ref().unwrap().contains(&"/proc/kcore".to_string()));
        assert!(linux.readonly_paths().as_ref().unwrap().contains(&"/proc/sys".to_string()));
        let r = linux.resources().as_ref().unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(150_000));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 100);
        let bio = r.block_io().as_ref().unwrap();
        assert_eq!(bio.throttle_read_bps_device().as_ref().unwrap()[0].rate(), 1000);
        let mounts: Vec<_> = s.mounts().as_ref().unwrap().iter().map(|m| m.destination().to_string_lossy().into_owned()).collect();
        assert_eq!(mounts, vec!["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/run/req.json"]);
        let sys = &s.mounts().as_ref().unwrap()[5];
        assert!(sys.options().as_ref().unwrap().contains(&"ro".to_string()));
        assert_eq!(s.hostname().as_deref(), Some("h1"));
        let proc_ = s.process().as_ref().unwrap();
        assert_eq!(proc_.no_new_privileges(), Some(true));
        // Round trip through JSON as the runtime reads it.
        let json = serde_json::to_string(&s).unwrap();
        let back: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
