//! Where in a function a uprobe costs one trap and not two. On x86-64 the kernel emulates a
//! probed `push` of a register, a `nop` and the relative branches (`call`, `jmp`, `jcc`);
//! any other instruction (`sub $n, %rsp`, `mov`, `endbr64`, `ret`) is copied and
//! single-stepped out of line: a second trap, which on the test VMs costs ~16 µs where an
//! emulated probe costs ~0.45 µs (docs/benchmarks.md, "Where a uprobe's time goes"). OpenSSL
//! 3's `SSL_read` starts with `sub $0x18, %rsp`: probed at its entry, a TLS request cost
//! nginx more than half its throughput.
//!
//! Two ways to a cheap point, both keeping the meaning of a probe at the function's entry:
//! - `entry_point`: the entry itself, or the first instruction past an `endbr64` (which
//!   changes no register), if the kernel emulates it: the arguments and the stack pointer are
//!   still the entry's, so a return probe there still finds the return address at `%rsp`;
//! - `wrapped_callee`: a thin wrapper (`SSL_read_ex` is `sub $8, %rsp; call
//!   ssl_read_internal; ...`) passes its own arguments, untouched, to the function it calls,
//!   which may start with a `push` where the wrapper does not.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// Instructions looked at from a function's start, at most, for a thin wrapper's call.
const MAX_PROLOGUE: usize = 8;

/// Whether the kernel's x86 uprobes emulate `instruction` (`bytes` its encoding) rather than
/// single-step it. Only what the kernel's `arch_uprobe_analyze_insn` takes for emulation
/// without a condition on its operands: `push` of a 64-bit register, `nop` (0x90, 0x0f 0x1f).
fn emulated(instruction: &Instruction, bytes: &[u8]) -> bool {
    match instruction.mnemonic() {
        // 0x50 + register, with REX.B for R8–R15 (a 0x66 prefix would push 16 bits).
        Mnemonic::Push => matches!(bytes, [0x50..=0x57] | [0x41, 0x50..=0x57]),
        Mnemonic::Nop => matches!(bytes, [0x90] | [0x0f, 0x1f, ..] | [0x66, 0x0f, 0x1f, ..]),
        _ => false,
    }
}

fn decode(code: &[u8], address: u64) -> impl Iterator<Item = (Instruction, &[u8])> + '_ {
    Decoder::with_ip(64, code, address, DecoderOptions::NONE)
        .into_iter()
        .take_while(|i| !i.is_invalid())
        .map(move |i| {
            let start = (i.ip() - address) as usize;
            (i, &code[start..start + i.len()])
        })
}

/// The address of the first instruction of the function at `address` (`code` its first
/// bytes) where its registers and stack pointer are those of its entry and which the kernel
/// emulates: the entry, or past one `endbr64`. None if there is no such instruction.
pub fn entry_point(code: &[u8], address: u64) -> Option<u64> {
    for (instruction, bytes) in decode(code, address).take(2) {
        if emulated(&instruction, bytes) {
            return Some(instruction.ip());
        }
        if instruction.mnemonic() != Mnemonic::Endbr64 {
            return None;
        }
    }
    None
}

/// The function that the function at `address` calls first with its own arguments, if that
/// call is the first branch and nothing before it touches the argument registers (RDI, RSI,
/// RDX, RCX: a TLS call's session, buffer, length and count pointer): only `endbr64`,
/// `push`es, `nop`s and a `sub $n, %rsp`.
pub fn wrapped_callee(code: &[u8], address: u64) -> Option<u64> {
    for (instruction, bytes) in decode(code, address).take(MAX_PROLOGUE) {
        match instruction.mnemonic() {
            Mnemonic::Call if instruction.op0_kind() == OpKind::NearBranch64 => {
                return Some(instruction.near_branch_target());
            }
            Mnemonic::Endbr64 => {}
            _ if emulated(&instruction, bytes) => {}
            Mnemonic::Sub
                if instruction.op0_register() == Register::RSP
                    && matches!(
                        instruction.op1_kind(),
                        OpKind::Immediate8to64 | OpKind::Immediate32to64
                    ) => {}
            _ => return None,
        }
    }
    None
}

/// Whether the function whose whole code is `code`, at `address`, calls `target` directly.
pub fn calls(code: &[u8], address: u64, target: u64) -> bool {
    decode(code, address).any(|(i, _)| {
        i.mnemonic() == Mnemonic::Call
            && i.op0_kind() == OpKind::NearBranch64
            && i.near_branch_target() == target
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Debian's OpenSSL 3.0.19, as objdump shows it.
    /// `SSL_read_ex`: sub $0x8,%rsp; call ssl_read_internal (at 0x35290); xor %edx,%edx
    const READ_EX: [u8; 11] = [
        0x48, 0x83, 0xec, 0x08, 0xe8, 0xc7, 0xfd, 0xff, 0xff, 0x31, 0xd2,
    ];
    /// `SSL_read`: sub $0x18,%rsp; mov %fs:0x28,%rax; mov %rax,0x8(%rsp); xor %eax,%eax;
    /// test %edx,%edx; js +0x2f; mov %rsp,%rcx; movslq %edx,%rdx; call ssl_read_internal
    const READ: [u8; 35] = [
        0x48, 0x83, 0xec, 0x18, 0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0, 0x48, 0x89, 0x44,
        0x24, 0x08, 0x31, 0xc0, 0x85, 0xd2, 0x78, 0x2f, 0x48, 0x89, 0xe1, 0x48, 0x63, 0xd2, 0xe8,
        0x3d, 0xfe, 0xff, 0xff,
    ];
    /// `ssl_read_internal`: push %r13; push %r12; push %rbp
    const INTERNAL: [u8; 5] = [0x41, 0x55, 0x41, 0x54, 0x55];

    #[test]
    fn a_push_or_a_nop_at_the_entry_or_past_endbr64_is_the_entry_point() {
        assert_eq!(entry_point(&INTERNAL, 0x35290), Some(0x35290));
        assert_eq!(entry_point(&[0x90, 0xc3], 0x10), Some(0x10));
        assert_eq!(entry_point(&[0x0f, 0x1f, 0x00, 0xc3], 0x10), Some(0x10));
        // endbr64; push %rbp
        assert_eq!(
            entry_point(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55], 0x10),
            Some(0x14)
        );
        // endbr64; sub $0x18,%rsp: nothing cheap before the stack pointer moves
        assert_eq!(
            entry_point(&[0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x83, 0xec, 0x18], 0x10),
            None
        );
        assert_eq!(entry_point(&READ, 0x35430), None);
        // push of a memory operand (not emulated), push of an immediate
        assert_eq!(entry_point(&[0xff, 0x35, 0, 0, 0, 0], 0x10), None);
        assert_eq!(entry_point(&[0x6a, 0x01], 0x10), None);
    }

    #[test]
    fn a_thin_wrapper_names_its_callee_and_a_function_that_moves_its_arguments_does_not() {
        assert_eq!(wrapped_callee(&READ_EX, 0x354c0), Some(0x35290));
        // endbr64; push %rbx; call
        assert_eq!(
            wrapped_callee(&[0xf3, 0x0f, 0x1e, 0xfa, 0x53, 0xe8, 0, 0, 0, 0], 0x100),
            Some(0x10a)
        );
        // SSL_read writes RCX and RDX (and branches) before its call.
        assert_eq!(wrapped_callee(&READ, 0x35430), None);
        // mov %rsi,%rdi; call: the arguments are not passed through.
        assert_eq!(
            wrapped_callee(&[0x48, 0x89, 0xf7, 0xe8, 0, 0, 0, 0], 0x100),
            None
        );
        // sub $8,%rsp; call *%rax: not a direct call.
        assert_eq!(
            wrapped_callee(&[0x48, 0x83, 0xec, 0x08, 0xff, 0xd0], 0x100),
            None
        );
    }

    #[test]
    fn calls_are_found_by_decoding() {
        assert!(calls(&READ, 0x35430, 0x35290));
        assert!(!calls(&READ, 0x35430, 0x35291));
        // mov $0xfffffde8e8,%rax holds the bytes of a call, inside another instruction.
        let inside = [0x48, 0xb8, 0xe8, 0x00, 0x00, 0x00, 0x00, 0, 0, 0];
        assert!(!calls(&inside, 0x1000, 0x1007));
    }
}
