//! Strings that come from the target (program names, container names, cgroup paths, a tool's
//! last lines) reach a person's terminal: control characters are shown escaped, so a program
//! named `\x1b[2J` or `a\nfake line` cannot redraw the screen or forge a line of the summary.

use std::borrow::Cow;

/// `s` with every control character (C0, DEL, C1) written as a visible escape.
pub fn safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(safe("nginx"), "nginx");
        assert_eq!(safe("a\nb"), "a\\nb");
        assert_eq!(safe("\x1b[2J"), "\\u{1b}[2J");
        assert_eq!(safe("x\u{9b}y"), "x\\u{9b}y");
        assert_eq!(safe("tab\there"), "tab\\there");
        assert_eq!(safe("ünïcode ok"), "ünïcode ok");
    }
}
