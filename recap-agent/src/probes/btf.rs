//! Kernel struct offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`). The eBPF
//! side reads `task_struct.pid` and a cgroup's id through these, since Rust eBPF programs carry
//! no CO-RE relocations.

use btf_rs::{Btf, Type};
use recap_common::offsets;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// (global name in the eBPF object, struct, member path) — a nested member is `a.b`.
const NEEDED: [(&str, &str, &str); 6] = [
    (offsets::TASK_PID, "task_struct", "pid"),
    ("RECAP_OFF_TASK_TGID", "task_struct", "tgid"),
    (offsets::CGROUP_KN, "cgroup", "kn"),
    (offsets::KERNFS_ID, "kernfs_node", "id"),
    (offsets::CGROUP_ROOT, "cgroup", "root"),
    (offsets::ROOT_HIERARCHY_ID, "cgroup_root", "hierarchy_id"),
];

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("this kernel exposes no BTF ({VMLINUX_BTF}: {0}); task-based probes (syscalls, proc, cpu) need a kernel built with CONFIG_DEBUG_INFO_BTF=y")]
    Missing(String),
    #[error("the kernel's BTF has no member `{member}` in `struct {strukt}`")]
    NoMember { strukt: String, member: String },
}

/// Byte offsets, in the order of `NEEDED`, paired with their global names.
pub fn kernel_offsets() -> Result<Vec<(&'static str, u64)>, BtfError> {
    let btf = Btf::from_file(VMLINUX_BTF).map_err(|e| BtfError::Missing(e.to_string()))?;
    NEEDED
        .iter()
        .map(|&(global, strukt, member)| {
            member_offset(&btf, strukt, member)
                .map(|off| (global, off))
                .ok_or_else(|| BtfError::NoMember {
                    strukt: strukt.into(),
                    member: member.into(),
                })
        })
        .collect()
}

/// Byte offset of `member` in `struct name`, looking through anonymous structs and unions.
fn member_offset(btf: &Btf, name: &str, member: &str) -> Option<u64> {
    let types = btf.resolve_types_by_name(name).ok()?;
    types.iter().find_map(|t| match t {
        Type::Struct(s) => find_in(btf, s, member, 0),
        _ => None,
    })
}

fn find_in(btf: &Btf, s: &btf_rs::Struct, member: &str, base_bits: u64) -> Option<u64> {
    for m in &s.members {
        let bits = base_bits + m.bit_offset() as u64;
        let name = btf.resolve_name(m).unwrap_or_default();
        if name == member {
            return Some(bits / 8);
        }
        if name.is_empty() {
            // Anonymous struct/union: its members belong to the outer struct.
            if let Ok(Type::Struct(inner) | Type::Union(inner)) = btf.resolve_chained_type(m) {
                if let Some(off) = find_in(btf, &inner, member, bits) {
                    return Some(off);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_offsets_in_this_kernel() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipping: no {VMLINUX_BTF} on this machine");
            return;
        }
        let offs = kernel_offsets().expect("offsets");
        assert_eq!(offs.len(), NEEDED.len());
        // pid and tgid are adjacent pid_t fields.
        assert_eq!(offs[1].1, offs[0].1 + 4);
        assert!(offs.iter().all(|&(_, o)| o < 16384));
    }
}
