//! What the agent writes down about a request: in the audit log (bounded: anyone on the socket
//! can send a request, so a line says how big it was, never all of it) and in the history
//! (secrets redacted: window arguments may carry OTLP header values such as bearer tokens,
//! which are never stored or shown).

use super::policy::Caller;

/// Arguments shown in an audit line, and bytes shown of each.
const SHOWN_ARGS: usize = 16;
const SHOWN_ARG_BYTES: usize = 96;
/// The most a message (a refusal, a parse error) adds to an audit line.
const SHOWN_MESSAGE_BYTES: usize = 512;

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// The options whose value holds a secret, and the variables (`OTEL_*_HEADERS`) likewise.
const SECRET_OPTIONS: &[&str] = &["--otlp-header"];

#[allow(
    dead_code,
    reason = "the agent's own OTEL_*_HEADERS handling; only its tests call it so far"
)]
pub fn is_secret_variable(name: &str) -> bool {
    name.starts_with("OTEL_") && name.ends_with("_HEADERS")
}

/// `args` with the value of every secret option replaced: `--otlp-header KEY=VALUE` becomes
/// `--otlp-header KEY=<redacted>` (the key says which header it was; the value is gone).
pub fn redact_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut value_next = false;
    for arg in args {
        if value_next {
            out.push(redact_pair(arg));
            value_next = false;
            continue;
        }
        match SECRET_OPTIONS
            .iter()
            .find_map(|o| arg.strip_prefix(o).map(|rest| (o, rest)))
        {
            Some((_, "")) => {
                out.push(arg.clone());
                value_next = true;
            }
            Some((option, rest)) if rest.starts_with('=') => {
                out.push(format!("{option}={}", redact_pair(&rest[1..])));
            }
            _ => out.push(arg.clone()),
        }
    }
    out
}

fn redact_pair(pair: &str) -> String {
    match pair.split_once('=') {
        Some((key, _)) => format!("{key}={REDACTED}"),
        None => REDACTED.to_string(),
    }
}

/// The caller as an audit line names it.
pub fn who(caller: &Caller) -> String {
    let mut s = format!(
        "uid {} gid {} pid {}",
        caller.uid,
        caller.gid,
        caller
            .pid
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into())
    );
    if let Some(origin) = &caller.origin {
        s.push_str(&format!(" ({})", shorten(origin, SHOWN_MESSAGE_BYTES)));
    }
    s
}

/// A request's arguments as an audit line shows them: redacted, at most `SHOWN_ARGS` of them and
/// `SHOWN_ARG_BYTES` of each, escaped, with the request's real size.
pub fn args_line(args: &[String]) -> String {
    let bytes: usize = args.iter().map(String::len).sum();
    let shown: Vec<String> = redact_args(&args[..args.len().min(SHOWN_ARGS)])
        .iter()
        .map(|a| shorten(a, SHOWN_ARG_BYTES))
        .collect();
    let more = if args.len() > SHOWN_ARGS {
        format!(" +{} more", args.len() - SHOWN_ARGS)
    } else {
        String::new()
    };
    format!(
        "[{}{more}] ({} arguments, {bytes} bytes)",
        shown.join(" "),
        args.len()
    )
}

/// A message for an audit line: escaped and cut.
pub fn message(m: &str) -> String {
    shorten(m, SHOWN_MESSAGE_BYTES)
}

/// `s` escaped (no control characters reach the journal) and cut to about `max` bytes.
fn shorten(s: &str, max: usize) -> String {
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let escaped = s[..cut].escape_debug().to_string();
    if cut < s.len() {
        format!("{escaped}…(+{} bytes)", s.len() - cut)
    } else {
        escaped
    }
}

/// Writes one audit line.
pub fn log(caller: &Caller, what: &str) {
    log::info!("audit: {} {what}", who(caller));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn header_values_are_redacted_in_both_spellings() {
        let args = strings(&[
            "--pid",
            "1",
            "--otlp-header",
            "authorization=Bearer abc",
            "--otlp-header=x-api-key=s3cret",
            "--otlp-header",
        ]);
        assert_eq!(
            redact_args(&args),
            strings(&[
                "--pid",
                "1",
                "--otlp-header",
                "authorization=<redacted>",
                "--otlp-header=x-api-key=<redacted>",
                "--otlp-header",
            ])
        );
        assert!(!args_line(&args).contains("abc"));
        assert!(!args_line(&args).contains("s3cret"));
    }

    #[test]
    fn audit_lines_are_bounded_whatever_the_request() {
        let huge: Vec<String> = (0..1000).map(|_| "x".repeat(3900)).collect();
        let line = args_line(&huge);
        assert!(line.len() < 2500, "{} bytes", line.len());
        assert!(line.contains("(1000 arguments, 3900000 bytes)"));
        assert!(line.contains("+984 more"));
        let m = message(&format!("{}\u{1b}[2J", "é".repeat(1000)));
        assert!(m.len() < 600);
        assert!(!m.contains('\u{1b}'));
    }

    #[test]
    fn secret_variables_are_the_header_ones() {
        assert!(is_secret_variable("OTEL_EXPORTER_OTLP_HEADERS"));
        assert!(is_secret_variable("OTEL_EXPORTER_OTLP_METRICS_HEADERS"));
        assert!(!is_secret_variable("OTEL_RESOURCE_ATTRIBUTES"));
    }
}
