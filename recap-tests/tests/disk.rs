//! `disk` against ground truth: a container writes and reads a known amount with `O_DIRECT`
//! (busybox dd, into a volume on the host's disk): the window's bytes equal it, on the
//! volume's device, with a latency per bio; the same I/O made outside the container: 0.

use std::{os::unix::fs::MetadataExt, process::Command};

use recap_tests::{docker::AppContainer, *};

const BLOCK: u64 = 64 << 10;
const BLOCKS: u64 = 64;

fn dd(prefix: &[&str], args: &[&str]) {
    let mut cmd = Command::new(prefix[0]);
    cmd.args(&prefix[1..]).arg("dd").args(args);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "dd {args:?}: {out:?}");
}

#[test]
fn direct_io_of_a_container_is_counted_exactly_and_outside_is_0() {
    if !require_root() {
        return;
    }
    let volume = std::env::temp_dir().join(format!("recap-disk-{}", std::process::id()));
    std::fs::create_dir_all(&volume).unwrap();
    let mount = format!("{}:/data", volume.display());
    let app = AppContainer::run_with("recap-disk", &[], &["-v", &mount]);
    let inside = ["docker", "exec", &app.id, "/bin/busybox"];
    let bs = format!("bs={BLOCK}");
    let count = format!("count={BLOCKS}");
    let write = [
        "if=/dev/zero",
        "of=/data/f",
        bs.as_str(),
        count.as_str(),
        "oflag=direct",
        "conv=notrunc",
    ];
    let read = ["if=/data/f", "of=/dev/null", bs.as_str(), "iflag=direct"];
    // Before the window: the same two commands once, so that the window's I/O is dd's own.
    // The file's blocks are then allocated and what dd and runc read to start is cached: in
    // the window dd overwrites in place. (Two CI runs counted one 4 KiB read more, charged to
    // the container as the kernel charges it: a binary's page, then, after busybox was warmed,
    // most likely the block bitmap that allocating a new file's blocks can read.)
    dd(&inside, &write);
    dd(&inside, &read);
    let _ = Command::new("sync").status();
    let run = RecapRun::armed_window(&["--container", &app.name], "disk");
    dd(&inside, &write);
    dd(&inside, &read);
    // The same outside the container, on the same disk.
    let outside_file = volume.join("g");
    let of = format!("of={}", outside_file.display());
    let iff = format!("if={}", outside_file.display());
    dd(
        &["busybox"],
        &["if=/dev/zero", &of, &bs, &count, "oflag=direct"],
    );
    dd(&["busybox"], &[&iff, "of=/dev/null", &bs, "iflag=direct"]);
    let (s, err) = run.interrupt();
    let disk = &s["disk"];
    assert_eq!(
        s["families"]["disk"]["status"], "ok",
        "{:#}\n{err}",
        s["families"]
    );
    assert_eq!(disk["write_bytes"], BLOCK * BLOCKS, "{disk:#}\n{err}");
    assert_eq!(disk["read_bytes"], BLOCK * BLOCKS, "{disk:#}");
    let (writes, reads) = (
        disk["write_operations"].as_u64().unwrap(),
        disk["read_operations"].as_u64().unwrap(),
    );
    assert!(writes >= BLOCKS && reads >= BLOCKS, "{disk:#}");
    assert_eq!(disk["write_latency"]["count"], writes, "{disk:#}");
    assert_eq!(disk["read_latency"]["count"], reads, "{disk:#}");
    // All of it on the volume's device.
    let dev = std::fs::metadata(&volume).unwrap().dev();
    let device = format!("{}:{}", libc::major(dev), libc::minor(dev));
    for d in disk["devices"].as_array().unwrap() {
        assert_eq!(d["device"], device.as_str(), "{disk:#}");
    }
    drop(app);
    let _ = std::fs::remove_dir_all(&volume);
    assert_no_residue();
}

/// A plain cgroup v2 directory on this hybrid host has no block I/O cgroup of its own: the
/// family says so and the window runs on.
#[test]
fn a_target_without_a_blkio_cgroup_is_said_unavailable() {
    if !require_root() {
        return;
    }
    let cg = TestCgroup::new("disk-none");
    if cg.dir.join("io.stat").exists() {
        return; // a host with the io controller on cgroup v2
    }
    let run = RecapRun::armed_window(&["--cgroup", cg.dir.to_str().unwrap()], "disk,proc");
    let (s, err) = run.interrupt();
    assert_eq!(
        s["families"]["disk"]["status"], "unavailable",
        "{:#}\n{err}",
        s["families"]
    );
    assert!(
        s["families"]["disk"]["reason"]
            .as_str()
            .unwrap()
            .contains("no block I/O cgroup"),
        "{:#}",
        s["families"]
    );
    assert_eq!(s["families"]["proc"]["status"], "ok");
    assert_no_residue();
}
