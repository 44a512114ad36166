//! Go's `crypto/tls` in a Go executable: whether it uses the calling convention `http`'s probes
//! read (the register ABI: Go ≥ 1.17 on x86-64, the build info says the version), and where
//! its `(*Conn).Read` and `(*Conn).Write` begin and `Read` returns. A goroutine's stack moves
//! when it grows, and a uretprobe rewrites the return address on the stack: Go would crash or
//! unwind wrongly. So each `RET` instruction of `Read` is probed instead, found by decoding its
//! machine code; a write is read where it begins.

use iced_x86::{Decoder, DecoderOptions, Mnemonic, Register};
use object::{Object, ObjectSection, ObjectSymbol, ReadRef};
use recap_common::{programs, GO_TLS_FUNCTIONS, TLS_WRITE};

use super::tls_code::Point;

/// A function longer than this is not decoded (crypto/tls's are a few KiB).
const MAX_FUNCTION_BYTES: u64 = 64 << 10;
/// Return instructions probed per function, at most (the compiler makes a handful).
const MAX_RETURNS: usize = 64;
/// Symbols looked at, at most.
const MAX_SYMBOLS: usize = 2_000_000;

/// Why a Go executable's `crypto/tls` cannot be read, if it cannot.
pub fn unsupported<'a, R: ReadRef<'a>>(obj: &object::File<'a, R>) -> Option<&'static str> {
    if obj.architecture() != object::Architecture::X86_64 {
        return Some("Go's crypto/tls is read on x86-64 only");
    }
    match version(obj) {
        Some((1, minor)) if minor >= 17 => None,
        Some(_) => Some("Go before 1.17 (stack-based calls) is not read"),
        None => Some("its Go build info does not say the version (Go before 1.18 is not read)"),
    }
}

/// `(1, 19)` for `go1.19.8`, from `.go.buildinfo` in the layout of Go ≥ 1.18: a 32-byte
/// header (`\xff Go buildinf:`, pointer size, flags with bit 2: strings inline), then the
/// version as a length-prefixed string.
fn version<'a, R: ReadRef<'a>>(obj: &object::File<'a, R>) -> Option<(u32, u32)> {
    let data = obj.section_by_name(".go.buildinfo")?.data().ok()?;
    if data.get(..14)? != b"\xff Go buildinf:" || data.get(15)? & 2 == 0 {
        return None;
    }
    let len = *data.get(32)? as usize; // < 128: one varint byte
    if len >= 128 {
        return None;
    }
    let text = std::str::from_utf8(data.get(33..33 + len)?).ok()?;
    let rest = &text[text.find("go1.")? + 2..];
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The probes for the functions of `GO_TLS_FUNCTIONS`: `GO_TLS_CALL` (cookie: which function)
/// at each one's stack check branch, `GO_TLS_RETURN` at each return instruction of a read.
pub fn points<'a, R: ReadRef<'a>>(obj: &object::File<'a, R>) -> Result<Vec<Point>, String> {
    let mut points = Vec::new();
    for (name, cookie) in GO_TLS_FUNCTIONS {
        let sym = obj
            .symbols()
            .take(MAX_SYMBOLS)
            .find(|s| s.name() == Ok(name) && s.is_definition())
            .ok_or_else(|| format!("{name} not in its symbols (a stripped Go binary?)"))?;
        let section = sym
            .section_index()
            .and_then(|i| obj.section_by_index(i).ok())
            .ok_or_else(|| format!("{name}: no section"))?;
        let (address, size) = (sym.address(), sym.size());
        if size == 0 || size > MAX_FUNCTION_BYTES {
            return Err(format!("{name}: a size of {size} bytes"));
        }
        let code = section
            .data_range(address, size)
            .ok()
            .flatten()
            .ok_or_else(|| format!("{name}: its code is not in the file"))?;
        let (file_start, _) = section
            .file_range()
            .ok_or_else(|| format!("{name}: its section is not in the file"))?;
        let offset = |at: u64| {
            at.checked_sub(section.address())
                .and_then(|within| file_start.checked_add(within))
                .ok_or_else(|| format!("{name}: an offset out of range"))
        };
        let check = stack_check_branch(code, address)
            .ok_or_else(|| format!("{name}: its prologue is not Go's stack check"))?;
        points.push(Point {
            program: programs::GO_TLS_CALL,
            cookie: Some(cookie),
            offset: offset(check)?,
        });
        if cookie & TLS_WRITE != 0 {
            continue; // read at the call
        }
        let returns = return_addresses(code, address);
        if returns.is_empty() || returns.len() > MAX_RETURNS {
            return Err(format!("{name}: {} return instructions", returns.len()));
        }
        for at in returns {
            points.push(Point {
                program: programs::GO_TLS_RETURN,
                cookie: Some(cookie),
                offset: offset(at)?,
            });
        }
    }
    Ok(points)
}

/// The branch of a Go function's stack check: `CMP SP or R12, 16(R14)` (the goroutine's stack
/// guard), then `JBE` to the code that grows the stack and jumps back to the function's
/// start. The argument registers are untouched up to there, and a probe there is one trap:
/// the kernel emulates a `jcc` (the instruction after it, the body's first, is single-stepped:
/// `probe_points`). A call whose stack grows passes it twice, the first time with the branch
/// taken: the probe reads the flags and skips that pass.
fn stack_check_branch(code: &[u8], address: u64) -> Option<u64> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut guard_compared = false;
    for instruction in decoder.iter().take(3) {
        match instruction.mnemonic() {
            Mnemonic::Cmp => {
                guard_compared = instruction.memory_base() == Register::R14
                    && instruction.memory_displacement64() == 16;
            }
            Mnemonic::Jbe if guard_compared => return Some(instruction.ip()),
            Mnemonic::Lea => {}
            _ => return None,
        }
    }
    None
}

/// The addresses of the `RET` instructions in x86-64 machine code that starts at `address`.
fn return_addresses(code: &[u8], address: u64) -> Vec<u64> {
    Decoder::with_ip(64, code, address, DecoderOptions::NONE)
        .into_iter()
        .filter(|i| i.mnemonic() == Mnemonic::Ret)
        .map(|i| i.ip())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_are_found_by_decoding_not_by_byte_value() {
        // mov eax, 0xc3 (a 0xc3 byte inside an instruction); ret; xor eax, eax; ret
        let code = [0xb8, 0xc3, 0, 0, 0, 0xc3, 0x31, 0xc0, 0xc3];
        assert_eq!(return_addresses(&code, 0x1000), [0x1005, 0x1008]);
    }

    #[test]
    fn the_probe_is_at_either_form_of_the_stack_checks_branch() {
        // Go 1.19's crypto/tls.(*Conn).Read: cmp rsp, [r14+0x10]; jbe ...; sub rsp, 0x68
        let small = [
            0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xc2, 0x03, 0, 0, 0x48, 0x83, 0xec, 0x68,
        ];
        assert_eq!(stack_check_branch(&small, 0x1000), Some(0x1004));
        // Its Write (a large frame): lea r12, [rsp-0x68]; cmp r12, [r14+0x10]; jbe ...
        let large = [
            0x4c, 0x8d, 0x64, 0x24, 0x98, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0x64, 0x07, 0, 0,
            0x48, 0x81, 0xec, 0xe8, 0, 0, 0,
        ];
        assert_eq!(stack_check_branch(&large, 0x1000), Some(0x1009));
        // No stack check (a compare with something else): not recognised.
        let other = [0x48, 0x3b, 0x46, 0x10, 0x0f, 0x86, 0, 0, 0, 0];
        assert_eq!(stack_check_branch(&other, 0x1000), None);
    }
}
