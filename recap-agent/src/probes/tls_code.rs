//! Which TLS code a process runs, from its memory maps and its executable: a shared OpenSSL
//! (`libssl.so.*`, also BoringSSL builds of it), OpenSSL linked into the executable with its
//! symbols exported (Node.js), Go's `crypto/tls`, and the libraries `http` cannot read yet.
//! And where, in a file that has them, the `SSL_read`/`SSL_write` functions start.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::{BufRead, BufReader, Read},
    os::unix::fs::MetadataExt,
    path::PathBuf,
};

use object::{Object, ObjectSection, ObjectSymbol};
use recap_common::TLS_FUNCTIONS;

/// Libraries found by file name (up to the `.so`) that `http` does not read, and what they are.
const UNREAD_LIBRARIES: &[(&str, &str)] = &[
    ("libgnutls.so", "GnuTLS"),
    ("libnss3.so", "NSS"),
    ("libwolfssl.so", "wolfSSL"),
    ("libmbedtls.so", "Mbed TLS"),
];

/// Bytes of a process's maps read, at most.
const MAX_MAPS_BYTES: u64 = 4 << 20;

/// One piece of TLS code a process has mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCode {
    /// What it is, as the summary says it: `OpenSSL (libssl.so.3)`, `OpenSSL in node`.
    pub what: String,
    /// The file, as the agent opens it (through the process's root or its `exe` link).
    pub path: PathBuf,
    /// `(st_dev, st_ino)` of that file: one symbol lookup per file, whatever the process.
    pub file: (u64, u64),
    /// Why `http` does not read it (None: it can, if its functions are found).
    pub unread: Option<&'static str>,
    /// The library's path as the process sees it (None: the process's executable).
    pub mapped: Option<String>,
}

impl TlsCode {
    /// The same code, reached through another process `pid` that runs the same program: the
    /// file it will map (None if it is not the same file there).
    pub fn in_process(&self, pid: u32) -> Option<TlsCode> {
        let path = match &self.mapped {
            Some(p) => PathBuf::from(format!("/proc/{pid}/root{p}")),
            None => PathBuf::from(format!("/proc/{pid}/exe")),
        };
        let meta = std::fs::metadata(&path).ok()?;
        ((meta.dev(), meta.ino()) == self.file).then(|| TlsCode {
            path,
            ..self.clone()
        })
    }
}

/// What TLS code executables have linked in, by file (`st_dev`, `st_ino`): each read once.
pub type LinkedCache = HashMap<(u64, u64), Linked>;

/// The TLS code of process `pid`; empty if it is gone or has none.
pub fn of_process(pid: u32, linked: &mut LinkedCache) -> Vec<TlsCode> {
    let mut out = Vec::new();
    if let Ok(file) = File::open(format!("/proc/{pid}/maps")) {
        for (path, inode) in mapped_files(BufReader::new(file.take(MAX_MAPS_BYTES))) {
            let name = path.rsplit('/').next().unwrap_or(&path).to_string();
            let (what, unread) = if name.starts_with("libssl.so") {
                (format!("OpenSSL ({name})"), None)
            } else if let Some((_, lib)) = UNREAD_LIBRARIES
                .iter()
                .find(|(prefix, _)| name.starts_with(prefix))
            {
                (format!("{lib} ({name})"), Some("not read by http yet"))
            } else {
                continue;
            };
            // The path is the process's view (its mount namespace): reach it through its root,
            // and only if it is still the file that is mapped.
            let through_root = PathBuf::from(format!("/proc/{pid}/root{path}"));
            let Ok(meta) = std::fs::metadata(&through_root) else {
                continue;
            };
            if meta.ino() != inode {
                continue;
            }
            out.push(TlsCode {
                what,
                path: through_root,
                file: (meta.dev(), meta.ino()),
                unread,
                mapped: Some(path),
            });
        }
    }
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    if let (Ok(meta), Ok(target)) = (std::fs::metadata(&exe), std::fs::read_link(&exe)) {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let code = |what: String, unread| TlsCode {
            what,
            path: exe.clone(),
            file: (meta.dev(), meta.ino()),
            unread,
            mapped: None,
        };
        let file = (meta.dev(), meta.ino());
        if linked.len() > 4096 {
            linked.clear();
        }
        match *linked.entry(file).or_insert_with(|| linked_tls(&exe)) {
            Linked::OpenSsl => out.push(code(format!("OpenSSL in {name}"), None)),
            Linked::Go => out.push(code(
                format!("Go crypto/tls in {name}"),
                Some("Go's crypto/tls is not read by http yet"),
            )),
            Linked::None => {}
        }
    }
    out
}

/// The files a maps listing maps, each once, with the inode the kernel shows.
fn mapped_files(maps: impl BufRead) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for line in maps.lines().map_while(Result::ok) {
        let mut fields = line.split_whitespace();
        let (Some(inode), Some(path)) = (fields.nth(4), fields.next()) else {
            continue;
        };
        let (Ok(inode), true) = (inode.parse::<u64>(), path.starts_with('/')) else {
            continue;
        };
        if inode != 0 && !out.iter().any(|(p, _)| p == path) {
            out.push((path.to_string(), inode));
        }
    }
    out
}

#[derive(Clone, Copy)]
pub enum Linked {
    OpenSsl,
    Go,
    None,
}

/// TLS code linked into an executable: OpenSSL with its functions exported (Node.js), or
/// Go's `crypto/tls`.
fn linked_tls(path: &std::path::Path) -> Linked {
    let Ok(map) = Mapped::open(path) else {
        return Linked::None;
    };
    let Ok(obj) = object::File::parse(map.bytes()) else {
        return Linked::None;
    };
    let exported = |name: &str| {
        obj.dynamic_symbols()
            .any(|s| s.is_definition() && s.name() == Ok(name))
    };
    if exported("SSL_read") && exported("SSL_write") {
        return Linked::OpenSsl;
    }
    if obj.section_by_name(".go.buildinfo").is_some()
        && obj
            .symbols()
            .any(|s| s.name() == Ok("crypto/tls.(*Conn).Read"))
    {
        return Linked::Go;
    }
    Linked::None
}

/// Where each of `TLS_FUNCTIONS` starts in the file (file offsets, as uprobes take them), in
/// that order; an error names what is missing.
pub fn function_offsets(path: &std::path::Path) -> Result<[u64; 4], String> {
    let map = Mapped::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let obj = object::File::parse(map.bytes()).map_err(|e| format!("reading the ELF file: {e}"))?;
    let mut found: BTreeMap<&str, u64> = BTreeMap::new();
    // The exported functions first; the full symbol table (large in a binary such as node)
    // only if they are not all there.
    let exported: Vec<_> = obj.dynamic_symbols().collect();
    let all_exported = TLS_FUNCTIONS.iter().all(|(f, _)| {
        exported
            .iter()
            .any(|s| s.is_definition() && s.name().is_ok_and(|n| n.split('@').next() == Some(f)))
    });
    let symbols: Box<dyn Iterator<Item = object::Symbol<'_, '_>>> = if all_exported {
        Box::new(exported.into_iter())
    } else {
        Box::new(exported.into_iter().chain(obj.symbols()))
    };
    for sym in symbols {
        let Ok(name) = sym.name() else { continue };
        // Versioned names (`SSL_read@@OPENSSL_3.0.0`) are the same function.
        let name = name.split('@').next().unwrap_or(name);
        let Some((wanted, _)) = TLS_FUNCTIONS.iter().find(|(f, _)| *f == name) else {
            continue;
        };
        if found.contains_key(wanted) || !sym.is_definition() {
            continue;
        }
        let Some(section) = sym
            .section_index()
            .and_then(|i| obj.section_by_index(i).ok())
        else {
            continue;
        };
        let Some((file_start, _)) = section.file_range() else {
            continue;
        };
        found.insert(wanted, sym.address() - section.address() + file_start);
    }
    let mut out = [0u64; 4];
    for (i, (name, _)) in TLS_FUNCTIONS.iter().enumerate() {
        out[i] = *found
            .get(name)
            .ok_or_else(|| format!("{name} not found in its symbols (stripped?)"))?;
    }
    Ok(out)
}

/// A file mapped read-only into memory (private: a later change to the file does not show).
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    fn open(path: &std::path::Path) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        let file = File::open(path)?;
        let len = file.metadata()?.len() as usize;
        if len == 0 {
            return Err(std::io::Error::other("empty file"));
        }
        // SAFETY: a fresh private read-only mapping of an open file; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapped { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes at `ptr` for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `open`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_files_are_listed_once_with_their_inode() {
        let maps = "\
55d0c0a00000-55d0c0a2d000 r--p 00000000 fe:00 1234 /usr/sbin/nginx
7f1e2c000000-7f1e2c05c000 r--p 00000000 fe:00 2345 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1e2c05c000-7f1e2c0b8000 r-xp 0005c000 fe:00 2345 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1e2e000000-7f1e2e001000 rw-p 00000000 00:00 0
7ffd1e000000-7ffd1e021000 rw-p 00000000 00:00 0 [stack]
";
        assert_eq!(
            mapped_files(maps.as_bytes()),
            [
                ("/usr/sbin/nginx".to_string(), 1234),
                ("/usr/lib/x86_64-linux-gnu/libssl.so.3".to_string(), 2345)
            ]
        );
    }

    #[test]
    fn this_machines_libssl_has_the_functions() {
        // The test machines have Debian's OpenSSL 3 (curl, which setup installs, uses it).
        let lib = std::path::Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        let offsets = function_offsets(lib).unwrap();
        assert!(offsets.iter().all(|&o| o > 0));
        let mut distinct = offsets.to_vec();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "{offsets:?}");
    }
}
