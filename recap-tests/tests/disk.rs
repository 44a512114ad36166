//! `disk` against ground truth: a container writes and reads a known amount with `O_DIRECT`
//! (busybox dd, into a volume on the host's disk): the window's bytes equal it, on the
//! volume's device, with a latency per bio; the same I/O made outside the container: 0.

use std::{
    io::Write,
    os::unix::fs::MetadataExt,
    process::Command,
    time::{Duration, Instant},
};

use recap_tests::{docker::AppContainer, *};

const BLOCK: u64 = 64 << 10;
const BLOCKS: u64 = 64;

fn dd(prefix: &[&str], args: &[&str]) {
    let mut cmd = Command::new(prefix[0]);
    cmd.args(&prefix[1..]).arg("dd").args(args);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "dd {args:?}: {out:?}");
}

/// The container's init: a shell that waits on the fifo `/data/go` (opened read-write, so
/// waiting makes no I/O), then prints its own `/proc/$$/io`, runs dd's write and read, prints it
/// again and waits for good. A reaped child's I/O is added to its parent's, and `read`/`echo`
/// are the shell's builtins: the difference is what the shell and its dd's submitted, the
/// kernel's own count. Nothing is exec'd into the container in the window (a `docker exec`
/// there would add runc's own page-ins, charged to the container before any shell of ours
/// runs: one CI run counted 384 KiB of those).
const SCRIPT: &str = r#"
exec 3<>/data/go
read x <&3
io() { while read k v; do echo "io $1 $k $v"; done < /proc/$$/io; }
io before
/bin/busybox dd if=/dev/zero of=/data/f bs=BS count=COUNT oflag=direct conv=notrunc 2>/dev/null
/bin/busybox dd if=/data/f of=/dev/null bs=BS iflag=direct 2>/dev/null
io after
read x <&3
"#;

/// A field of `/proc/$$/io` as [`SCRIPT`] printed it at `when` (`before`, `after`).
fn printed_io(logs: &str, when: &str, key: &str) -> Option<u64> {
    let prefix = format!("io {when} {key}: ");
    logs.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.trim().parse().unwrap())
}

#[test]
fn direct_io_of_a_container_is_counted_exactly_and_outside_is_0() {
    if !require_root() {
        return;
    }
    let volume = std::env::temp_dir().join(format!("recap-disk-{}", std::process::id()));
    std::fs::create_dir_all(&volume).unwrap();
    let fifo = volume.join("go");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo touches nothing else.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
    let mount = format!("{}:/data", volume.display());
    let script = SCRIPT
        .replace("BS", &BLOCK.to_string())
        .replace("COUNT", &BLOCKS.to_string());
    let app = AppContainer::run_image(
        "recap-disk",
        &[],
        &["-v", &mount],
        docker::APP_IMAGE,
        &["/bin/busybox", "sh", "-c", &script],
    );
    let inside = ["docker", "exec", &app.id, "/bin/busybox"];
    let bs = format!("bs={BLOCK}");
    let count = format!("count={BLOCKS}");
    // Before the window: dd's write and read once, so that the file's blocks are allocated
    // (in the window dd overwrites in place) and busybox's pages are cached.
    dd(
        &inside,
        &[
            "if=/dev/zero",
            "of=/data/f",
            &bs,
            &count,
            "oflag=direct",
            "conv=notrunc",
        ],
    );
    dd(
        &inside,
        &["if=/data/f", "of=/dev/null", &bs, "iflag=direct"],
    );
    let _ = Command::new("sync").status();
    let run = RecapRun::armed_window(&["--container", &app.name], "disk");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .and_then(|mut f| f.write_all(b"go\n"))
        .expect("the container's fifo");
    let deadline = Instant::now() + Duration::from_secs(60);
    let printed = loop {
        let (_, printed) = recap_harness::docker::cli(&["logs", &app.id]);
        if printed_io(&printed, "after", "cancelled_write_bytes").is_some() {
            break printed;
        }
        assert!(Instant::now() < deadline, "the container's dd's: {printed}");
        std::thread::sleep(Duration::from_millis(50));
    };
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
    let delta = |key| {
        printed_io(&printed, "after", key).unwrap() - printed_io(&printed, "before", key).unwrap()
    };
    // The writes: dd's O_DIRECT blocks, exactly (nothing else in the container writes). Not
    // `write_bytes`: it also counts pages dirtied (an inode's buffer when the caches were cold),
    // whose write-back is the journal thread's, charged elsewhere.
    assert_eq!(disk["write_bytes"], BLOCK * BLOCKS, "{disk:#}\n{err}");
    // The reads: dd's 4 MiB (O_DIRECT reads miss the cache), and whatever of busybox's pages
    // the shell and dd had to read again, as the kernel counted it for them.
    let read = delta("read_bytes");
    assert!(read >= BLOCK * BLOCKS, "{printed}");
    assert_eq!(disk["read_bytes"], read, "{disk:#}\n{printed}");
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
