//! Target resolution and cgroup discovery on the cgroup layouts recap meets: hybrid (v1
//! controllers, v2 at `/sys/fs/cgroup/unified`: this machine), pure v2 (`/sys/fs/cgroup`:
//! Debian 12, Ubuntu 22.04), Docker's cgroupfs driver (`docker/<id>`) and systemd driver
//! (`system.slice/docker-<id>.scope`), the kubelet's pods under both drivers. The samples are in
//! `recap-agent/tests/data/` (its README says which were recorded where); where a function
//! reads the filesystem, the layout is made with `mkdir` in a temporary directory.

use std::path::{Path, PathBuf};

use super::cgroup::*;
use super::TargetError;

macro_rules! sample {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/", $path))
    };
}

const MI_HYBRID: &str = sample!("mountinfo/hybrid-debian12-firecracker-6.18.txt");
const MI_HYBRID_IN_CONTAINER: &str = sample!("mountinfo/hybrid-inside-docker-container.txt");
const MI_HYBRID_UBUNTU2004: &str = sample!("mountinfo/hybrid-ubuntu2004-docker-systemd.txt");
const MI_DEBIAN12: &str = sample!("mountinfo/pure-v2-debian12-docker-systemd.txt");
const MI_UBUNTU2204: &str = sample!("mountinfo/pure-v2-ubuntu2204-docker-systemd.txt");

const CG_HYBRID_DOCKER: &str = sample!("proc-cgroup/hybrid-docker-cgroupfs.txt");
const CG_HYBRID_UBUNTU2004: &str = sample!("proc-cgroup/hybrid-ubuntu2004-docker-systemd.txt");
const CG_HYBRID_POD: &str = sample!("proc-cgroup/hybrid-kubepods-cgroupfs-container.txt");
const CG_HYBRID_SANDBOX: &str = sample!("proc-cgroup/hybrid-kubepods-cgroupfs-sandbox.txt");
const CG_DEBIAN12_DOCKER: &str = sample!("proc-cgroup/pure-v2-debian12-docker-systemd.txt");
const CG_DEBIAN12_SESSION: &str = sample!("proc-cgroup/pure-v2-debian12-ssh-session.txt");
const CG_UBUNTU2204_DOCKER: &str = sample!("proc-cgroup/pure-v2-ubuntu2204-docker-systemd.txt");
const CG_UBUNTU2204_SYSTEMD: &str =
    sample!("proc-cgroup/pure-v2-ubuntu2204-systemd-in-container.txt");
const CG_V2_POD: &str = sample!("proc-cgroup/pure-v2-kubepods-systemd-container.txt");
const CG_V2_SANDBOX: &str = sample!("proc-cgroup/pure-v2-kubepods-systemd-sandbox.txt");

/// The container ids of the samples.
const ID_HYBRID: &str = "20979f87a49ff060f7ccf4a6496012705b89e1eecc6546904aa673ebc8d22898";
const ID_UBUNTU2004: &str = "6f2dc2feeaf81678fdcead749115e5906fee4bc0254f9cffa003d5b38e2abb9a";
const ID_DEBIAN12: &str = "76e239d109c434c49e20cd905bf77f03dbaf35df83974f7ea2ab2484afd2384e";
const ID_UBUNTU2204: &str = "75d0a7566b7eb8fc51ce42f5d27a08eb95a8b883597036cf39d506efb70c19f7";
const ID_POD_CONTAINER: &str = "75fdf2e2b7f73967b5b0442f9f5488008322b312bb606f77178fe9ef5a029ebf";
const ID_POD_SANDBOX: &str = "1e00d6173ffb6be1bef7b45efa3f8ad3b4e86ea7ea97ad29c6f5dc3a176f2d03";
const POD_UID: &str = "beb514b7-b32e-415f-a2b5-f3854ecfc9d7";

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

/// A temporary directory standing for `/`, removed on drop.
struct FakeRoot(PathBuf);

impl FakeRoot {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("recap-layout-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        FakeRoot(dir.canonicalize().unwrap())
    }

    /// `path` (absolute, as on the host) inside the fake root.
    fn at(&self, path: &str) -> PathBuf {
        self.0.join(path.trim_start_matches('/'))
    }

    /// Makes a cgroup directory (with the `cgroup.threads` file every cgroup has).
    fn cgroup(&self, path: &str) -> PathBuf {
        let dir = self.at(path);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.threads"), "").unwrap();
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        dir
    }

    /// Writes `/proc/PID/cgroup`.
    fn proc_cgroup(&self, pid: u32, text: &str) {
        let dir = self.at(&format!("/proc/{pid}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup"), text).unwrap();
    }

    /// A mountinfo sample with its cgroup mounts moved into the fake root.
    fn mountinfo(&self, sample: &str) -> String {
        sample.replace(
            " /sys/fs/cgroup",
            &format!(" {}", self.at("/sys/fs/cgroup").display()),
        )
    }
}

impl Drop for FakeRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_cgroup2_mount_of_each_layout() {
    let whole = |m: &str| Cgroup2Mount {
        mount_point: p(m),
        root: "/".into(),
    };
    assert_eq!(
        parse_cgroup2_mount_entry(MI_HYBRID),
        Some(whole("/sys/fs/cgroup/unified"))
    );
    assert_eq!(
        parse_cgroup2_mount_entry(MI_HYBRID_UBUNTU2004),
        Some(whole("/sys/fs/cgroup/unified"))
    );
    assert_eq!(
        parse_cgroup2_mount_entry(MI_DEBIAN12),
        Some(whole("/sys/fs/cgroup"))
    );
    assert_eq!(
        parse_cgroup2_mount_entry(MI_UBUNTU2204),
        Some(whole("/sys/fs/cgroup"))
    );
    // Docker (cgroupfs driver) on a hybrid host gives its containers v1 mounts only.
    assert_eq!(parse_cgroup2_mount_entry(MI_HYBRID_IN_CONTAINER), None);
}

#[test]
fn a_whole_hierarchy_mount_wins_over_a_subtree_bind_mount_listed_first() {
    let text = "50 27 0:26 /system.slice/app.service /srv/app-cgroup rw - cgroup2 cgroup2 rw\n\
                30 21 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    assert_eq!(parse_cgroup2_mount(text), Some(p("/sys/fs/cgroup")));
    // A subtree mount alone is taken, with its root.
    let only = "50 27 0:26 /system.slice/app.service /srv/app-cgroup rw - cgroup2 cgroup2 rw\n";
    assert_eq!(
        parse_cgroup2_mount_entry(only),
        Some(Cgroup2Mount {
            mount_point: p("/srv/app-cgroup"),
            root: "/system.slice/app.service".into(),
        })
    );
}

#[test]
fn the_v1_controller_mounts_of_each_layout() {
    assert_eq!(
        parse_v1_mount(MI_HYBRID, "memory"),
        Some(p("/sys/fs/cgroup/memory"))
    );
    assert_eq!(
        parse_v1_mount(MI_HYBRID, "cpu"),
        Some(p("/sys/fs/cgroup/cpu"))
    );
    assert_eq!(
        parse_v1_mount(MI_HYBRID, "blkio"),
        Some(p("/sys/fs/cgroup/blkio"))
    );
    // systemd's hybrid mode mounts cpu and cpuacct together.
    assert_eq!(
        parse_v1_mount(MI_HYBRID_UBUNTU2004, "cpu"),
        Some(p("/sys/fs/cgroup/cpu,cpuacct"))
    );
    assert_eq!(
        parse_v1_mount(MI_HYBRID_UBUNTU2004, "memory"),
        Some(p("/sys/fs/cgroup/memory"))
    );
    // `name=systemd` is no controller.
    assert_eq!(parse_v1_mount(MI_HYBRID_UBUNTU2004, "systemd"), None);
    for pure in [MI_DEBIAN12, MI_UBUNTU2204] {
        for controller in ["memory", "cpu", "blkio"] {
            assert_eq!(parse_v1_mount(pure, controller), None, "{controller}");
        }
    }
    // Inside a container the v1 mounts show the container's cgroup as their root.
    assert_eq!(
        parse_v1_mount_entry(MI_HYBRID_IN_CONTAINER, "memory"),
        Some((p("/sys/fs/cgroup/memory"), format!("/docker/{ID_HYBRID}")))
    );
}

#[test]
fn the_v2_and_v1_lines_of_proc_pid_cgroup() {
    let docker_hybrid = format!("/docker/{ID_HYBRID}");
    assert_eq!(
        parse_v2_cgroup_line(CG_HYBRID_DOCKER),
        Some(docker_hybrid.as_str())
    );
    assert_eq!(
        parse_v1_cgroup_line(CG_HYBRID_DOCKER, "memory"),
        Some(docker_hybrid.as_str())
    );
    assert_eq!(
        parse_v1_cgroup_line(CG_HYBRID_DOCKER, "blkio"),
        Some(docker_hybrid.as_str())
    );
    let scope_2004 = format!("/system.slice/docker-{ID_UBUNTU2004}.scope");
    assert_eq!(
        parse_v1_cgroup_line(CG_HYBRID_UBUNTU2004, "cpu"),
        Some(scope_2004.as_str())
    );
    assert_eq!(
        parse_v1_cgroup_line(CG_HYBRID_UBUNTU2004, "rdma"),
        Some("/")
    );
    assert_eq!(
        parse_v1_cgroup_line(CG_HYBRID_UBUNTU2004, "name=systemd"),
        Some(scope_2004.as_str())
    );
    // The `0::` line has no controller name: it is never taken for one.
    assert_eq!(parse_v1_cgroup_line(CG_HYBRID_UBUNTU2004, ""), None);
    let scope_d12 = format!("/system.slice/docker-{ID_DEBIAN12}.scope");
    assert_eq!(
        parse_v2_cgroup_line(CG_DEBIAN12_DOCKER),
        Some(scope_d12.as_str())
    );
    assert_eq!(parse_v1_cgroup_line(CG_DEBIAN12_DOCKER, "memory"), None);
    assert_eq!(
        parse_v2_cgroup_line(CG_V2_POD),
        Some(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podbeb514b7_b32e_415f_a2b5_f3854ecfc9d7.slice/cri-containerd-75fdf2e2b7f73967b5b0442f9f5488008322b312bb606f77178fe9ef5a029ebf.scope"
        )
    );
    // A v1-only host has no `0::` line.
    assert_eq!(
        parse_v2_cgroup_line("4:memory:/docker/x\n1:cpu:/docker/x\n"),
        None
    );
}

/// For each layout: (its mountinfo, a process's /proc/PID/cgroup, the directory under the fake
/// root it must resolve to).
fn pid_cases() -> Vec<(&'static str, &'static str, &'static str, String)> {
    vec![
        (
            "hybrid, Docker cgroupfs",
            MI_HYBRID,
            CG_HYBRID_DOCKER,
            format!("/sys/fs/cgroup/unified/docker/{ID_HYBRID}"),
        ),
        (
            "hybrid Ubuntu 20.04, Docker systemd",
            MI_HYBRID_UBUNTU2004,
            CG_HYBRID_UBUNTU2004,
            format!("/sys/fs/cgroup/unified/system.slice/docker-{ID_UBUNTU2004}.scope"),
        ),
        (
            "hybrid, kubepods cgroupfs",
            MI_HYBRID,
            CG_HYBRID_POD,
            format!("/sys/fs/cgroup/unified/kubepods/burstable/pod{POD_UID}/{ID_POD_CONTAINER}"),
        ),
        (
            "Debian 12, Docker systemd",
            MI_DEBIAN12,
            CG_DEBIAN12_DOCKER,
            format!("/sys/fs/cgroup/system.slice/docker-{ID_DEBIAN12}.scope"),
        ),
        (
            "Debian 12, a login session",
            MI_DEBIAN12,
            CG_DEBIAN12_SESSION,
            "/sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope".into(),
        ),
        (
            "Ubuntu 22.04, Docker systemd",
            MI_UBUNTU2204,
            CG_UBUNTU2204_DOCKER,
            format!("/sys/fs/cgroup/system.slice/docker-{ID_UBUNTU2204}.scope"),
        ),
        (
            "pure v2, kubepods systemd",
            MI_DEBIAN12,
            CG_V2_POD,
            format!(
                "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID_POD_CONTAINER}.scope",
                POD_UID.replace('-', "_")
            ),
        ),
    ]
}

#[test]
fn a_pid_resolves_to_its_v2_directory_in_each_layout() {
    for (i, (layout, mountinfo, proc_cgroup, want)) in pid_cases().into_iter().enumerate() {
        let fake = FakeRoot::new(&format!("pid{i}"));
        let mount = parse_cgroup2_mount_entry(&fake.mountinfo(mountinfo)).unwrap();
        let pid = 4242 + i as u32;
        fake.proc_cgroup(pid, proc_cgroup);
        let made = fake.cgroup(&want);
        let dir = cgroup_of_pid_in(&fake.at("/proc"), &mount.mount_point, &mount.root, pid)
            .unwrap_or_else(|e| panic!("{layout}: {e}"));
        assert_eq!(dir, fake.at(&want), "{layout}");
        // What `--cgroup DIR` takes: the same directory, checked under the same mount.
        assert_eq!(
            check_cgroup_dir(&mount.mount_point, &dir).unwrap(),
            made,
            "{layout}"
        );
        // A PID with no /proc entry is said to be missing.
        assert!(matches!(
            cgroup_of_pid_in(&fake.at("/proc"), &mount.mount_point, &mount.root, 1),
            Err(TargetError::NoSuchPid { pid: 1 })
        ));
    }
}

#[test]
fn the_container_directory_for_both_docker_drivers() {
    let v2 = p("/sys/fs/cgroup");
    let hybrid = p("/sys/fs/cgroup/unified");
    let of = |root: &Path, text: &str| v2_dir(root, "/", parse_v2_cgroup_line(text).unwrap());
    // cgroupfs driver: `docker/<id>` (recorded on this machine).
    let dir = of(&hybrid, CG_HYBRID_DOCKER).unwrap();
    assert_eq!(
        container_dir(&hybrid, &dir, ID_HYBRID),
        p(&format!("/sys/fs/cgroup/unified/docker/{ID_HYBRID}"))
    );
    // systemd driver: `system.slice/docker-<id>.scope`, pure v2 and hybrid.
    let dir = of(&v2, CG_DEBIAN12_DOCKER).unwrap();
    assert_eq!(
        container_dir(&v2, &dir, ID_DEBIAN12),
        p(&format!(
            "/sys/fs/cgroup/system.slice/docker-{ID_DEBIAN12}.scope"
        ))
    );
    let dir = of(&v2, CG_UBUNTU2204_DOCKER).unwrap();
    assert_eq!(
        container_dir(&v2, &dir, ID_UBUNTU2204),
        p(&format!(
            "/sys/fs/cgroup/system.slice/docker-{ID_UBUNTU2204}.scope"
        ))
    );
    let dir = of(&hybrid, CG_HYBRID_UBUNTU2004).unwrap();
    assert_eq!(
        container_dir(&hybrid, &dir, ID_UBUNTU2004),
        p(&format!(
            "/sys/fs/cgroup/unified/system.slice/docker-{ID_UBUNTU2004}.scope"
        ))
    );
    // systemd as the container's init sits in `init.scope` below the container's cgroup:
    // the container is its scope, not init's.
    let dir = of(&v2, CG_UBUNTU2204_SYSTEMD).unwrap();
    assert_eq!(
        dir,
        p(&format!(
            "/sys/fs/cgroup/system.slice/docker-{ID_UBUNTU2204}.scope/init.scope"
        ))
    );
    assert_eq!(
        container_dir(&v2, &dir, ID_UBUNTU2204),
        p(&format!(
            "/sys/fs/cgroup/system.slice/docker-{ID_UBUNTU2204}.scope"
        ))
    );
    // Another id, an id prefix, or no id: the process's own cgroup, unchanged.
    assert_eq!(container_dir(&v2, &dir, ID_DEBIAN12), dir);
    assert_eq!(container_dir(&v2, &dir, &ID_UBUNTU2204[..12]), dir);
    assert_eq!(container_dir(&v2, &dir, ""), dir);
    // A container left in the v2 root (a runtime using v1 alone) stays there: the caller
    // refuses it rather than watch the whole host.
    assert_eq!(container_dir(&v2, &v2, ID_DEBIAN12), v2);
    let refusal = TargetError::InRootCgroup {
        what: "container web".into(),
        root: v2.clone(),
    }
    .to_string();
    assert!(
        refusal.contains("container web") && refusal.contains("whole host"),
        "{refusal}"
    );
    assert!(names_container(
        &format!("docker-{ID_DEBIAN12}.scope"),
        ID_DEBIAN12
    ));
    assert!(names_container(
        &format!("libpod-{ID_DEBIAN12}.scope"),
        ID_DEBIAN12
    ));
    assert!(names_container(ID_DEBIAN12, ID_DEBIAN12));
    assert!(!names_container(
        &format!("-{ID_DEBIAN12}.scope"),
        ID_DEBIAN12
    ));
    assert!(!names_container(
        &format!("docker-{ID_DEBIAN12}.slice"),
        ID_DEBIAN12
    ));
}

#[test]
fn pod_and_pod_container_directories_for_both_kubelet_drivers() {
    let v2 = p("/sys/fs/cgroup");
    let hybrid = p("/sys/fs/cgroup/unified");
    let of = |root: &Path, text: &str| v2_dir(root, "/", parse_v2_cgroup_line(text).unwrap());
    let slice = format!(
        "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        POD_UID.replace('-', "_")
    );
    // systemd driver (containerd `SystemdCgroup = true`), pure v2.
    let sandbox = of(&v2, CG_V2_SANDBOX).unwrap();
    assert_eq!(pod_dir(&v2, &sandbox, POD_UID), Some(p(&slice)));
    let container = of(&v2, CG_V2_POD).unwrap();
    assert_eq!(
        container_dir(&v2, &container, ID_POD_CONTAINER),
        p(&format!("{slice}/cri-containerd-{ID_POD_CONTAINER}.scope"))
    );
    // cgroupfs driver, hybrid.
    let podfs = format!("/sys/fs/cgroup/unified/kubepods/burstable/pod{POD_UID}");
    let sandbox = of(&hybrid, CG_HYBRID_SANDBOX).unwrap();
    assert_eq!(sandbox, p(&format!("{podfs}/{ID_POD_SANDBOX}")));
    assert_eq!(pod_dir(&hybrid, &sandbox, POD_UID), Some(p(&podfs)));
    let container = of(&hybrid, CG_HYBRID_POD).unwrap();
    assert_eq!(
        container_dir(&hybrid, &container, ID_POD_CONTAINER),
        p(&format!("{podfs}/{ID_POD_CONTAINER}"))
    );
    // A Guaranteed pod has no QoS level in its name.
    assert!(names_pod(
        &format!("kubepods-pod{}.slice", POD_UID.replace('-', "_")),
        POD_UID
    ));
    assert!(!names_pod(&format!("kubepods-pod{POD_UID}.slice"), POD_UID));
    assert!(!names_pod("kubepods-burstable.slice", POD_UID));
    // A runtime's own naming (recap-tests' pods: a cgroup parent of the test's): the parent.
    let own = p("/sys/fs/cgroup/unified/recap-test-pod/abc");
    assert_eq!(
        pod_dir(&hybrid, &own, "uid-x"),
        Some(p("/sys/fs/cgroup/unified/recap-test-pod"))
    );
    // A sandbox right under the root: no pod cgroup.
    assert_eq!(
        pod_dir(&hybrid, &p("/sys/fs/cgroup/unified/abc"), "uid-x"),
        None
    );
}

#[test]
fn the_v1_memory_cpu_and_blkio_directories_or_their_absence() {
    // Hybrid (this machine's mount table), Docker cgroupfs: every controller at `docker/<id>`.
    let fake = FakeRoot::new("v1-hybrid");
    let mountinfo = fake.mountinfo(MI_HYBRID);
    let docker = format!("docker/{ID_HYBRID}");
    let dir = fake.cgroup(&format!("/sys/fs/cgroup/unified/{docker}"));
    for (controller, mount) in [("memory", "memory"), ("cpu", "cpu"), ("blkio", "blkio")] {
        let v1 = fake.cgroup(&format!("/sys/fs/cgroup/{mount}/{docker}"));
        assert_eq!(
            find_v1_dir_in(&mountinfo, &dir, controller),
            Some(v1),
            "{controller}"
        );
    }
    // A cgroup made in v2 alone (recap-tests' cgroups): no v1 directory.
    let plain = fake.cgroup("/sys/fs/cgroup/unified/recap-test-x");
    assert_eq!(find_v1_dir_in(&mountinfo, &plain, "memory"), None);
    // The v2 root is the host, never a v1 directory.
    let root = fake.at("/sys/fs/cgroup/unified");
    fake.cgroup("/sys/fs/cgroup/memory");
    assert_eq!(find_v1_dir_in(&mountinfo, &root, "memory"), None);
    // Outside the cgroup2 mount: none.
    assert_eq!(
        find_v1_dir_in(&mountinfo, &fake.at("/sys/fs/cgroup/memory"), "memory"),
        None
    );

    // Hybrid Ubuntu 20.04, Docker systemd driver: `cpu` is in `cpu,cpuacct`.
    let fake = FakeRoot::new("v1-ubuntu2004");
    let mountinfo = fake.mountinfo(MI_HYBRID_UBUNTU2004);
    let scope = format!("system.slice/docker-{ID_UBUNTU2004}.scope");
    let dir = fake.cgroup(&format!("/sys/fs/cgroup/unified/{scope}"));
    for (controller, mount) in [
        ("memory", "memory"),
        ("cpu", "cpu,cpuacct"),
        ("blkio", "blkio"),
    ] {
        let v1 = fake.cgroup(&format!("/sys/fs/cgroup/{mount}/{scope}"));
        assert_eq!(
            find_v1_dir_in(&mountinfo, &dir, controller),
            Some(v1),
            "{controller}"
        );
    }

    // Pure v2 (Debian 12, Ubuntu 22.04): no v1 hierarchy, whatever directories exist.
    for (name, sample, id) in [
        ("v1-debian12", MI_DEBIAN12, ID_DEBIAN12),
        ("v1-ubuntu2204", MI_UBUNTU2204, ID_UBUNTU2204),
    ] {
        let fake = FakeRoot::new(name);
        let mountinfo = fake.mountinfo(sample);
        let scope = format!("system.slice/docker-{id}.scope");
        let dir = fake.cgroup(&format!("/sys/fs/cgroup/{scope}"));
        for controller in ["memory", "cpu", "blkio"] {
            // Even a directory named like a v1 one is not taken for it.
            fake.cgroup(&format!("/sys/fs/cgroup/{controller}/{scope}"));
            assert_eq!(
                find_v1_dir_in(&mountinfo, &dir, controller),
                None,
                "{name} {controller}"
            );
        }
    }

    // Inside a container on a hybrid host: v1 mounts rooted at the container's cgroup, no
    // cgroup2 mount at all, so nothing to find.
    let fake = FakeRoot::new("v1-in-container");
    let mountinfo = fake.mountinfo(MI_HYBRID_IN_CONTAINER);
    let dir = fake.cgroup("/sys/fs/cgroup/unified/x");
    assert_eq!(find_v1_dir_in(&mountinfo, &dir, "memory"), None);
}

#[test]
fn a_v1_mount_rooted_below_the_hierarchy_root_maps_paths_from_its_root() {
    let fake = FakeRoot::new("v1-rooted");
    // A v2 mount of the whole hierarchy beside v1 mounts of the container's subtree.
    let mountinfo = fake.mountinfo(&format!(
        "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
         44 31 0:41 /docker/{ID_HYBRID} /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n"
    ));
    let dir = fake.cgroup(&format!("/sys/fs/cgroup/unified/docker/{ID_HYBRID}/sub"));
    let v1 = fake.cgroup("/sys/fs/cgroup/memory/sub");
    assert_eq!(find_v1_dir_in(&mountinfo, &dir, "memory"), Some(v1));
    let other = fake.cgroup("/sys/fs/cgroup/unified/docker/other");
    assert_eq!(find_v1_dir_in(&mountinfo, &other, "memory"), None);
}

#[test]
fn a_cgroup_outside_the_mount_or_the_cgroup_namespace_is_refused_with_the_reason() {
    let mount = p("/sys/fs/cgroup");
    // A subtree mount holds what is below its root, relative to it.
    assert_eq!(
        v2_dir(&mount, "/kubepods.slice", "/kubepods.slice/a.slice/b.scope"),
        Some(p("/sys/fs/cgroup/a.slice/b.scope"))
    );
    assert_eq!(v2_dir(&mount, "/kubepods.slice", "/system.slice/x"), None);
    assert_eq!(v2_dir(&mount, "/", "/"), Some(mount.clone()));
    // Seen from recap's own cgroup namespace (a pod with a private one): another pod's
    // process is above its root, and the host's hierarchy mounted there shows `/../..`.
    let other_pod = "/../../kubepods-besteffort-pod1234.slice/cri-containerd-ab.scope";
    assert_eq!(v2_dir(&mount, "/", other_pod), None);
    assert_eq!(v2_dir(&mount, "/../../..", other_pod), None);
    let fake = FakeRoot::new("outside");
    fake.proc_cgroup(77, &format!("0::{other_pod}\n"));
    let err = cgroup_of_pid_in(&fake.at("/proc"), &mount, "/", 77).unwrap_err();
    assert!(
        matches!(err, TargetError::OutsideCgroupMount { pid: 77, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains(other_pod), "{msg}");
    assert!(msg.contains("cgroup namespace"), "{msg}");
    assert!(msg.contains("--cgroupns=host"), "{msg}");
    // A v1-only host: the process has no v2 line.
    fake.proc_cgroup(78, "4:memory:/docker/x\n");
    assert!(matches!(
        cgroup_of_pid_in(&fake.at("/proc"), &mount, "/", 78),
        Err(TargetError::NoCgroup2Mount)
    ));
}

#[test]
fn cgroup_directories_are_checked_against_the_pure_v2_mount() {
    let fake = FakeRoot::new("check");
    let root = fake.at("/sys/fs/cgroup");
    let scope = fake.cgroup(&format!(
        "/sys/fs/cgroup/system.slice/docker-{ID_DEBIAN12}.scope"
    ));
    assert_eq!(check_cgroup_dir(&root, &scope).unwrap(), scope);
    // Through `..` and back in: the canonical directory.
    let roundabout = root
        .join("system.slice/../system.slice")
        .join(scope.file_name().unwrap());
    assert_eq!(check_cgroup_dir(&root, &roundabout).unwrap(), scope);
    assert!(matches!(
        check_cgroup_dir(&root, &scope.join("cgroup.procs")),
        Err(TargetError::NotACgroupDir { .. })
    ));
    let outside = fake.cgroup("/tmp/not-a-cgroup");
    assert!(matches!(
        check_cgroup_dir(&root, &outside),
        Err(TargetError::NotCgroup2 { .. })
    ));
    assert!(matches!(
        check_cgroup_dir(&root, &root.join("system.slice/nope.scope")),
        Err(TargetError::NoSuchPath { .. })
    ));
}
