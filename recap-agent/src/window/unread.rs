//! What a window's request families cannot read, said instead of left as a silent 0: `http`
//! reads plaintext HTTP/1.x at the socket, so the requests of a process that speaks TLS are
//! not counted. The TLS libraries the target's processes have mapped (from `/proc/PID/maps`)
//! and Node.js (OpenSSL linked in) are named in the window's warnings, with their processes.
//! Statically linked TLS other than Node's (Go's `crypto/tls`, rustls) is not detected.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read},
    path::Path,
};

use crate::targets::cgroup;

/// Library file names (up to the `.so`) and what they are.
const TLS_LIBRARIES: &[(&str, &str)] = &[
    ("libssl.so", "OpenSSL"),
    ("libgnutls.so", "GnuTLS"),
    ("libnss3.so", "NSS"),
    ("libwolfssl.so", "wolfSSL"),
    ("libmbedtls.so", "Mbed TLS"),
];

/// Processes looked at, and bytes of each one's maps read, at most.
const MAX_PROCESSES: usize = 1024;
const MAX_MAPS_BYTES: u64 = 4 << 20;

/// The TLS code each process of the target's cgroup (and below, if `subtree`) runs: what it is
/// (`OpenSSL (libssl.so.3)`) → the PIDs.
pub fn tls_in_use(cgroup_dir: &Path, subtree: bool) -> BTreeMap<String, Vec<u32>> {
    let pids = if subtree {
        cgroup::subtree_procs(cgroup_dir)
    } else {
        cgroup::procs(cgroup_dir)
    }
    .unwrap_or_default();
    let mut found: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for pid in pids.into_iter().take(MAX_PROCESSES) {
        for what in tls_of_process(pid) {
            found.entry(what).or_default().push(pid);
        }
    }
    for pids in found.values_mut() {
        pids.sort_unstable();
    }
    found
}

fn tls_of_process(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(file) = std::fs::File::open(format!("/proc/{pid}/maps")) {
        out = tls_in_maps(BufReader::new(file.take(MAX_MAPS_BYTES)));
    }
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    if exe
        .file_name()
        .is_some_and(|n| n == "node" || n == "nodejs")
    {
        out.push("Node.js's built-in OpenSSL".into());
    }
    out
}

/// The TLS libraries in a maps listing, each once.
fn tls_in_maps(maps: impl BufRead) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in maps.lines().map_while(Result::ok) {
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let name = path.rsplit('/').next().unwrap_or(path);
        if let Some((_, what)) = TLS_LIBRARIES.iter().find(|(lib, _)| name.starts_with(lib)) {
            let entry = format!("{what} ({name})");
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
    }
    out
}

/// The warning for what was found, if anything.
pub fn tls_warning(found: &BTreeMap<String, Vec<u32>>) -> Option<String> {
    if found.is_empty() {
        return None;
    }
    let list: Vec<String> = found
        .iter()
        .map(|(what, pids)| {
            let shown: Vec<String> = pids.iter().take(8).map(u32::to_string).collect();
            let more = if pids.len() > 8 {
                format!(" and {} more", pids.len() - 8)
            } else {
                String::new()
            };
            format!("{what} in PID {}{more}", shown.join(", "))
        })
        .collect();
    Some(format!(
        "http: the target's processes use TLS ({}): http reads plaintext HTTP/1.x only, so requests over TLS (HTTPS, gRPC over TLS) are not counted",
        list.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_libraries_are_found_in_maps() {
        let maps = "\
55d0c0a00000-55d0c0a2d000 r--p 00000000 fe:00 1234 /usr/sbin/nginx
7f1e2c000000-7f1e2c05c000 r--p 00000000 fe:00 2345 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1e2c05c000-7f1e2c0b8000 r-xp 0005c000 fe:00 2345 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1e2d000000-7f1e2d100000 r--p 00000000 fe:00 3456 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f1e2e000000-7f1e2e001000 rw-p 00000000 00:00 0
7ffd1e000000-7ffd1e021000 rw-p 00000000 00:00 0 [stack]
";
        assert_eq!(tls_in_maps(maps.as_bytes()), ["OpenSSL (libssl.so.3)"]);
        assert!(tls_in_maps("7f-7f r--p 0 fe:00 1 /usr/lib/libc.so.6\n".as_bytes()).is_empty());
        let found = BTreeMap::from([("OpenSSL (libssl.so.3)".to_string(), vec![12, 13])]);
        let w = tls_warning(&found).unwrap();
        assert!(w.contains("OpenSSL (libssl.so.3) in PID 12, 13"), "{w}");
        assert!(tls_warning(&BTreeMap::new()).is_none());
    }
}
