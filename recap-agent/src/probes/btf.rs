//! Kernel struct offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`). The eBPF
//! side reads `task_struct.pid` and a cgroup's id through these, since Rust eBPF programs carry
//! no CO-RE relocations.
//!
//! A general BTF library indexes every type (~100k here) and took most of a window's arming
//! time; this reader walks the type records once and looks only at the few structs it needs.

use recap_common::offsets;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// (global name in the eBPF object, struct, member).
const NEEDED: [(&str, &str, &str); 13] = [
    (offsets::TASK_PID, "task_struct", "pid"),
    ("RECAP_OFF_TASK_TGID", "task_struct", "tgid"),
    (offsets::CGROUP_KN, "cgroup", "kn"),
    (offsets::KERNFS_ID, "kernfs_node", "id"),
    (offsets::CGROUP_ROOT, "cgroup", "root"),
    (offsets::ROOT_HIERARCHY_ID, "cgroup_root", "hierarchy_id"),
    (offsets::CGROUP_SELF, "cgroup", "self"),
    (offsets::CSS_PARENT, "cgroup_subsys_state", "parent"),
    (offsets::TASK_SIGNAL, "task_struct", "signal"),
    (offsets::SIGNAL_THREADS, "signal_struct", "thread_head"),
    (offsets::TASK_THREAD_NODE, "task_struct", "thread_node"),
    (offsets::SOCK_CGRP_DATA, "sock", "sk_cgrp_data"),
    (offsets::SKCD_CGROUP, "sock_cgroup_data", "cgroup"),
];

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("this kernel exposes no BTF ({VMLINUX_BTF}: {0}); every family but dns and net needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian >= 11, Ubuntu >= 20.10, RHEL >= 8.2 ship one)")]
    Missing(String),
    #[error("the kernel's BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("the kernel's BTF has no member `{member}` in `struct {strukt}`")]
    NoMember { strukt: String, member: String },
}

/// `what` asked of the running kernel's BTF (read and parsed for the question: the answers
/// are wanted rarely, on an error or once per process), if it can be read.
fn of_kernel<T>(what: impl FnOnce(&Btf) -> T) -> Option<T> {
    let data = std::fs::read(VMLINUX_BTF).ok()?;
    Some(what(&Btf::parse(&data).ok()?))
}

/// `Btf::tracepoint_arity` of the running kernel, if its BTF can be read.
pub fn tracepoint_arity(name: &str) -> Option<usize> {
    of_kernel(|b| b.tracepoint_arity(name)).flatten()
}

/// Whether the running kernel has the tracepoint (its BTF has `btf_trace_<name>`); `true`
/// when that cannot be told.
pub fn has_tracepoint(name: &str) -> bool {
    of_kernel(|b| b.has_typedef(&format!("btf_trace_{name}"))).unwrap_or(true)
}

/// Offsets `mem` reads where the kernel has them (`task_struct` fault counters, an OOM
/// victim's resident memory through `mm->rss_stat[]` as percpu counters, since 6.2); a
/// missing one stays 0, which the programs read as "not known".
const OPTIONAL: [(&str, &str, &str); 13] = [
    (offsets::RQ_BIO, "request", "bio"),
    (offsets::BIO_OPF, "bio", "bi_opf"),
    (offsets::BIO_BLKG, "bio", "bi_blkg"),
    (offsets::BIO_BDEV, "bio", "bi_bdev"),
    (offsets::BDEV_DEV, "block_device", "bd_dev"),
    (offsets::BLKG_BLKCG, "blkcg_gq", "blkcg"),
    (offsets::CSS_CGROUP, "cgroup_subsys_state", "cgroup"),
    (offsets::TASK_MIN_FLT, "task_struct", "min_flt"),
    (offsets::TASK_MAJ_FLT, "task_struct", "maj_flt"),
    (offsets::TASK_COMM, "task_struct", "comm"),
    (offsets::TASK_MM, "task_struct", "mm"),
    (offsets::MM_RSS_STAT, "mm_struct", "rss_stat"),
    (offsets::PERCPU_COUNTER_COUNT, "percpu_counter", "count"),
];

/// Byte offsets, in the order of `NEEDED`, paired with their global names; then those of
/// `OPTIONAL` the kernel has, and `sizeof(struct percpu_counter)`.
pub fn kernel_offsets() -> Result<Vec<(&'static str, u64)>, BtfError> {
    let data = std::fs::read(VMLINUX_BTF).map_err(|e| BtfError::Missing(e.to_string()))?;
    let btf = Btf::parse(&data)?;
    let mut out = NEEDED
        .iter()
        .map(|&(global, strukt, member)| {
            btf.member_offset(strukt, member)
                .map(|off| (global, off))
                .ok_or_else(|| BtfError::NoMember {
                    strukt: strukt.into(),
                    member: member.into(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for &(global, strukt, member) in &OPTIONAL {
        if let Some(off) = btf.member_offset(strukt, member) {
            out.push((global, off));
        }
    }
    if let Some(size) = btf.struct_size("percpu_counter") {
        out.push((offsets::PERCPU_COUNTER_SIZE, size));
    }
    if let (Some(iter), Some(size)) = (
        btf.member_offset("bio", "bi_iter"),
        btf.member_offset("bvec_iter", "bi_size"),
    ) {
        out.push((offsets::BIO_SIZE, iter + size));
    }
    Ok(out)
}

const KIND_PTR: u32 = 2;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_TYPE_TAG: u32 = 18;

/// Type records of a BTF blob, indexed by type id (id 0 is `void`).
pub struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Byte offset of each type record in `types`; index = type id - 1.
    records: Vec<usize>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Btf<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        let bad = BtfError::Malformed;
        if data.get(0..2) != Some(&[0x9f, 0xeb]) {
            return Err(bad("bad magic (not little-endian BTF)"));
        }
        let header = |i: usize| {
            u32_at(data, 4 + 4 * i)
                .map(|v| v as usize)
                .ok_or(bad("short header"))
        };
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (header(0)?, header(1)?, header(2)?, header(3)?, header(4)?);
        let types = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(bad("type section"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(bad("string section"))?;
        let mut records = Vec::new();
        let mut at = 0;
        while at < types.len() {
            let info = u32_at(types, at + 4).ok_or(bad("truncated type"))?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let extra = match kind {
                1 | 14 | 17 => 4,             // int, var, decl_tag
                3 => 12,                      // array
                4 | 5 | 15 | 19 => 12 * vlen, // struct, union, datasec, enum64
                6 | 13 => 8 * vlen,           // enum, func_proto
                2 | 7..=12 | 16 | 18 => 0,
                _ => return Err(bad("unknown type kind")),
            };
            records.push(at);
            at += 12 + extra;
        }
        Ok(Btf {
            types,
            strings,
            records,
        })
    }

    fn name(&self, off: u32) -> &'a [u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// (name_off, kind, kind_flag, vlen, size_or_type, record offset) of a type id.
    fn record(&self, id: u32) -> Option<(u32, u32, bool, usize, u32, usize)> {
        let at = *self.records.get((id as usize).checked_sub(1)?)?;
        let info = u32_at(self.types, at + 4)?;
        Some((
            u32_at(self.types, at)?,
            (info >> 24) & 0x1f,
            info >> 31 == 1,
            (info & 0xffff) as usize,
            u32_at(self.types, at + 8)?,
            at,
        ))
    }

    /// Whether a typedef `name` exists (`btf_trace_<tracepoint>` for each tracepoint).
    pub fn has_typedef(&self, name: &str) -> bool {
        (1..=self.records.len() as u32).any(|id| {
            self.record(id).is_some_and(|(name_off, kind, ..)| {
                kind == KIND_TYPEDEF && self.name(name_off) == name.as_bytes()
            })
        })
    }

    /// How many arguments the tracepoint `name` passes its hooks: its prototype
    /// `typedef void (*btf_trace_<name>)(void *, ...)` less the leading `void *`.
    pub fn tracepoint_arity(&self, name: &str) -> Option<usize> {
        let want = format!("btf_trace_{name}");
        let typedef = (1..=self.records.len() as u32).find(|&id| {
            self.record(id).is_some_and(|(name_off, kind, ..)| {
                kind == KIND_TYPEDEF && self.name(name_off) == want.as_bytes()
            })
        })?;
        let (.., pointer, _) = self.record(typedef)?;
        let (_, kind, _, _, proto, _) = self.record(pointer)?;
        if kind != KIND_PTR {
            return None;
        }
        let (_, kind, _, params, ..) = self.record(proto)?;
        (kind == KIND_FUNC_PROTO).then(|| params.saturating_sub(1))
    }

    /// `sizeof(struct name)`.
    pub fn struct_size(&self, name: &str) -> Option<u64> {
        (1..=self.records.len() as u32).find_map(|id| {
            let (name_off, kind, _, _, size, _) = self.record(id)?;
            (kind == KIND_STRUCT && self.name(name_off) == name.as_bytes()).then_some(size as u64)
        })
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous structs and unions.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u64> {
        (1..=self.records.len() as u32).find_map(|id| {
            let (name_off, kind, ..) = self.record(id)?;
            (kind == KIND_STRUCT && self.name(name_off) == name.as_bytes())
                .then(|| self.find_member(id, member, 0))
                .flatten()
        })
    }

    fn find_member(&self, id: u32, member: &str, base_bits: u64) -> Option<u64> {
        let (_, kind, kind_flag, vlen, _, at) = self.record(id)?;
        if kind != KIND_STRUCT && kind != KIND_UNION {
            return None;
        }
        for i in 0..vlen {
            let m = at + 12 + 12 * i;
            let (name_off, type_id, offset) = (
                u32_at(self.types, m)?,
                u32_at(self.types, m + 4)?,
                u32_at(self.types, m + 8)?,
            );
            let bits = base_bits
                + if kind_flag {
                    offset & 0xff_ffff
                } else {
                    offset
                } as u64;
            let name = self.name(name_off);
            if name == member.as_bytes() {
                return Some(bits / 8);
            }
            if name.is_empty() {
                if let Some(found) = self.find_member(self.skip_modifiers(type_id), member, bits) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the underlying type.
    fn skip_modifiers(&self, mut id: u32) -> u32 {
        while let Some((_, kind, _, _, next, _)) = self.record(id) {
            if !matches!(
                kind,
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
            ) {
                break;
            }
            id = next;
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob: `struct s { int a; union { int x; long y; }; int b; }`.
    fn synthetic() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0x\0y\0b\0long\0";
        let name = |s: &str| {
            strings
                .windows(s.len() + 1)
                .position(|w| &w[..s.len()] == s.as_bytes() && w[s.len()] == 0)
                .unwrap() as u32
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            words
                .iter()
                .for_each(|w| types.extend_from_slice(&w.to_le_bytes()))
        };
        push(&[name("int"), 1 << 24, 4, 32]); // 1: int
        push(&[name("long"), 1 << 24, 8, 64]); // 2: long
        push(&[0, 5 << 24 | 2, 8, name("x"), 1, 0, name("y"), 2, 0]); // 3: anonymous union
        push(&[
            name("s"),
            4 << 24 | 3,
            24,
            name("a"),
            1,
            0,
            0,
            3,
            64,
            name("b"),
            1,
            128,
        ]); // 4: struct s
        let mut blob = vec![0x9f, 0xeb, 1, 0];
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&v.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(strings);
        blob
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let data = synthetic();
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.member_offset("s", "a"), Some(0));
        assert_eq!(
            btf.member_offset("s", "y"),
            Some(8),
            "inside the anonymous union at bit 64"
        );
        assert_eq!(btf.member_offset("s", "b"), Some(16));
        assert_eq!(btf.member_offset("s", "nope"), None);
        assert_eq!(btf.member_offset("t", "a"), None);
        assert!(Btf::parse(&data[..10]).is_err());
    }

    #[test]
    fn counts_the_arguments_of_this_kernels_tracepoints() {
        // 6.x: sched_switch(preempt, prev, next, prev_state), mark_victim(task, uid).
        assert_eq!(tracepoint_arity("sched_switch"), Some(4));
        assert_eq!(tracepoint_arity("mark_victim"), Some(2));
        assert_eq!(tracepoint_arity("no_such_tracepoint"), None);
    }

    #[test]
    fn finds_offsets_in_this_kernel() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipping: no {VMLINUX_BTF} on this machine");
            return;
        }
        let offs = kernel_offsets().expect("offsets");
        // This kernel (6.x) has every optional one, and `struct percpu_counter`.
        assert_eq!(offs.len(), NEEDED.len() + OPTIONAL.len() + 2);
        // pid and tgid are adjacent pid_t fields.
        assert_eq!(offs[1].1, offs[0].1 + 4);
        assert!(offs.iter().all(|&(_, o)| o < 16384));
    }
}
