//! Outside text (a caller's ids and keys, a policy's messages) quoted back
//! in errors and logs: cut to a bound on a character boundary, so one long
//! input cannot flood a message, and with control characters escaped, so it
//! cannot forge a log line.

use std::borrow::Cow;

/// `s` cut to at most `max_bytes` bytes, with `…` when something was cut.
pub(crate) fn clip(s: &str, max_bytes: usize) -> String {
    if s.len() <= max_bytes {
        return s.to_owned();
    }
    format!("{}…", &s[..s.floor_char_boundary(max_bytes)])
}

/// `s` with every control character (CR and LF included) written as an
/// escape such as `\n` or `\u{1b}`: one line of log text stays one line.
pub(crate) fn escape_controls(s: &str) -> Cow<'_, str> {
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
    use super::{clip, escape_controls};

    #[test]
    fn control_characters_are_escaped_so_a_line_stays_a_line() {
        assert_eq!(escape_controls("plain"), "plain");
        assert_eq!(
            escape_controls("ok\r\n2026-01-01 ERROR forged\u{1b}[31m"),
            "ok\\r\\n2026-01-01 ERROR forged\\u{1b}[31m"
        );
    }

    #[test]
    fn cuts_on_character_boundaries() {
        assert_eq!(clip("héllo", 2), "h…");
        assert_eq!(clip("héllo", 3), "hé…");
        assert_eq!(clip("abc", 10), "abc");
    }
}
