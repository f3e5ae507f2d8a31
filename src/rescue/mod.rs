//! Rescue tools in the same binary: `dm-ulogd examine DEVICE` reads a disk
//! log device offline, `dm-ulogd status` reads a running daemon's state
//! files (and the mirrors' tables). Both only read: they open everything
//! read-only and write nothing. Their arguments are parsed in cli/.

pub mod examine;
pub mod status;

/// `s` as a JSON string literal: quotes, backslashes and control characters
/// escaped.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json_string("x\ny\u{1}"), r#""x\ny\u0001""#);
        assert_eq!(json_string("µ"), "\"µ\"");
    }
}
