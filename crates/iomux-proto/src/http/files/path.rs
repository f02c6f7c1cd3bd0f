//! From a request's path to a path beneath the root: decode once, then
//! normalize, refusing anything that could name a file outside the root or
//! that a filesystem would read differently from the way it was checked.
//! The path is the one the HTTP core split from the target
//! ([`Request::path`](crate::http::Request::path)): routes and files never
//! disagree on which path a target names.

use std::borrow::Cow;

/// Why a request target names no file beneath the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Malformed or hostile: a bad percent escape, a NUL, an encoded `/`, a
    /// backslash, a `#`, bytes that are not UTF-8 (overlong forms included),
    /// `..` above the root, or a path that does not start with `/` (the
    /// target was neither origin- nor absolute-form).
    BadRequest,
    /// A component starts with `.` and hidden files are not served.
    Hidden,
}

/// A request's path resolved to components beneath the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPath<'a> {
    /// The normalized path relative to the root, components joined by `/`
    /// (empty for the root itself); never starts with `/`, holds no `.` or
    /// `..` component and no empty one. Borrowed from the target when that
    /// needed no decoding (most do: no copy per request).
    pub relative: Cow<'a, str>,
    /// The decoded path ended with `/` (or was the root).
    pub trailing_slash: bool,
    /// The query as received, without its `?` (`None` when there was none).
    pub query: Option<&'a str>,
}

impl TargetPath<'_> {
    /// The components of [`relative`](Self::relative).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.relative.split('/').filter(|c| !c.is_empty())
    }

    /// The path as an absolute URL path, every component percent-encoded
    /// again, with a trailing `/` when `slash`: what a `Location` header or a
    /// listing's title shows. Built from the normalized components, never
    /// from the raw target, so `//host` cannot become a scheme-relative URL.
    pub fn url_path(&self, slash: bool) -> String {
        let mut out = String::with_capacity(self.relative.len() + 2);
        for component in self.components() {
            out.push('/');
            push_encoded(&mut out, component);
        }
        if slash || out.is_empty() {
            out.push('/');
        }
        out
    }
}

/// Resolve a request's `path` and `query` as the HTTP core split them
/// ([`Request::path`](crate::http::Request::path),
/// [`Request::query`](crate::http::Request::query): still percent-encoded,
/// an absolute-form target's authority gone) to a path beneath the root.
pub fn resolve_path<'a>(
    path: &'a str,
    query: Option<&'a str>,
    hidden_allowed: bool,
) -> Result<TargetPath<'a>, PathError> {
    let raw_path = path.as_bytes();
    if raw_path.first() != Some(&b'/') {
        return Err(PathError::BadRequest);
    }
    let (relative, trailing_slash) = match already_normal(path) {
        Some(relative) => (
            Cow::Borrowed(relative),
            relative.is_empty() || raw_path.ends_with(b"/"),
        ),
        None => {
            if raw_path.contains(&b'#') {
                return Err(PathError::BadRequest);
            }
            let (relative, trailing_slash) = normalize(raw_path, hidden_allowed)?;
            (Cow::Owned(relative), trailing_slash)
        }
    };
    Ok(TargetPath {
        relative,
        trailing_slash,
        query,
    })
}

/// Decode `raw_path` and normalize it: (the relative path, whether it names
/// a directory by its trailing `/` or is the root).
fn normalize(raw_path: &[u8], hidden_allowed: bool) -> Result<(String, bool), PathError> {
    let decoded = percent_decode_path(raw_path)?;
    // Overlong forms (`%c0%ae` for `.`) and stray bytes are not UTF-8.
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::BadRequest)?;
    let trailing_slash = decoded.ends_with('/');
    let mut components: Vec<&str> = Vec::new();
    for component in decoded.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                components.pop().ok_or(PathError::BadRequest)?;
            }
            name => components.push(name),
        }
    }
    if !hidden_allowed && components.iter().any(|c| c.starts_with('.')) {
        return Err(PathError::Hidden);
    }
    Ok((
        components.join("/"),
        trailing_slash || components.is_empty(),
    ))
}

/// The path (`/` first) without its leading and trailing `/` when decoding
/// and normalizing would leave it as it is: no escape, no backslash, NUL or
/// `#`, no empty component, none that starts with `.` (so no `.`, `..` or
/// hidden name). Most targets are such, and skip the general way in one
/// pass over their bytes (a slice of a `str` at `/`s: UTF-8 already).
fn already_normal(path: &str) -> Option<&str> {
    let inner = path.strip_prefix('/')?;
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    // The byte before each: a component starts after a `/`.
    let mut previous = b'/';
    for &b in inner.as_bytes() {
        match b {
            b'%' | b'\\' | 0 | b'#' => return None,
            b'/' | b'.' if previous == b'/' => return None,
            _ => previous = b,
        }
    }
    // Ended with `//`: an empty last component.
    (inner.is_empty() || previous != b'/').then_some(inner)
}

/// Decode `%XX` escapes once. An escape that decodes to `/`, `\` or NUL, a
/// raw `\` or NUL, and a `%` not followed by two hex digits are refused: each
/// would let the name that is checked differ from the name that is opened.
fn percent_decode_path(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'%' => {
                let hi = raw.get(i + 1).and_then(|&h| hex_value(h));
                let lo = raw.get(i + 2).and_then(|&l| hex_value(l));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadRequest);
                };
                let decoded = hi << 4 | lo;
                if matches!(decoded, b'/' | b'\\' | 0) {
                    return Err(PathError::BadRequest);
                }
                out.push(decoded);
                i += 3;
            }
            b'\\' | 0 => return Err(PathError::BadRequest),
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn hex_value(h: u8) -> Option<u8> {
    (h as char).to_digit(16).map(|d| d as u8)
}

/// Append `component` percent-encoded for a URL path: unreserved characters
/// and a few safe sub-delimiters stay, every other byte is escaped (so `?`,
/// `#`, `%`, quotes and `<` can neither end the path nor leave an attribute).
pub fn push_encoded(out: &mut String, component: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in component.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            )
        {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::split_target;

    /// `target` as the HTTP core splits it, resolved.
    fn resolve(target: &str, hidden_allowed: bool) -> Result<TargetPath<'_>, PathError> {
        let (path, query) = split_target(target);
        resolve_path(path, query, hidden_allowed)
    }

    fn ok(target: &str) -> TargetPath<'_> {
        resolve(target, false).unwrap()
    }

    fn bad(target: &[u8]) -> PathError {
        // Targets come from the parser as text; bytes that are not UTF-8
        // cannot reach here (the overlong forms below are escapes).
        resolve(std::str::from_utf8(target).unwrap(), false).unwrap_err()
    }

    #[test]
    fn the_short_way_agrees_with_the_general_one() {
        let mut taken = 0;
        for path in [
            "/",
            "//",
            "/a",
            "/a/",
            "/a//",
            "//a",
            "/a/b.txt",
            "/a/b/",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/.a",
            "/a/.b",
            "/a.b/c",
            "/a%20b",
            "/a\\b",
            "/\u{e9}t\u{e9}",
            "/a/b/c/d/e/f.html",
            "/..",
            "/a/..",
            "/a/b..",
            "/a..b/c",
            "/~user/x",
            "/a/b/",
        ] {
            for hidden in [false, true] {
                if let Some(relative) = already_normal(path) {
                    taken += 1;
                    let trailing = relative.is_empty() || path.ends_with('/');
                    assert_eq!(
                        normalize(path.as_bytes(), hidden),
                        Ok((relative.to_owned(), trailing)),
                        "{path}"
                    );
                }
            }
        }
        assert!(
            taken >= 20,
            "the short way is taken for plain paths ({taken})"
        );
        // A `#` is refused by the long way; the short way leaves it to it.
        assert_eq!(already_normal("/a#b"), None);
        assert_eq!(
            resolve_path("/a#b", None, false),
            Err(PathError::BadRequest)
        );
    }

    #[test]
    fn normalizes_dots_and_empty_components() {
        assert_eq!(ok("/").relative, "");
        assert!(ok("/").trailing_slash);
        assert_eq!(ok("/a/./b//c").relative, "a/b/c");
        assert!(!ok("/a/./b//c").trailing_slash);
        assert_eq!(ok("/a/b/../c/").relative, "a/c");
        assert!(ok("/a/b/../c/").trailing_slash);
        assert_eq!(ok("/a/..").relative, "");
        assert_eq!(ok("/a%20b/%C3%A9.txt").relative, "a b/é.txt");
        assert_eq!(ok("/x?y=1&z").query, Some("y=1&z"));
        assert_eq!(ok("/x").query, None);
        // Decoded once: a double-encoded dot is a literal name, not `.`.
        assert_eq!(ok("/%252e%252e/x").relative, "%2e%2e/x");
    }

    #[test]
    fn absolute_form_keeps_only_the_path() {
        assert_eq!(ok("http://example.com/a/b").relative, "a/b");
        assert_eq!(ok("HTTPS://example.com").relative, "");
        assert_eq!(ok("http://h?q").query, Some("q"));
        assert_eq!(bad(b"http://h/../etc/passwd"), PathError::BadRequest);
        assert_eq!(bad(b"http://h#/etc/passwd"), PathError::BadRequest);
        assert_eq!(bad(b"file:///etc/passwd"), PathError::BadRequest);
        assert_eq!(bad(b"*"), PathError::BadRequest);
        assert_eq!(bad(b"example.com:80"), PathError::BadRequest);
    }

    #[test]
    fn refuses_every_way_above_the_root() {
        for target in [
            &b"/.."[..],
            b"/../etc/passwd",
            b"/a/../../x",
            b"/%2e%2e/x",
            b"/%2E%2E/%2e%2e/x",
            b"/.%2e/x",
            b"/a/%2e%2e/%2e%2e/x",
            b"/%2f..%2fx",
            b"/a%2fb",
            b"/a%5cb",
            b"/..\\x",
            b"/a\\b",
            b"/a%00.txt",
            b"/a\0b",
            b"/%c0%ae%c0%ae/x",
            b"/%e0%80%ae/x",
            b"/%c0%af",
            b"/%ff",
            b"/%",
            b"/%4",
            b"/%zz",
            b"/a#b",
            b"",
            b"a/b",
        ] {
            assert_eq!(
                bad(target),
                PathError::BadRequest,
                "{:?}",
                String::from_utf8_lossy(target)
            );
        }
    }

    #[test]
    fn hidden_names_need_permission() {
        assert_eq!(bad(b"/.git/config"), PathError::Hidden);
        assert_eq!(bad(b"/a/%2egit"), PathError::Hidden);
        assert_eq!(bad(b"/a/.env"), PathError::Hidden);
        assert_eq!(resolve("/a/.env", true).unwrap().relative, "a/.env");
        // `..` that pops a hidden name leaves nothing hidden.
        assert_eq!(ok("/.x/../y").relative, "y");
    }

    #[test]
    fn url_path_reencodes_components() {
        assert_eq!(ok("/").url_path(true), "/");
        assert_eq!(ok("//evil.com").url_path(true), "/evil.com/");
        assert_eq!(
            ok("/a%20b/%3Cx%3E%22%3f").url_path(false),
            "/a%20b/%3Cx%3E%22%3F"
        );
        assert_eq!(ok("/%25").url_path(false), "/%25");
    }
}
