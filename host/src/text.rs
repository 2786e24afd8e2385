//! Outside text (a caller's ids and keys, a policy's messages) quoted back
//! in errors and logs: cut to a bound on a character boundary, so one long
//! input cannot flood a message.

/// `s` cut to at most `max_bytes` bytes, with `…` when something was cut.
pub(crate) fn clip(s: &str, max_bytes: usize) -> String {
    if s.len() <= max_bytes {
        return s.to_owned();
    }
    format!("{}…", &s[..s.floor_char_boundary(max_bytes)])
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn cuts_on_character_boundaries() {
        assert_eq!(clip("héllo", 2), "h…");
        assert_eq!(clip("héllo", 3), "hé…");
        assert_eq!(clip("abc", 10), "abc");
    }
}
