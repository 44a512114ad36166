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
pub const REDACTED: &str = crate::text::url::REDACTED;

/// The options whose value holds a secret. (A request's OTEL_* variables, which may hold
/// headers too, are never stored or logged at all.)
const SECRET_OPTIONS: &[&str] = &["--otlp-header"];

/// `args` with the value of every secret option replaced: `--otlp-header KEY=VALUE` becomes
/// `--otlp-header KEY=<redacted>` (the key says which header it was; the value is gone).
pub fn redact_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut value_next = false;
    let mut endpoint_next = false;
    for arg in args {
        if value_next {
            out.push(redact_pair(arg));
            value_next = false;
            continue;
        }
        if endpoint_next {
            out.push(redact_userinfo(arg));
            endpoint_next = false;
            continue;
        }
        if arg == "--otlp-endpoint" {
            out.push(arg.clone());
            endpoint_next = true;
            continue;
        }
        if let Some(url) = arg.strip_prefix("--otlp-endpoint=") {
            out.push(format!("--otlp-endpoint={}", redact_userinfo(url)));
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

/// The secret values a request carries: each `--otlp-header` value and each value of an
/// `OTEL_*_HEADERS` variable, so that messages about the request (a parse error repeats what it
/// could not read) can be scrubbed of them before they are logged.
pub fn secret_values<'a>(
    args: &'a [String],
    env: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut push_pair = |pair: &str| {
        out.push(pair.to_string());
        if let Some((_, value)) = pair.split_once('=') {
            out.push(value.to_string());
        }
    };
    let mut value_next = false;
    for arg in args {
        if value_next {
            push_pair(arg);
        }
        value_next = SECRET_OPTIONS.contains(&arg.as_str());
        for option in SECRET_OPTIONS {
            if let Some(rest) = arg.strip_prefix(option).and_then(|r| r.strip_prefix('=')) {
                push_pair(rest);
            }
        }
    }
    for (name, value) in env {
        if name.starts_with("OTEL_") && name.ends_with("_HEADERS") {
            push_pair(value);
            value.split(',').for_each(&mut push_pair);
        }
    }
    out.retain(|v| v.trim().len() >= 3);
    // Longest first, so a pair is replaced whole before its value.
    out.sort_by_key(|v| std::cmp::Reverse(v.len()));
    out
}

/// `message` with every one of `secrets` replaced.
pub fn scrub(message: &str, secrets: &[String]) -> String {
    let mut m = message.to_string();
    for secret in secrets {
        m = m.replace(secret.as_str(), REDACTED);
    }
    m
}

/// A URL's `user:password@` replaced (`http://<redacted>@host:4317`).
pub(crate) fn redact_userinfo(url: &str) -> String {
    crate::text::url::without_userinfo(url)
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
        assert_eq!(
            redact_args(&strings(&[
                "--otlp-endpoint",
                "http://u:pw@collector:4317/v1",
                "--otlp-endpoint=http://collector:4317"
            ])),
            strings(&[
                "--otlp-endpoint",
                "http://<redacted>@collector:4317/v1",
                "--otlp-endpoint=http://collector:4317"
            ])
        );
        assert!(!args_line(&args).contains("s3cret"));
    }

    #[test]
    fn parse_errors_are_scrubbed_of_the_secrets_they_repeat() {
        let args = strings(&["--otlp-header", "Authorization: Bearer t0k3n"]);
        let env = [(
            "OTEL_EXPORTER_OTLP_HEADERS".to_string(),
            "api-key=s3cr3t,x=1".to_string(),
        )];
        let secrets = secret_values(&args, env.iter().map(|(k, v)| (k, v)));
        let m = scrub(
            "invalid value 'Authorization: Bearer t0k3n' for '--otlp-header'; `api-key=s3cr3t` bad",
            &secrets,
        );
        assert!(!m.contains("t0k3n") && !m.contains("s3cr3t"), "{m}");
        assert!(m.contains("--otlp-header"), "{m}");
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
}
