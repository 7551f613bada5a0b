//! Real containers through runc (and crun) on overlay and vfs: the probe runs and reports,
//! namespaces and cgroups are really separate, accounting is read, and nothing is left behind
//! (also when the test panics).
//!
//! Each driver runs on a fresh root under /var/tmp (the conformance fixture): a driver that
//! cannot run here is skipped with its reason, unless COWBENCH_REQUIRE_DRIVERS lists it.

use std::time::Duration;

use cowbench::container::{ContainerSpec, Runtime, RuntimeKind};
use cowbench::image::{self, Image, ImageSpec, Shape};
use cowbench_drivers::conformance::{fixture, Fixture};
use cowbench_drivers::ledger::{Ledger, ResourceKind};
use cowbench_drivers::sys::{hostinfo, mounts};
use cowbench_workloads::probe::{Op, Request};

fn setup(driver: &str, kind: RuntimeKind) -> Option<(Fixture, Runtime, Image)> {
    let fx = fixture(driver, &[])?;
    if hostinfo::which(kind.as_str()).is_none() {
        if kind == RuntimeKind::Runc {
            panic!("runc is not installed (Debian package runc)");
        }
        eprintln!("SKIPPED {kind}: not installed");
        return None;
    }
    let rt = Runtime::new(kind, &fx.root().join("cb")).expect("runtime");
    let img = image::build(fx.driver(), &ImageSpec::new("base", 1, Shape::Base)).expect("base image");
    Some((fx, rt, img))
}

/// Nothing of ours left: no runtime state, no mount under the containers dir, no cgroup.
fn assert_clean(fx: &Fixture, rt: &Runtime) {
    assert_eq!(rt.list_ours().unwrap(), Vec::<String>::new(), "runtime state left");
    let ms = mounts::mounts_under(&fx.root().join("cb").join("containers")).unwrap();
    assert!(ms.is_empty(), "mounts left: {ms:?}");
    let cg = rt.hierarchies().children(rt.cgroup_parent());
    assert!(cg.is_empty(), "cgroups left under {}: {cg:?}", rt.cgroup_parent());
    let layers: Vec<_> = fx.driver().list().unwrap().into_iter().filter(|l| l.key.starts_with("ctr-")).collect();
    assert!(layers.is_empty(), "container layers left: {layers:?}");
}

fn probe_runs_and_returns_samples(driver: &str, kind: RuntimeKind) {
    let Some((fx, rt, img)) = setup(driver, kind) else { return };
    let req = Request::new(vec![
        Op::Stat { paths: vec!["/bin/busybox".into(), "/etc/passwd".into()], open: true },
        Op::Copyup { path: "/etc/passwd".into(), offset: 0, bytes: 4, fsync: true },
        Op::Read { path: "/bin/busybox".into(), block_bytes: 65536, direct: false, random: false, count: None, per_block: false, seed: 0 },
        Op::Write { path: "/tmp/w".into(), block_bytes: 4096, bytes: 1 << 20, direct: false, random: false, fsync: true, create: true, per_block: false, seed: 0 },
        Op::Write { path: "/tmp/direct".into(), block_bytes: 1 << 20, bytes: 4 << 20, direct: true, random: false, fsync: true, create: true, per_block: false, seed: 0 },
        Op::Meminfo,
    ]);
    let mut spec = ContainerSpec::probe(&req);
    spec.keep_layer = true;
    let out = rt.run(fx.driver(), &img, &spec).expect("run");
    assert!(out.success(), "exit {:?} signal {:?}; stderr: {}", out.exit_code, out.signal, out.stderr_str());
    let resp = out.probe_response().unwrap();
    assert_eq!(resp.errors, 0, "{:?}", resp.first_error());
    assert_eq!(resp.pid, 1, "the probe is the container's init");
    assert_eq!(resp.hostname, out.id);
    assert_eq!(resp.samples_of("stat", "stat").count(), 2);
    assert!(resp.samples_of("copyup", "open").next().unwrap().latency_ns > 0);
    assert_eq!(resp.samples_of("copyup", "pwrite").next().unwrap().bytes, 4);
    let busybox_len = std::fs::metadata("/bin/busybox").unwrap().len();
    assert_eq!(resp.samples_of("read", "total").next().unwrap().bytes, busybox_len);
    assert_eq!(resp.samples_of("write", "total").next().unwrap().bytes, 1 << 20);
    assert!(resp.samples_of("meminfo", "total").next().unwrap().values["vm_rss_bytes"] > 0);
    let acct = out.accounting.clone().expect("accounting");
    assert!(acct.memory_bytes > 0 || acct.memory_peak_bytes.unwrap_or(0) > 0, "{acct:?}");
    // O_DIRECT writes are issued by the container's own task, so its cgroup is charged for
    // them (buffered writeback is charged to the root blkio cgroup on v1).
    if out.accounting_final {
        assert!(acct.io_write_bytes >= 4 << 20, "{acct:?}");
    }
    assert!(!rt.hierarchies().exists(&out.cgroup_path), "cgroup {} still there", out.cgroup_path);
    // The write went to the container's own layer, copied up from the image.
    let changes = fx.driver().changes(&out.layer_key).unwrap();
    let paths: Vec<_> = changes.iter().map(|c| c.path.to_string_lossy().into_owned()).collect();
    assert!(paths.contains(&"etc/passwd".to_string()) && paths.contains(&"tmp/w".to_string()), "{paths:?}");
    fx.driver().remove(&out.layer_key).unwrap();
    eprintln!("{driver}/{kind}: run {:.1} ms, setup {:.1} ms, accounting {acct:?}", out.timings.run_ns as f64 / 1e6, out.timings.setup_ns as f64 / 1e6);
    assert_clean(&fx, &rt);
}

#[test]
fn probe_runs_and_returns_samples_overlay() {
    probe_runs_and_returns_samples("overlay", RuntimeKind::Runc);
}

#[test]
fn probe_runs_and_returns_samples_vfs() {
    probe_runs_and_returns_samples("vfs", RuntimeKind::Runc);
}

#[test]
fn probe_runs_with_crun_overlay() {
    probe_runs_and_returns_samples("overlay", RuntimeKind::Crun);
}

fn ns_of(pid: &str, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap().to_string_lossy().into_owned()
}

fn namespaces_and_cgroup(driver: &str, kind: RuntimeKind) {
    let Some((fx, rt, img)) = setup(driver, kind) else { return };
    let c = rt.start(fx.driver(), &img, &ContainerSpec::probe(&Request::new(vec![Op::Hold, Op::Meminfo]))).expect("start");
    c.wait_ready(Duration::from_secs(20)).unwrap();
    let t = c.timings();
    assert!(t.create_ns > 0 && t.start_ns > 0 && t.total_ns >= t.create_ns + t.start_ns);
    for ns in ["pid", "mnt", "uts", "ipc", "net"] {
        let inside = c.exec(&["readlink", &format!("/proc/self/ns/{ns}")]).unwrap();
        assert_eq!(inside.exit_code, Some(0), "{}", String::from_utf8_lossy(&inside.stderr));
        let inside = inside.stdout_str().trim().to_string();
        assert!(inside.starts_with(&format!("{ns}:[")), "{inside}");
        assert_ne!(inside, ns_of("self", ns), "{ns} namespace shared with the host");
        // The container's init is in the same namespace as the exec'd process.
        assert_eq!(inside, ns_of(&c.pid().to_string(), ns));
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let h = c.exec(&["hostname"]).unwrap().stdout_str();
    assert_eq!(h.trim(), c.id());
    assert_ne!(h.trim(), host.trim());
    let init = c.exec(&["cat", "/proc/1/cmdline"]).unwrap().stdout_str();
    assert!(init.starts_with("/usr/local/bin/cowbench-probe"), "pid 1 inside is {init:?}");
    let net = c.exec(&["ls", "/sys/class/net"]).unwrap().stdout_str();
    assert_eq!(net.split_whitespace().collect::<Vec<_>>(), vec!["lo"], "only loopback");
    // Masked and read-only paths as Docker's.
    assert!(!std::fs::read("/proc/timer_list").unwrap().is_empty());
    let masked = c.exec(&["sh", "-c", "cat /proc/timer_list | wc -c"]).unwrap().stdout_str();
    assert_eq!(masked.trim(), "0", "/proc/timer_list is masked");
    assert_ne!(c.exec(&["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"]).unwrap().exit_code, Some(0));

    let cg = c.cgroup_path();
    assert!(rt.hierarchies().exists(&cg), "cgroup {cg} exists while running");
    // Container and cgroup are in the root's ledger while they exist (for `cowbench clean`).
    let ledger = Ledger::open(&std::fs::canonicalize(fx.root().join("cb")).unwrap());
    let live = |k: ResourceKind, id: &str| ledger.entries().unwrap().iter().any(|e| e.kind == k && e.id == id);
    assert!(live(ResourceKind::Container, c.id()), "{:?}", ledger.entries());
    assert!(live(ResourceKind::Cgroup, cg.trim_matches('/')), "{:?}", ledger.entries());
    let id = c.id().to_string();
    let cgroup_of_init = std::fs::read_to_string(format!("/proc/{}/cgroup", c.pid())).unwrap();
    assert!(cgroup_of_init.contains(&cg), "{cgroup_of_init}");
    let a = c.accounting().unwrap();
    assert!(a.memory_bytes > 0, "{a:?}");
    let out = c.stop().unwrap();
    assert!(!out.killed, "SIGTERM ends the held probe");
    let resp = out.probe_response().unwrap();
    assert_eq!(resp.samples_of("hold", "total").count(), 1);
    assert!(resp.samples_of("meminfo", "total").next().unwrap().values["vm_rss_bytes"] > 0);
    assert!(!rt.hierarchies().exists(&cg), "cgroup {cg} gone after stop");
    assert!(!live(ResourceKind::Container, &id) && !live(ResourceKind::Cgroup, cg.trim_matches('/')), "{:?}", ledger.entries());
    assert_clean(&fx, &rt);
}

#[test]
fn namespaces_and_cgroup_overlay() {
    namespaces_and_cgroup("overlay", RuntimeKind::Runc);
}

#[test]
fn namespaces_and_cgroup_vfs() {
    namespaces_and_cgroup("vfs", RuntimeKind::Runc);
}

#[test]
fn namespaces_and_cgroup_crun_overlay() {
    namespaces_and_cgroup("overlay", RuntimeKind::Crun);
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn twenty_held_containers(driver: &str) {
    let Some((fx, rt, img)) = setup(driver, RuntimeKind::Runc) else { return };
    let req = Request::new(vec![Op::Hold]);
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(rt.start(fx.driver(), &img, &ContainerSpec::probe(&req)).expect("start"));
    }
    for c in &held {
        c.wait_ready(Duration::from_secs(30)).unwrap();
    }
    assert_eq!(rt.list_ours().unwrap().len(), 20);
    let mut total: Vec<u64> = held.iter().map(|c| c.timings().total_ns).collect();
    let mut create: Vec<u64> = held.iter().map(|c| c.timings().create_ns).collect();
    let mut start: Vec<u64> = held.iter().map(|c| c.timings().start_ns).collect();
    let mem: u64 = held.iter().map(|c| c.accounting().unwrap().memory_bytes).sum();
    eprintln!(
        "{driver}: 20 containers, start latency median total {:.1} ms (create {:.1} ms, start {:.1} ms), memory charged {} KiB",
        median(&mut total) as f64 / 1e6,
        median(&mut create) as f64 / 1e6,
        median(&mut start) as f64 / 1e6,
        mem / 1024
    );
    // Half stopped explicitly, half by drop.
    let rest = held.split_off(10);
    for c in held {
        c.stop().unwrap();
    }
    drop(rest);
    assert_clean(&fx, &rt);
    // The per-root cgroup parent goes with the last runtime handle.
    let (hier, parent) = (rt.hierarchies().clone(), rt.cgroup_parent().to_string());
    assert!(hier.exists(&parent));
    drop(rt);
    assert!(!hier.exists(&parent), "{parent} left");
}

#[test]
fn twenty_held_containers_leave_nothing_overlay() {
    twenty_held_containers("overlay");
}

#[test]
fn twenty_held_containers_leave_nothing_vfs() {
    twenty_held_containers("vfs");
}

#[test]
fn exit_codes_limits_and_failures_overlay() {
    let Some((fx, rt, img)) = setup("overlay", RuntimeKind::Runc) else { return };
    // A request longer than an argument can be (128 KiB) reaches the probe through a file.
    let paths: Vec<String> = (0..6000).map(|i| format!("/bin/no-such-file-with-a-long-name-{i:05}")).collect();
    let req = Request::new(vec![Op::Stat { paths, open: false }]);
    assert!(req.to_json().len() > 200_000);
    let out = rt.run(fx.driver(), &img, &ContainerSpec::probe(&req)).unwrap();
    let resp = out.probe_response().unwrap();
    assert_eq!(resp.samples_of("stat", "stat").count(), 6000);
    assert!(resp.samples.iter().all(|s| s.error.as_ref().map(|e| e.errno) == Some(Some(libc::ENOENT))));
    let out = rt.run(fx.driver(), &img, &ContainerSpec::command(["sh", "-c", "echo out; echo err >&2; exit 3"])).unwrap();
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.stdout_str(), "out\n");
    assert_eq!(out.stderr_str(), "err\n");
    // A memory limit is applied to the container's cgroup.
    let mut spec = ContainerSpec::command(["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || echo none"]);
    spec.limits.memory_bytes = Some(64 << 20);
    let lim = rt.run(fx.driver(), &img, &spec).unwrap();
    assert!(lim.success());
    let mut spec = ContainerSpec::probe(&Request::new(vec![Op::Hold]));
    spec.limits.memory_bytes = Some(64 << 20);
    let c = rt.start(fx.driver(), &img, &spec).unwrap();
    c.wait_ready(Duration::from_secs(20)).unwrap();
    if let Some(m) = rt.hierarchies().v1.get("memory") {
        let p = m.join(c.cgroup_path().trim_start_matches('/')).join("memory.limit_in_bytes");
        assert_eq!(std::fs::read_to_string(p).unwrap().trim(), (64u64 << 20).to_string());
    }
    drop(c);
    // A missing binary is an error of the runtime or a failed exit, never a success.
    match rt.run(fx.driver(), &img, &ContainerSpec::command(["/nonexistent"])) {
        Ok(o) => assert!(!o.success()),
        Err(e) => eprintln!("missing binary: {e}"),
    }
    // Timeout kills the container.
    let mut spec = ContainerSpec::command(["sleep", "60"]);
    spec.timeout = Some(Duration::from_millis(500));
    let out = rt.run(fx.driver(), &img, &spec).unwrap();
    assert!(out.timed_out && !out.success(), "{out:?}");
    assert_clean(&fx, &rt);
}

#[test]
fn cleanup_on_panic_and_kill_all_ours_overlay() {
    let Some((fx, rt, img)) = setup("overlay", RuntimeKind::Runc) else { return };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let c = rt.start(fx.driver(), &img, &ContainerSpec::probe(&Request::new(vec![Op::Hold]))).unwrap();
        c.wait_ready(Duration::from_secs(20)).unwrap();
        panic!("test panics with a container held");
    }));
    assert!(r.is_err());
    assert_clean(&fx, &rt);
    // A container whose guard never runs (as after kill -9 of cowbench) is found and removed
    // by kill_all_ours; its layer by remove_container_layers.
    let c = rt.start(fx.driver(), &img, &ContainerSpec::probe(&Request::new(vec![Op::Hold]))).unwrap();
    c.wait_ready(Duration::from_secs(20)).unwrap();
    let id = c.id().to_string();
    std::mem::forget(c);
    assert_eq!(rt.list_ours().unwrap(), vec![id.clone()]);
    let rep = rt.kill_all_ours().unwrap();
    assert_eq!(rep.containers, vec![id]);
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(rep.mounts.len(), 1);
    let removed = Runtime::remove_container_layers(fx.driver()).unwrap();
    assert_eq!(removed.len(), 1);
    assert_clean(&fx, &rt);
}

/// The same container on every other backend that can run here (btrfs on its loop-backed
/// filesystem, zfs on zfs-fuse, aufs on unionfs-fuse, devicemapper inside scripts/vm): its
/// mount must serve as a rootfs, FUSE mounts included.
#[test]
fn probe_runs_on_every_other_backend() {
    for driver in cowbench_drivers::registry::DRIVERS {
        if driver == "overlay" || driver == "vfs" {
            continue;
        }
        let Some((fx, rt, img)) = setup(driver, RuntimeKind::Runc) else { continue };
        let req = Request::new(vec![
            Op::Copyup { path: "/etc/passwd".into(), offset: 0, bytes: 4, fsync: true },
            Op::Stat { paths: vec!["/bin/busybox".into()], open: true },
        ]);
        let out = rt.run(fx.driver(), &img, &ContainerSpec::probe(&req)).unwrap_or_else(|e| panic!("{driver}: {e}"));
        assert!(out.success(), "{driver}: exit {:?}; stderr: {}", out.exit_code, out.stderr_str());
        let resp = out.probe_response().unwrap();
        assert_eq!(resp.errors, 0, "{driver}: {:?}", resp.first_error());
        assert_eq!(resp.pid, 1);
        eprintln!("{driver}: copyup open {} ns", resp.samples_of("copyup", "open").next().unwrap().latency_ns);
        assert_clean(&fx, &rt);
    }
}
