//! URLs as they may be shown and kept: without the `user:password@` a collector's endpoint may
//! carry.

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// `url` with its userinfo replaced (`http://<redacted>@host:4317`): everything between the
/// scheme and the last `@` before any query or fragment (a password may hold a `/`, which
/// would end the authority for a strict parser but not for a lenient one).
pub fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => {
            let sep = if scheme.is_empty() { "" } else { "://" };
            format!("{scheme}{sep}{REDACTED}{}", &rest[at..])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_redacted_however_it_is_written() {
        assert_eq!(without_userinfo("http://c:4317"), "http://c:4317");
        assert_eq!(
            without_userinfo("https://u:p@c:4318/v1"),
            "https://<redacted>@c:4318/v1"
        );
        assert_eq!(
            without_userinfo("http://u:p/w@h:4317"),
            "http://<redacted>@h:4317"
        );
        assert_eq!(without_userinfo("u:p@h:1"), "<redacted>@h:1");
    }
}
