//! `--capsule snapshot`: the target's processes, open files and TCP sockets (what `ps`,
//! `ls -l /proc/PID/fd` and `ss -tanpe` show), taken when the window opens and when it ends,
//! into `snapshot.json`; what changed goes into the summary. Read by RECap itself from the
//! host's `/proc` (no container: nothing in the target runs), within bounds: 4096 processes,
//! 1024 descriptors each, 65,536 in all.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use serde::Serialize;

const MAX_PROCESSES: usize = 4096;
const MAX_FDS_PER_PROCESS: usize = 1024;
const MAX_FDS: usize = 65_536;
const MAX_CMDLINE: usize = 256;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub cmdline: String,
    pub uid: u32,
    pub threads: u32,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct OpenFile {
    pub pid: u32,
    pub fd: u32,
    /// Where it points (`/var/log/app.log`, `socket:[123]`, `pipe:[456]`).
    pub target: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Socket {
    pub state: &'static str,
    pub local: String,
    pub remote: String,
    pub uid: u32,
    pub inode: u64,
    /// The target's processes holding it (`pid/fd`), as `ss -p` says.
    pub users: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub taken_at: String,
    pub processes: Vec<Process>,
    pub files: Vec<OpenFile>,
    pub sockets: Vec<Socket>,
    /// Whether a bound cut it short.
    pub truncated: bool,
}

/// Takes the snapshot of the processes in `cgroup_dir` (and of the TCP sockets of the network
/// namespace the first of them is in).
pub fn take(cgroup_dir: &Path) -> Snapshot {
    let pids: Vec<u32> = std::fs::read_to_string(cgroup_dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let mut truncated = pids.len() > MAX_PROCESSES;
    let pids = &pids[..pids.len().min(MAX_PROCESSES)];
    let processes: Vec<Process> = pids.iter().filter_map(|&p| process(p)).collect();
    let mut files = Vec::new();
    for &pid in pids {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let mut fds: Vec<u32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        fds.sort();
        truncated |= fds.len() > MAX_FDS_PER_PROCESS;
        for fd in fds.into_iter().take(MAX_FDS_PER_PROCESS) {
            if files.len() >= MAX_FDS {
                truncated = true;
                break;
            }
            // readlink names the file; nothing is opened or followed.
            if let Ok(target) = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) {
                files.push(OpenFile {
                    pid,
                    fd,
                    target: target.to_string_lossy().into_owned(),
                });
            }
        }
    }
    let mut holders: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for f in &files {
        if let Some(inode) = f
            .target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse().ok())
        {
            holders
                .entry(inode)
                .or_default()
                .push(format!("{}/{}", f.pid, f.fd));
        }
    }
    let sockets = pids
        .first()
        .map(|pid| {
            ["tcp", "tcp6"]
                .iter()
                .flat_map(|table| {
                    std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
                        .unwrap_or_default()
                        .lines()
                        .skip(1)
                        .filter_map(parse_tcp_line)
                        .collect::<Vec<_>>()
                })
                .map(|mut s| {
                    s.users = holders.get(&s.inode).cloned().unwrap_or_default();
                    s
                })
                .collect()
        })
        .unwrap_or_default();
    Snapshot {
        taken_at: crate::text::time::rfc3339_utc(std::time::SystemTime::now()),
        processes,
        files,
        sockets,
        truncated,
    }
}

fn process(pid: u32) -> Option<Process> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut cmdline: String = String::from_utf8_lossy(&cmdline)
        .replace('\0', " ")
        .trim()
        .chars()
        .take(MAX_CMDLINE)
        .collect();
    if cmdline.is_empty() {
        cmdline = format!("[{}]", field("Name:"));
    }
    Some(Process {
        pid,
        ppid: field("PPid:").parse().unwrap_or(0),
        comm: field("Name:"),
        cmdline,
        uid: field("Uid:")
            .split_whitespace()
            .next()
            .and_then(|u| u.parse().ok())
            .unwrap_or(0),
        threads: field("Threads:").parse().unwrap_or(0),
    })
}

/// The kernel's TCP states, in its numbering (`include/net/tcp_states.h`), as `ss` names them.
const TCP_STATES: [&str; 13] = [
    "UNKNOWN",
    "ESTAB",
    "SYN-SENT",
    "SYN-RECV",
    "FIN-WAIT-1",
    "FIN-WAIT-2",
    "TIME-WAIT",
    "UNCONN",
    "CLOSE-WAIT",
    "LAST-ACK",
    "LISTEN",
    "CLOSING",
    "NEW-SYN-RECV",
];

/// One line of `/proc/net/tcp` or `tcp6`: `sl local remote st ... uid timeout inode`.
fn parse_tcp_line(line: &str) -> Option<Socket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let state = usize::from_str_radix(f.get(3)?, 16).ok()?;
    Some(Socket {
        state: TCP_STATES.get(state).copied().unwrap_or("UNKNOWN"),
        local: address(f.get(1)?)?,
        remote: address(f.get(2)?)?,
        uid: f.get(7)?.parse().ok()?,
        inode: f.get(9)?.parse().ok()?,
        users: Vec::new(),
    })
}

/// `0100007F:0050` → `127.0.0.1:80`; IPv6 as 4 little-endian words → `[::1]:80`.
fn address(text: &str) -> Option<String> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    match ip.len() {
        8 => {
            let v = u32::from_str_radix(ip, 16).ok()?;
            Some(format!(
                "{}:{port}",
                std::net::Ipv4Addr::from(v.swap_bytes())
            ))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for (i, word) in (0..4).map(|i| &ip[i * 8..i * 8 + 8]).enumerate() {
                let w = u32::from_str_radix(word, 16).ok()?.swap_bytes();
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
            }
            Some(format!("[{}]:{port}", std::net::Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// What changed from `start` to `end`, in one line for the summary.
pub fn changes(start: &Snapshot, end: &Snapshot) -> String {
    fn delta<T: Ord + Clone>(
        a: impl Iterator<Item = T>,
        b: impl Iterator<Item = T>,
    ) -> (usize, usize) {
        let (a, b): (BTreeSet<T>, BTreeSet<T>) = (a.collect(), b.collect());
        (b.difference(&a).count(), a.difference(&b).count())
    }
    let (p_new, p_gone) = delta(
        start.processes.iter().map(|p| (p.pid, p.comm.clone())),
        end.processes.iter().map(|p| (p.pid, p.comm.clone())),
    );
    let (f_new, f_gone) = delta(start.files.iter().cloned(), end.files.iter().cloned());
    let key = |s: &Socket| (s.inode, s.local.clone(), s.remote.clone(), s.state);
    let (s_new, s_gone) = delta(start.sockets.iter().map(key), end.sockets.iter().map(key));
    let listening = |s: &Snapshot| s.sockets.iter().filter(|s| s.state == "LISTEN").count();
    format!(
        "processes {} → {} (+{p_new} −{p_gone}), open files {} → {} (+{f_new} −{f_gone}), TCP sockets {} → {} (+{s_new} −{s_gone}; listening {} → {})",
        start.processes.len(),
        end.processes.len(),
        start.files.len(),
        end.files.len(),
        start.sockets.len(),
        end.sockets.len(),
        listening(start),
        listening(end),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_read_as_ss_shows_them() {
        let v4 = "   0: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0";
        let s = parse_tcp_line(v4).unwrap();
        assert_eq!(
            (s.state, s.local.as_str(), s.remote.as_str()),
            ("LISTEN", "127.0.0.1:80", "0.0.0.0:0")
        );
        assert_eq!((s.uid, s.inode), (0, 12345));
        let v6 = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 777 1";
        let s = parse_tcp_line(v6).unwrap();
        assert_eq!((s.local.as_str(), s.uid), ("[::1]:8080", 1000));
    }

    #[test]
    fn this_process_is_seen_with_its_files_and_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id();
        // A cgroup whose cgroup.procs holds this process: a directory made for the test.
        let dir = std::env::temp_dir().join(format!("recap-snapshot-{me}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), format!("{me}\n")).unwrap();
        let s = take(&dir);
        assert_eq!(s.processes.len(), 1);
        assert_eq!(s.processes[0].pid, me);
        let ours = s
            .sockets
            .iter()
            .find(|k| k.local == format!("127.0.0.1:{port}"))
            .unwrap();
        assert_eq!(ours.state, "LISTEN");
        assert_eq!(ours.users.len(), 1, "{ours:?}");
        assert!(ours.users[0].starts_with(&format!("{me}/")));
        drop(listener);
        let after = take(&dir);
        assert!(!after.sockets.iter().any(|k| k.inode == ours.inode));
        assert!(
            changes(&s, &after).contains("TCP sockets"),
            "{}",
            changes(&s, &after)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
