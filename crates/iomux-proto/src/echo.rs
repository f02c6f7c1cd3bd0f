//! Echo and upper-case echo: every byte goes back, optionally with ASCII
//! letters upper-cased.

use crate::{Protocol, Step};

/// Echo protocol state: stateless apart from the upper-casing choice.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo {
    upper: bool,
}

impl Echo {
    /// Bytes come back unchanged.
    ///
    /// ```
    /// use iomux_proto::{Echo, Protocol};
    /// let mut out = Vec::new();
    /// Echo::plain().on_input(b"Mixed", &mut out);
    /// assert_eq!(out, b"Mixed");
    /// ```
    pub fn plain() -> Echo {
        Echo { upper: false }
    }

    /// ASCII letters come back upper-cased, every other byte unchanged.
    ///
    /// ```
    /// use iomux_proto::{Echo, Protocol};
    /// let mut out = Vec::new();
    /// Echo::upper().on_input("straße\n".as_bytes(), &mut out);
    /// assert_eq!(out, "STRAßE\n".as_bytes());
    /// ```
    pub fn upper() -> Echo {
        Echo { upper: true }
    }
}

impl Protocol for Echo {
    #[inline]
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        let start = out.len();
        out.extend_from_slice(input);
        if self.upper {
            out[start..].make_ascii_uppercase();
        }
        Step::keep(input.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_echo_is_byte_exact_for_every_byte_value() {
        let input: Vec<u8> = (0..=255u8).collect();
        let mut out = Vec::new();
        let step = Echo::plain().on_input(&input, &mut out);
        assert_eq!(step, Step::keep(256));
        assert_eq!(out, input);
    }

    #[test]
    fn upper_changes_only_ascii_lowercase() {
        let input: Vec<u8> = (0..=255u8).collect();
        let mut out = Vec::new();
        Echo::upper().on_input(&input, &mut out);
        for (i, (&a, &b)) in input.iter().zip(&out).enumerate() {
            let want = if a.is_ascii_lowercase() { a - 32 } else { a };
            assert_eq!(b, want, "byte {i}");
        }
    }

    #[test]
    fn output_is_appended_after_existing_bytes() {
        let mut out = b"prefix:".to_vec();
        Echo::upper().on_input(b"abc", &mut out);
        assert_eq!(out, b"prefix:ABC");
    }
}
