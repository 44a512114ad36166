//! Which TLS code a process runs, from its memory maps and its executable: a shared OpenSSL
//! (`libssl.so.*`, also BoringSSL builds of it), OpenSSL linked into the executable with its
//! symbols exported (Node.js), Go's `crypto/tls` (`go_tls`), and the libraries `http` cannot
//! read yet. And where, in a file that has them, the probes go (`attach_points`).
//!
//! The files belong to the target: they are reached through the kernel's own links to what
//! the process maps (`/proc/PID/map_files/…`, `/proc/PID/exe`); a library a new process has
//! not mapped yet, by its path in the process's root, which the target could redirect with a
//! symlink: so every file is first opened as a bare reference (`O_PATH`), checked to be the
//! regular file the kernel named (device and inode) and of a bounded size, then read through
//! that reference with `pread` (a file the target truncates meanwhile gives a parse error,
//! not a signal), and probed through it.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::{BufRead, BufReader, Read},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::PathBuf,
};

use object::{Object, ObjectSection, ObjectSymbol};
use recap_common::{programs, TLS_EX, TLS_FREE_FUNCTION, TLS_FUNCTIONS, TLS_WRITE};

use super::{go_tls, probe_points};

/// Libraries found by file name (up to the `.so`) that `http` does not read, and what they are.
const UNREAD_LIBRARIES: &[(&str, &str)] = &[
    ("libgnutls.so", "GnuTLS"),
    ("libnss3.so", "NSS"),
    ("libwolfssl.so", "wolfSSL"),
    ("libmbedtls.so", "Mbed TLS"),
];

/// Bytes of a process's maps read, at most.
const MAX_MAPS_BYTES: u64 = 4 << 20;
/// Largest file whose symbols are read (Node.js's executable is ~100 MB).
const MAX_ELF_BYTES: u64 = 512 << 20;
/// Symbols looked at in one file, at most.
const MAX_SYMBOLS: usize = 2_000_000;

/// One piece of TLS code a process has mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCode {
    /// What it is, as the summary says it: `OpenSSL (libssl.so.3)`, `OpenSSL in node`.
    pub what: String,
    /// The kernel's link to the file (`/proc/PID/map_files/…`, `/proc/PID/exe`), or, for a
    /// library a new process has not mapped yet, its path through the process's root (then
    /// only the file with `file`'s device and inode is taken).
    pub path: PathBuf,
    /// `(st_dev, st_ino)` of that file: one symbol lookup per file, whatever the process.
    pub file: (u64, u64),
    /// Why `http` does not read it (None: it can, if its functions are found).
    pub unread: Option<&'static str>,
    /// Go's `crypto/tls` (else OpenSSL's API).
    pub go: bool,
    /// The library's path as the process sees it (None: the process's executable).
    pub mapped: Option<String>,
}

impl TlsCode {
    /// The same code, reached through another process `pid` that runs the same program (a
    /// new process whose loader has not mapped the library yet).
    pub fn in_process(&self, pid: u32) -> TlsCode {
        let path = match &self.mapped {
            Some(p) => PathBuf::from(format!("/proc/{pid}/root{p}")),
            None => PathBuf::from(format!("/proc/{pid}/exe")),
        };
        TlsCode {
            path,
            ..self.clone()
        }
    }

    /// The file, opened and checked to be the one found (see the module's comment).
    pub fn open(&self) -> std::io::Result<File> {
        open_checked(&self.path, Some(self.file))
    }
}

/// Opens a target's file: first as a bare reference (`O_PATH`: opening a device or a FIFO a
/// symlink points at has no effect and never blocks), checked to be a regular file of a
/// bounded size, and the file `expected` names if given; only then for reading.
fn open_checked(path: &std::path::Path, expected: Option<(u64, u64)>) -> std::io::Result<File> {
    use std::os::fd::AsRawFd;
    let reference = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)?;
    let meta = reference.metadata()?;
    let refuse = |why: &str| Err(std::io::Error::other(format!("{}: {why}", path.display())));
    if !meta.is_file() {
        return refuse("not a regular file");
    }
    if meta.len() > MAX_ELF_BYTES {
        return refuse("larger than the 512 MiB whose symbols are read");
    }
    if expected.is_some_and(|e| e != (meta.dev(), meta.ino())) {
        return refuse("not the file the process maps");
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", reference.as_raw_fd()))
}

/// What TLS code executables have linked in, by file (`st_dev`, `st_ino`): each read once.
pub type LinkedCache = HashMap<(u64, u64), Linked>;

/// The TLS code of process `pid`; empty if it is gone or has none.
pub fn of_process(pid: u32, linked: &mut LinkedCache) -> Vec<TlsCode> {
    let mut out = Vec::new();
    if let Ok(file) = File::open(format!("/proc/{pid}/maps")) {
        for m in mapped_files(BufReader::new(file.take(MAX_MAPS_BYTES))) {
            let name = m.path.rsplit('/').next().unwrap_or(&m.path).to_string();
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
            // The kernel's link to the mapped file itself: no path of the target's to follow.
            let link = PathBuf::from(format!("/proc/{pid}/map_files/{}", m.range));
            let Ok(meta) = std::fs::metadata(&link) else {
                continue;
            };
            if !meta.is_file() || meta.ino() != m.inode {
                continue;
            }
            out.push(TlsCode {
                what,
                path: link,
                file: (meta.dev(), meta.ino()),
                unread,
                go: false,
                mapped: Some(m.path),
            });
        }
    }
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    if let (Ok(meta), Ok(target)) = (std::fs::metadata(&exe), std::fs::read_link(&exe)) {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = (meta.dev(), meta.ino());
        let code = |what: String, unread, go| TlsCode {
            what,
            path: exe.clone(),
            file,
            unread,
            go,
            mapped: None,
        };
        if linked.len() > 4096 {
            linked.clear();
        }
        match *linked.entry(file).or_insert_with(|| linked_tls(&exe, file)) {
            Linked::OpenSsl => out.push(code(format!("OpenSSL in {name}"), None, false)),
            Linked::Go(unread) => out.push(code(format!("Go crypto/tls in {name}"), unread, true)),
            Linked::None => {}
        }
    }
    out
}

/// A file mapped by a process, as its maps listing shows it.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    /// `start-end`, the name of its link in `/proc/PID/map_files`.
    range: String,
    inode: u64,
    path: String,
}

/// The files a maps listing maps, each once (its first mapping), with the inode the kernel
/// shows. A path may hold spaces; a file deleted since it was mapped is left out.
fn mapped_files(maps: impl BufRead) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in maps.lines().map_while(Result::ok) {
        // range perms offset dev inode path: the path is the rest of the line.
        let mut fields = line.splitn(6, ' ');
        let (Some(range), Some(inode)) = (fields.next(), fields.nth(3)) else {
            continue;
        };
        let path = fields.next().unwrap_or("").trim_start();
        let Ok(inode) = inode.parse::<u64>() else {
            continue;
        };
        if inode == 0 || !path.starts_with('/') || path.ends_with(" (deleted)") {
            continue;
        }
        if !out.iter().any(|m| m.path == path) {
            out.push(Mapping {
                range: range.to_string(),
                inode,
                path: path.to_string(),
            });
        }
    }
    out
}

#[derive(Clone, Copy)]
pub enum Linked {
    OpenSsl,
    /// With why it cannot be read, if it cannot (`go_tls::unsupported`).
    Go(Option<&'static str>),
    None,
}

/// TLS code linked into an executable: OpenSSL with its functions exported (Node.js), or
/// Go's `crypto/tls`.
fn linked_tls(path: &std::path::Path, file: (u64, u64)) -> Linked {
    let Ok(f) = open_checked(path, Some(file)) else {
        return Linked::None;
    };
    let cache = object::ReadCache::new(f);
    let Ok(obj) = object::File::parse(&cache) else {
        return Linked::None;
    };
    let exported = |name: &str| {
        obj.dynamic_symbols()
            .take(MAX_SYMBOLS)
            .any(|s| s.is_definition() && s.name() == Ok(name))
    };
    if exported("SSL_read") && exported("SSL_write") {
        return Linked::OpenSsl;
    }
    if obj.section_by_name(".go.buildinfo").is_some()
        && obj
            .symbols()
            .take(MAX_SYMBOLS)
            .any(|s| s.name() == Ok("crypto/tls.(*Conn).Read"))
    {
        return Linked::Go(go_tls::unsupported(&obj));
    }
    Linked::None
}

/// One uprobe: its program, its attach cookie, where in the file (as uprobes take it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    pub program: &'static str,
    pub cookie: Option<u64>,
    pub offset: u64,
}

/// The probes that read `code`: for OpenSSL, the entry and return of `TLS_FUNCTIONS` (or of
/// the internal functions they share, `tls_points`) and the entry of `SSL_free`; for Go,
/// `go_tls::points`. An error says why there are none.
pub fn attach_points(code: &TlsCode) -> Result<Vec<Point>, String> {
    let file = code.open().map_err(|e| format!("opening it: {e}"))?;
    let cache = object::ReadCache::new(file);
    let obj = object::File::parse(&cache).map_err(|e| format!("reading the ELF file: {e}"))?;
    if code.go {
        return go_tls::points(&obj);
    }
    let functions = functions(&obj)?;
    let mut points = Vec::new();
    for (offset, function) in tls_points(&obj, &functions) {
        points.push(Point {
            program: programs::TLS_CALL,
            cookie: None,
            offset,
        });
        points.push(Point {
            program: programs::TLS_RETURN,
            cookie: Some(function),
            offset,
        });
    }
    if let Some(free) = &functions.free {
        points.push(Point {
            program: programs::TLS_FREE,
            cookie: None,
            offset: free.cheapest_entry(&obj),
        });
    }
    Ok(points)
}

/// Where the call and return probes of a read and a write go (file offsets) and the return
/// probe's cookie (`TLS_FUNCTIONS`' bits). Each API function at the cheapest point that keeps
/// the meaning of its entry (`probe_points::entry_point`); but where `SSL_read` or
/// `SSL_write` has no cheap point and its `_ex` sibling is a thin wrapper of an internal
/// function that has one and that the plain function calls too (OpenSSL 1.1.1 and 3:
/// `ssl_read_internal(s, buf, num, &readbytes)`), that function alone, as an `_ex` one:
/// one probe for both, each call a trap and not three.
fn tls_points<'a, R: object::ReadRef<'a>>(
    obj: &object::File<'a, R>,
    functions: &Functions,
) -> Vec<(u64, u64)> {
    let mut points = Vec::new();
    let [read, read_ex, write, write_ex] = &functions.calls;
    for (plain, ex, write_bit) in [(read, read_ex, 0), (write, write_ex, TLS_WRITE)] {
        let shared = plain
            .as_ref()
            .zip(ex.as_ref())
            .filter(|(plain, ex)| plain.entry_point(obj).is_none() || ex.entry_point(obj).is_none())
            .and_then(|(plain, ex)| {
                let callee = probe_points::wrapped_callee(ex.code(obj)?, ex.address)?;
                let inside = Function::at(obj, callee)?;
                let at = inside.entry_point(obj)?;
                probe_points::calls(plain.code(obj)?, plain.address, callee).then_some(at)
            });
        if let Some(at) = shared {
            points.push((at, write_bit | TLS_EX));
            continue;
        }
        for (f, bits) in [(plain, write_bit), (ex, write_bit | TLS_EX)] {
            if let Some(f) = f {
                points.push((f.cheapest_entry(obj), bits));
            }
        }
    }
    points
}

/// A function in an ELF file: its address, its size (0 if its symbol does not say) and where
/// it starts in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub address: u64,
    pub size: u64,
    pub offset: u64,
}

/// A function longer than this is not decoded (`SSL_read`'s are ~100 bytes).
const MAX_DECODED_BYTES: u64 = 4096;
/// Bytes decoded at a function's start when its size is not known.
const PROLOGUE_BYTES: u64 = 64;

impl Function {
    /// The function at `address` (a call's target), with no size.
    fn at<'a, R: object::ReadRef<'a>>(obj: &object::File<'a, R>, address: u64) -> Option<Self> {
        let section = section_at(obj, address)?;
        let (file_start, _) = section.file_range()?;
        Some(Function {
            address,
            size: 0,
            offset: file_start.checked_add(address - section.address())?,
        })
    }

    /// Its machine code (the first `PROLOGUE_BYTES` if its size is not known), or None if
    /// the file does not hold it or it is too long to decode.
    fn code<'a, 'b, R: object::ReadRef<'a>>(
        &self,
        obj: &'b object::File<'a, R>,
    ) -> Option<&'a [u8]> {
        if self.size > MAX_DECODED_BYTES {
            return None;
        }
        let len = if self.size == 0 {
            PROLOGUE_BYTES
        } else {
            self.size
        };
        let section = section_at(obj, self.address)?;
        let available = section.address() + section.size() - self.address;
        section
            .data_range(self.address, len.min(available))
            .ok()
            .flatten()
    }

    /// The file offset of `probe_points::entry_point`, if it has one.
    fn entry_point<'a, R: object::ReadRef<'a>>(&self, obj: &object::File<'a, R>) -> Option<u64> {
        let prologue = Function {
            size: self.size.min(PROLOGUE_BYTES),
            ..self.clone()
        };
        let at = probe_points::entry_point(prologue.code(obj)?, self.address)?;
        Some(self.offset + (at - self.address))
    }

    /// The file offset of its entry point, else of its first instruction.
    fn cheapest_entry<'a, R: object::ReadRef<'a>>(&self, obj: &object::File<'a, R>) -> u64 {
        self.entry_point(obj).unwrap_or(self.offset)
    }
}

/// The section of an ELF file that holds `address`.
fn section_at<'a, 'b, R: object::ReadRef<'a>>(
    obj: &'b object::File<'a, R>,
    address: u64,
) -> Option<object::Section<'a, 'b, R>> {
    obj.sections()
        .find(|s| (s.address()..s.address() + s.size()).contains(&address))
}

/// The functions `http` probes in a file that has them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Functions {
    /// `TLS_FUNCTIONS`, in that order; the `_ex` ones are absent before OpenSSL 1.1.1.
    pub calls: [Option<Function>; 4],
    /// `SSL_free`.
    pub free: Option<Function>,
}

/// The `Functions` of an ELF file; an error if `SSL_read` or `SSL_write` is missing.
pub fn functions<'a, R: object::ReadRef<'a>>(
    obj: &object::File<'a, R>,
) -> Result<Functions, String> {
    let wanted =
        |name: &str| name == TLS_FREE_FUNCTION || TLS_FUNCTIONS.iter().any(|(f, _)| *f == name);
    let mut found: BTreeMap<String, Function> = BTreeMap::new();
    let look = |found: &mut BTreeMap<String, Function>, sym: object::Symbol<'a, '_, R>| {
        let Ok(name) = sym.name() else { return };
        // Versioned names (`SSL_read@@OPENSSL_3.0.0`) are the same function.
        let name = name.split('@').next().unwrap_or(name);
        if !wanted(name) || found.contains_key(name) || !sym.is_definition() {
            return;
        }
        let Some(section) = sym
            .section_index()
            .and_then(|i| obj.section_by_index(i).ok())
        else {
            return;
        };
        let (Some((file_start, _)), Some(within)) = (
            section.file_range(),
            sym.address().checked_sub(section.address()),
        ) else {
            return;
        };
        if let Some(offset) = file_start.checked_add(within) {
            let function = Function {
                address: sym.address(),
                size: sym.size(),
                offset,
            };
            found.insert(name.to_string(), function);
        }
    };
    // The exported functions first; the full symbol table (large in a binary such as node)
    // only if they are not all there.
    for sym in obj.dynamic_symbols().take(MAX_SYMBOLS) {
        look(&mut found, sym);
    }
    if found.len() < TLS_FUNCTIONS.len() + 1 {
        for sym in obj.symbols().take(MAX_SYMBOLS) {
            look(&mut found, sym);
        }
    }
    let calls = TLS_FUNCTIONS.map(|(name, _)| found.get(name).cloned());
    for (i, name) in [(0, "SSL_read"), (2, "SSL_write")] {
        if calls[i].is_none() {
            return Err(format!("{name} not found in its symbols (stripped?)"));
        }
    }
    Ok(Functions {
        calls,
        free: found.get(TLS_FREE_FUNCTION).cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_files_are_listed_once_with_their_inode_and_range() {
        let maps = "\
55d0c0a00000-55d0c0a2d000 r--p 00000000 fe:00 1234                       /usr/sbin/nginx
7f1e2c000000-7f1e2c05c000 r--p 00000000 fe:00 2345 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1e2c05c000-7f1e2c0b8000 r-xp 0005c000 fe:00 2345 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1e2d000000-7f1e2d001000 r--p 00000000 fe:00 3456 /opt/my app/libssl.so.3
7f1e2d100000-7f1e2d101000 r--p 00000000 fe:00 4567 /tmp/libssl.so.3 (deleted)
7f1e2e000000-7f1e2e001000 rw-p 00000000 00:00 0
7ffd1e000000-7ffd1e021000 rw-p 00000000 00:00 0                          [stack]
";
        let m = mapped_files(maps.as_bytes());
        let got: Vec<(&str, u64, &str)> = m
            .iter()
            .map(|m| (m.range.as_str(), m.inode, m.path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("55d0c0a00000-55d0c0a2d000", 1234, "/usr/sbin/nginx"),
                (
                    "7f1e2c000000-7f1e2c05c000",
                    2345,
                    "/usr/lib/x86_64-linux-gnu/libssl.so.3"
                ),
                ("7f1e2d000000-7f1e2d001000", 3456, "/opt/my app/libssl.so.3"),
            ]
        );
    }

    #[test]
    fn this_machines_libssl_has_the_functions() {
        // The test machines have Debian's OpenSSL 3 (curl, which setup installs, uses it).
        let path = PathBuf::from("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        let meta = std::fs::metadata(&path).unwrap();
        let code = TlsCode {
            what: "OpenSSL".into(),
            path,
            file: (meta.dev(), meta.ino()),
            unread: None,
            go: false,
            mapped: None,
        };
        let file = std::fs::read(&code.path).unwrap();
        let cache = object::ReadCache::new(code.open().unwrap());
        let obj = object::File::parse(&cache).unwrap();
        let api = functions(&obj).unwrap();
        let api_offsets: Vec<u64> = api
            .calls
            .iter()
            .map(|f| f.as_ref().unwrap().offset)
            .collect();
        let mut distinct = api_offsets.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "{api:?}");
        // OpenSSL 3's SSL_read and SSL_write start with `sub $0x18, %rsp` (single-stepped):
        // each pair is probed once, at the internal function both call, which starts with a
        // `push` (REX.B 0x41 and 0x50 + register, or 0x50 + register).
        let points = attach_points(&code).unwrap();
        let calls: Vec<&Point> = points
            .iter()
            .filter(|p| p.program == programs::TLS_CALL)
            .collect();
        assert_eq!(calls.len(), 2, "{points:?}");
        for p in &calls {
            assert!(!api_offsets.contains(&p.offset), "{points:?}");
            let at = &file[p.offset as usize..];
            assert!(
                matches!(at, [0x50..=0x57, ..] | [0x41, 0x50..=0x57, ..]),
                "{:x?}",
                &at[..4]
            );
        }
        let returns: Vec<(u64, Option<u64>)> = points
            .iter()
            .filter(|p| p.program == programs::TLS_RETURN)
            .map(|p| (p.offset, p.cookie))
            .collect();
        assert_eq!(
            returns,
            [
                (calls[0].offset, Some(TLS_EX)),
                (calls[1].offset, Some(TLS_WRITE | TLS_EX))
            ]
        );
        assert!(points.iter().any(|p| p.program == programs::TLS_FREE
            && p.offset >= api.free.as_ref().unwrap().offset
            && p.offset < api.free.as_ref().unwrap().offset + 8));
        // Another file under the same path is refused.
        let other = TlsCode {
            file: (meta.dev(), meta.ino() + 1),
            ..code
        };
        assert!(attach_points(&other).unwrap_err().contains("not the file"));
        // A FIFO is not waited on.
        let dir = std::env::temp_dir().join(format!("recap-tls-code-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let fifo = dir.join("libssl.so.3");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = open_checked(&fifo, None).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
