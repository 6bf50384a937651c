//! Plain text helpers shared by every floor.

/// `s` cut to `n` characters, with an ellipsis when anything was cut.
pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}
