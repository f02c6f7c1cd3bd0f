//! Validators (a strong `ETag`, `Last-Modified`) and the conditional
//! request fields evaluated against them in RFC 9110 §13.2.2's order.

/// What the conditional fields of a request decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Go on; `honor_range` is false when `If-Range` did not match (then the
    /// whole representation is sent, RFC 9110 §13.1.5).
    Proceed {
        /// A `Range` field, if any, is to be applied.
        honor_range: bool,
    },
    /// `304 Not Modified`.
    NotModified,
    /// `412 Precondition Failed`.
    Failed,
}

/// The conditional request fields, as received (first field line of each).
#[derive(Debug, Clone, Copy, Default)]
pub struct Conditionals<'a> {
    /// `If-Match`.
    pub if_match: Option<&'a [u8]>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<&'a [u8]>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'a [u8]>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<&'a [u8]>,
    /// `If-Range`.
    pub if_range: Option<&'a [u8]>,
}

/// The validators of one representation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// The strong entity tag, quotes included.
    pub etag: String,
    /// Modification time, whole seconds since the epoch (what
    /// `Last-Modified` can say).
    pub modified_secs: i64,
}

impl Validators {
    /// Validators of a file: the tag changes whenever the inode, the size or
    /// the modification time (to the nanosecond) does, so a file replaced or
    /// rewritten on disk gets a new one.
    pub fn of_file(ino: u64, size: u64, mtime_secs: i64, mtime_nsec: u32) -> Validators {
        let mtime_ns = (mtime_secs as i128) * 1_000_000_000 + mtime_nsec as i128;
        Validators {
            etag: format!("\"{ino:x}-{size:x}-{mtime_ns:x}\""),
            modified_secs: mtime_secs,
        }
    }

    /// `Last-Modified` as an IMF-fixdate (times before the epoch say the epoch).
    pub fn last_modified(&self) -> [u8; 29] {
        crate::http::date::format_imf_fixdate(self.modified_secs.max(0) as u64)
    }

    /// Evaluate `fields` for a `GET` or `HEAD` (`safe`) or another method,
    /// `now_secs` being the current time (a `Last-Modified` within the
    /// current second is only a weak validator, so `If-Range` with a date
    /// then never matches).
    pub fn evaluate(&self, fields: &Conditionals<'_>, safe: bool, now_secs: i64) -> Precondition {
        // 1. If-Match, else 2. If-Unmodified-Since.
        if let Some(value) = fields.if_match {
            if !tag_list_matches(value, &self.etag, Compare::Strong) {
                return Precondition::Failed;
            }
        } else if let Some(since) = fields.if_unmodified_since.and_then(parse_http_date) {
            if self.modified_secs > since {
                return Precondition::Failed;
            }
        }
        // 3. If-None-Match, else 4. If-Modified-Since (GET/HEAD only).
        if let Some(value) = fields.if_none_match {
            if tag_list_matches(value, &self.etag, Compare::Weak) {
                return if safe {
                    Precondition::NotModified
                } else {
                    Precondition::Failed
                };
            }
        } else if let Some(since) = fields
            .if_modified_since
            .filter(|_| safe)
            .and_then(parse_http_date)
        {
            if self.modified_secs <= since {
                return Precondition::NotModified;
            }
        }
        // 5. If-Range.
        let honor_range = match fields.if_range {
            None => true,
            Some(value) => self.if_range_matches(value, now_secs),
        };
        Precondition::Proceed { honor_range }
    }

    fn if_range_matches(&self, value: &[u8], now_secs: i64) -> bool {
        let value = trim(value);
        if value.starts_with(b"\"") || value.starts_with(b"W/") {
            // An entity tag: strong comparison, so a weak tag never matches.
            return value == self.etag.as_bytes();
        }
        match parse_http_date(value) {
            Some(date) => date == self.modified_secs && self.modified_secs < now_secs,
            None => false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Compare {
    Strong,
    Weak,
}

/// Does the `*` or entity-tag list `value` match `etag` (a strong tag)?
/// A malformed list matches nothing.
fn tag_list_matches(value: &[u8], etag: &str, compare: Compare) -> bool {
    let value = trim(value);
    if value == b"*" {
        return true;
    }
    let opaque = etag.as_bytes();
    let mut rest = value;
    loop {
        rest = trim_start(rest);
        while let Some(r) = rest.strip_prefix(b",") {
            rest = trim_start(r);
        }
        if rest.is_empty() {
            return false;
        }
        let weak = rest.starts_with(b"W/");
        if weak {
            rest = &rest[2..];
        }
        if !rest.starts_with(b"\"") {
            return false;
        }
        let Some(close) = rest[1..].iter().position(|&b| b == b'"') else {
            return false;
        };
        let tag = &rest[..close + 2];
        if tag == opaque && !(weak && compare == Compare::Strong) {
            return true;
        }
        rest = trim_start(&rest[close + 2..]);
        if !rest.is_empty() && !rest.starts_with(b",") {
            return false;
        }
    }
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    &s[n..]
}

fn trim(s: &[u8]) -> &[u8] {
    let s = trim_start(s);
    let n = s
        .iter()
        .rev()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    &s[..s.len() - n]
}

/// Parse an HTTP-date in any of the three forms RFC 9110 §5.6.7 requires a
/// recipient to accept (IMF-fixdate, RFC 850, asctime) to seconds since
/// the epoch; `None` when it is none of them (the field is then ignored).
pub fn parse_http_date(value: &[u8]) -> Option<i64> {
    // An HTTP-date is ASCII; past this check, byte offsets are char
    // boundaries (the asctime form is sliced by offset).
    let s = std::str::from_utf8(trim(value))
        .ok()
        .filter(|s| s.is_ascii())?;
    let (day, month, year, time) = if let Some((_, rest)) = s.split_once(", ") {
        if rest.len() == 24 && rest.as_bytes()[2] == b' ' {
            // IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
            let mut it = rest.split(' ');
            let (d, m, y, t, z) = (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
            if z != "GMT" || it.next().is_some() || d.len() != 2 || y.len() != 4 {
                return None;
            }
            (num(d)?, month_index(m)?, num(y)?, t)
        } else {
            // RFC 850: `Sunday, 06-Nov-94 08:49:37 GMT`; two-digit years
            // more than 50 years ahead are in the past (RFC 9110 §5.6.7).
            let (date, rest) = rest.split_once(' ')?;
            let (t, z) = rest.split_once(' ')?;
            let mut it = date.split('-');
            let (d, m, y) = (it.next()?, it.next()?, it.next()?);
            if z != "GMT" || it.next().is_some() || d.len() != 2 || y.len() != 2 {
                return None;
            }
            let yy = num(y)?;
            let year = if yy < 70 { 2000 + yy } else { 1900 + yy };
            (num(d)?, month_index(m)?, year, t)
        }
    } else {
        // asctime: `Sun Nov  6 08:49:37 1994`.
        if s.len() != 24 {
            return None;
        }
        let (m, d, t, y) = (&s[4..7], s[8..10].trim_start(), &s[11..19], &s[20..24]);
        if &s[3..4] != " " || &s[7..8] != " " || &s[10..11] != " " || &s[19..20] != " " {
            return None;
        }
        (num(d)?, month_index(m)?, num(y)?, t)
    };
    let tb = time.as_bytes();
    if tb.len() != 8 || tb[2] != b':' || tb[5] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(&time[0..2])?, num(&time[3..5])?, num(&time[6..8])?);
    if !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + h * 3600 + mi * 60 + sec)
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn month_index(m: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS.iter().position(|&x| x == m).map(|i| i as i64 + 1)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// days-from-civil, the inverse of the formatter's civil-from-days).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    #[test]
    fn parses_the_three_date_forms() {
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(T));
        assert_eq!(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(T));
        assert_eq!(parse_http_date(b"Sun Nov  6 08:49:37 1994"), Some(T));
        assert_eq!(parse_http_date(b"Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date(b"Tue, 29 Feb 2000 00:00:00 GMT"),
            Some(951_782_400)
        );
        for bad in [
            &b""[..],
            b"yesterday",
            b"Sun, 06 Nov 1994 08:49:37 PST",
            b"Sun, 6 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Foo 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 25:49:37 GMT",
            b"Sun, 06 Nov 1994 08:49 GMT",
            b"Sun, 06 Nov 1994 08:49:37 GMT extra",
            b"-1",
            // 24 bytes, as asctime, with a character of two bytes where the
            // form is sliced (found by the `files` fuzz target: a panic).
            b"Sun Nov\xd2\x9f6 08:49:37 1994",
            b"GET /large\xd2\x9fin HTTP/1.1\r",
        ] {
            assert_eq!(
                parse_http_date(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Round trip with the formatter over a range of times.
        for secs in (0..4_000_000_000u64).step_by(86_400 * 97 + 3_601) {
            let text = crate::http::date::format_imf_fixdate(secs);
            assert_eq!(parse_http_date(&text), Some(secs as i64));
        }
    }

    fn v() -> Validators {
        Validators::of_file(0x1234, 10, T, 500)
    }

    fn eval(fields: Conditionals<'_>) -> Precondition {
        v().evaluate(&fields, true, T + 100)
    }

    const PROCEED: Precondition = Precondition::Proceed { honor_range: true };

    #[test]
    fn etag_names_inode_size_and_nanoseconds() {
        let a = Validators::of_file(1, 10, T, 0);
        assert_ne!(a.etag, Validators::of_file(2, 10, T, 0).etag);
        assert_ne!(a.etag, Validators::of_file(1, 11, T, 0).etag);
        assert_ne!(a.etag, Validators::of_file(1, 10, T, 1).etag);
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
        assert_eq!(&a.last_modified(), b"Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn rfc_9110_order_of_evaluation() {
        let tag = v().etag;
        let other = "\"nope\"";
        let weak = format!("W/{tag}");
        let list = format!("\"a\", {tag} , \"b\"");
        let before = b"Sun, 06 Nov 1994 08:49:36 GMT";
        let at = b"Sun, 06 Nov 1994 08:49:37 GMT";
        let c = Conditionals::default;
        assert_eq!(eval(c()), PROCEED);
        // If-Match: strong comparison; `*` matches any current representation.
        assert_eq!(
            eval(Conditionals {
                if_match: Some(tag.as_bytes()),
                ..c()
            }),
            PROCEED
        );
        assert_eq!(
            eval(Conditionals {
                if_match: Some(list.as_bytes()),
                ..c()
            }),
            PROCEED
        );
        assert_eq!(
            eval(Conditionals {
                if_match: Some(b"*"),
                ..c()
            }),
            PROCEED
        );
        assert_eq!(
            eval(Conditionals {
                if_match: Some(other.as_bytes()),
                ..c()
            }),
            Precondition::Failed
        );
        assert_eq!(
            eval(Conditionals {
                if_match: Some(weak.as_bytes()),
                ..c()
            }),
            Precondition::Failed
        );
        assert_eq!(
            eval(Conditionals {
                if_match: Some(b"garbage"),
                ..c()
            }),
            Precondition::Failed
        );
        // If-Unmodified-Since, ignored when If-Match is present or the date is invalid.
        assert_eq!(
            eval(Conditionals {
                if_unmodified_since: Some(at),
                ..c()
            }),
            PROCEED
        );
        assert_eq!(
            eval(Conditionals {
                if_unmodified_since: Some(before),
                ..c()
            }),
            Precondition::Failed
        );
        assert_eq!(
            eval(Conditionals {
                if_match: Some(b"*"),
                if_unmodified_since: Some(before),
                ..c()
            }),
            PROCEED
        );
        assert_eq!(
            eval(Conditionals {
                if_unmodified_since: Some(b"bogus"),
                ..c()
            }),
            PROCEED
        );
        // If-None-Match: weak comparison; 304 for GET/HEAD, 412 otherwise.
        assert_eq!(
            eval(Conditionals {
                if_none_match: Some(tag.as_bytes()),
                ..c()
            }),
            Precondition::NotModified
        );
        assert_eq!(
            eval(Conditionals {
                if_none_match: Some(weak.as_bytes()),
                ..c()
            }),
            Precondition::NotModified
        );
        assert_eq!(
            eval(Conditionals {
                if_none_match: Some(b"*"),
                ..c()
            }),
            Precondition::NotModified
        );
        assert_eq!(
            eval(Conditionals {
                if_none_match: Some(other.as_bytes()),
                ..c()
            }),
            PROCEED
        );
        assert_eq!(
            v().evaluate(
                &Conditionals {
                    if_none_match: Some(tag.as_bytes()),
                    ..c()
                },
                false,
                T + 100
            ),
            Precondition::Failed
        );
        // If-Modified-Since: ignored with If-None-Match, for unsafe methods, or invalid.
        assert_eq!(
            eval(Conditionals {
                if_modified_since: Some(at),
                ..c()
            }),
            Precondition::NotModified
        );
        assert_eq!(
            eval(Conditionals {
                if_modified_since: Some(before),
                ..c()
            }),
            PROCEED
        );
        assert_eq!(
            eval(Conditionals {
                if_none_match: Some(other.as_bytes()),
                if_modified_since: Some(at),
                ..c()
            }),
            PROCEED
        );
        assert_eq!(
            v().evaluate(
                &Conditionals {
                    if_modified_since: Some(at),
                    ..c()
                },
                false,
                T + 100
            ),
            PROCEED
        );
        assert_eq!(
            eval(Conditionals {
                if_modified_since: Some(b"Sun, 06 Nov 1994"),
                ..c()
            }),
            PROCEED
        );
        // A failing If-Match wins over a matching If-None-Match.
        assert_eq!(
            eval(Conditionals {
                if_match: Some(other.as_bytes()),
                if_none_match: Some(tag.as_bytes()),
                ..c()
            }),
            Precondition::Failed
        );
    }

    #[test]
    fn rfc_9110_comparison_table() {
        // §8.8.3.2, the rows where one side is a strong tag (ours always is).
        use Compare::*;
        for (value, strong, weak) in [
            ("W/\"1\"", false, true),
            ("W/\"2\"", false, false),
            ("\"1\"", true, true),
            ("\"2\"", false, false),
        ] {
            assert_eq!(
                tag_list_matches(value.as_bytes(), "\"1\"", Strong),
                strong,
                "{value}"
            );
            assert_eq!(
                tag_list_matches(value.as_bytes(), "\"1\"", Weak),
                weak,
                "{value}"
            );
        }
        // §13.1.1 and §13.1.2's example fields.
        let xyzzy = "\"xyzzy\"";
        for value in [
            "\"xyzzy\"",
            "\"xyzzy\", \"r2d2xxxx\", \"c3piozzzz\"",
            "\"r2d2xxxx\",\"xyzzy\"",
            "*",
        ] {
            assert!(tag_list_matches(value.as_bytes(), xyzzy, Strong), "{value}");
        }
        assert!(tag_list_matches(
            b"W/\"xyzzy\", W/\"r2d2xxxx\", W/\"c3piozzzz\"",
            xyzzy,
            Weak
        ));
        assert!(!tag_list_matches(
            b"W/\"xyzzy\", W/\"r2d2xxxx\", W/\"c3piozzzz\"",
            xyzzy,
            Strong
        ));
        assert!(!tag_list_matches(
            b"\"r2d2xxxx\", \"c3piozzzz\"",
            xyzzy,
            Weak
        ));
        // An opaque tag is compared whole: no prefix, no case folding, and
        // a list that breaks off matches nothing after the break.
        assert!(!tag_list_matches(b"\"xyz\"", xyzzy, Weak));
        assert!(!tag_list_matches(b"\"XYZZY\"", xyzzy, Weak));
        assert!(!tag_list_matches(b"\"a\" junk, \"xyzzy\"", xyzzy, Weak));
        assert!(!tag_list_matches(b"\"xyzzy", xyzzy, Weak));
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let tag = v().etag;
        let weak = format!("W/{tag}");
        let no_range = Precondition::Proceed { honor_range: false };
        let r = |value: &[u8], now| {
            v().evaluate(
                &Conditionals {
                    if_range: Some(value),
                    ..Default::default()
                },
                true,
                now,
            )
        };
        assert_eq!(r(tag.as_bytes(), T + 100), PROCEED);
        assert_eq!(r(weak.as_bytes(), T + 100), no_range);
        assert_eq!(r(b"\"other\"", T + 100), no_range);
        assert_eq!(r(b"Sun, 06 Nov 1994 08:49:37 GMT", T + 100), PROCEED);
        assert_eq!(r(b"Sun, 06 Nov 1994 08:49:38 GMT", T + 100), no_range);
        // Modified within the current second: the date is weak, no match.
        assert_eq!(r(b"Sun, 06 Nov 1994 08:49:37 GMT", T), no_range);
        assert_eq!(r(b"bogus", T + 100), no_range);
    }
}
