//! `Range: bytes=...` (RFC 9110 §14): parsing, satisfiability, coalescing,
//! and the `multipart/byteranges` layout of several ranges.

/// At most this many range specs are read; a longer list is ignored (the
/// whole file is sent), as nginx's `max_ranges` does.
pub const MAX_RANGE_SPECS: usize = 64;
/// At most this many ranges remain after coalescing, else the whole file is
/// sent: many small ranges cost the server far more than the bytes they name.
pub const MAX_PARTS: usize = 16;

/// Bytes `start..end` of the file (`end` exclusive, never equal to `start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl ByteRange {
    /// How many bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Never true (a range holds at least one byte); for symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The `Content-Range` value: `bytes FIRST-LAST/SIZE`.
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end - 1, size)
    }
}

/// What a `Range` field asks of a file of a given size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// Send the whole file (no usable `Range`: absent, another unit, not
    /// well-formed, or too many pieces).
    Full,
    /// Send these ranges, ascending and disjoint (one: a plain `206`; more:
    /// `multipart/byteranges`).
    Partial(Vec<ByteRange>),
    /// `416` with `Content-Range: bytes */SIZE`.
    Unsatisfiable,
}

/// Decide what `value`, a `Range` field, asks of a file of `size` bytes.
/// Overlapping and adjacent ranges are merged and sorted (RFC 9110 §14.1.1
/// lets a server coalesce), which bounds the response by the file's size.
pub fn plan_ranges(value: &[u8], size: u64) -> RangeRequest {
    let Some(specs) = parse_specs(value) else {
        return RangeRequest::Full;
    };
    let mut ranges: Vec<ByteRange> = specs
        .into_iter()
        .filter_map(|spec| spec.resolve(size))
        .collect();
    if ranges.is_empty() {
        return RangeRequest::Unsatisfiable;
    }
    ranges.sort_unstable_by_key(|r| r.start);
    let mut merged: Vec<ByteRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    if merged.len() > MAX_PARTS {
        return RangeRequest::Full;
    }
    RangeRequest::Partial(merged)
}

#[derive(Debug, Clone, Copy)]
enum Spec {
    /// `first-` or `first-last`.
    From { first: u64, last: Option<u64> },
    /// `-suffix`.
    Suffix(u64),
}

impl Spec {
    fn resolve(self, size: u64) -> Option<ByteRange> {
        match self {
            Spec::From { first, last } if first < size => Some(ByteRange {
                start: first,
                end: last.map_or(size, |l| l.saturating_add(1).min(size)),
            }),
            Spec::From { .. } => None,
            Spec::Suffix(n) if n > 0 && size > 0 => Some(ByteRange {
                start: size - n.min(size),
                end: size,
            }),
            Spec::Suffix(_) => None,
        }
    }
}

/// The specs of a `bytes=` field, or `None` when it is to be ignored.
fn parse_specs(value: &[u8]) -> Option<Vec<Spec>> {
    let value = std::str::from_utf8(value).ok()?.trim_matches([' ', '\t']);
    let (unit, set) = value.split_once('=')?;
    if !unit
        .trim_end_matches([' ', '\t'])
        .eq_ignore_ascii_case("bytes")
    {
        return None;
    }
    let mut specs = Vec::new();
    for element in set.split(',') {
        let element = element.trim_matches([' ', '\t']);
        if element.is_empty() {
            continue; // RFC 9110 §5.6.1: empty list elements are ignored.
        }
        if specs.len() == MAX_RANGE_SPECS {
            return None;
        }
        let (first, last) = element.split_once('-')?;
        let spec = match (first.is_empty(), last.is_empty()) {
            (true, true) => return None,
            (true, false) => Spec::Suffix(digits(last)?),
            (false, true) => Spec::From {
                first: digits(first)?,
                last: None,
            },
            (false, false) => {
                let (first, last) = (digits(first)?, digits(last)?);
                if last < first {
                    return None;
                }
                Spec::From {
                    first,
                    last: Some(last),
                }
            }
        };
        specs.push(spec);
    }
    (!specs.is_empty()).then_some(specs)
}

/// Decimal digits to a number, saturating (a position past any file is as
/// good as `u64::MAX`).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// One piece of a `multipart/byteranges` body: bytes to send as they are,
/// or a range of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Delimiter and part headers.
    Bytes(Vec<u8>),
    /// File bytes.
    File(ByteRange),
}

/// The body of a `multipart/byteranges` response (RFC 9110 §14.6): each
/// part's delimiter and headers, its file bytes, then the close delimiter.
pub fn multipart_pieces(
    boundary: &str,
    content_type: &str,
    size: u64,
    ranges: &[ByteRange],
) -> Vec<Piece> {
    let mut pieces = Vec::with_capacity(ranges.len() * 2 + 1);
    for r in ranges {
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {}\r\n\r\n",
            r.content_range(size)
        );
        pieces.push(Piece::Bytes(head.into_bytes()));
        pieces.push(Piece::File(*r));
    }
    pieces.push(Piece::Bytes(format!("\r\n--{boundary}--\r\n").into_bytes()));
    pieces
}

/// The total length of `pieces`.
pub fn pieces_len(pieces: &[Piece]) -> u64 {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Bytes(b) => b.len() as u64,
            Piece::File(r) => r.len(),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    fn plan(v: &str, size: u64) -> RangeRequest {
        plan_ranges(v.as_bytes(), size)
    }

    #[test]
    fn rfc_9110_examples() {
        // §14.1.2, a representation of length 10000.
        use RangeRequest::Partial;
        assert_eq!(plan("bytes=0-499", 10000), Partial(vec![r(0, 500)]));
        assert_eq!(plan("bytes=500-999", 10000), Partial(vec![r(500, 1000)]));
        assert_eq!(plan("bytes=-500", 10000), Partial(vec![r(9500, 10000)]));
        assert_eq!(plan("bytes=9500-", 10000), Partial(vec![r(9500, 10000)]));
        assert_eq!(
            plan("bytes=0-0,-1", 10000),
            Partial(vec![r(0, 1), r(9999, 10000)])
        );
        // Overlapping and adjacent ranges coalesce.
        assert_eq!(
            plan("bytes=500-600,601-999", 10000),
            Partial(vec![r(500, 1000)])
        );
        assert_eq!(
            plan("bytes=500-700,601-999", 10000),
            Partial(vec![r(500, 1000)])
        );
        // §14.4: the Content-Range forms.
        assert_eq!(r(42, 1234).content_range(1234), "bytes 42-1233/1234");
        assert_eq!(r(0, 500).content_range(8000), "bytes 0-499/8000");
    }

    #[test]
    fn satisfiability_and_clamping() {
        use RangeRequest::*;
        assert_eq!(plan("bytes=0-99999", 100), Partial(vec![r(0, 100)]));
        assert_eq!(plan("bytes=-99999", 100), Partial(vec![r(0, 100)]));
        assert_eq!(plan("bytes=99-", 100), Partial(vec![r(99, 100)]));
        assert_eq!(plan("bytes=100-", 100), Unsatisfiable);
        assert_eq!(plan("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(plan("bytes=-0", 100), Unsatisfiable);
        assert_eq!(plan("bytes=0-", 0), Unsatisfiable);
        assert_eq!(plan("bytes=-5", 0), Unsatisfiable);
        // One satisfiable range is enough.
        assert_eq!(plan("bytes=200-300, 5-9", 100), Partial(vec![r(5, 10)]));
        assert_eq!(plan("bytes=99999999999999999999999-", 100), Unsatisfiable);
        assert_eq!(
            plan("bytes=0-99999999999999999999999", 100),
            Partial(vec![r(0, 100)])
        );
        // Out of order, whitespace, empty elements, case of the unit.
        assert_eq!(
            plan(" Bytes = 50-59 , ,0-9 ", 100),
            Partial(vec![r(0, 10), r(50, 60)])
        );
    }

    #[test]
    fn malformed_or_foreign_ranges_are_ignored() {
        for v in [
            "",
            "bytes",
            "bytes=",
            "bytes=,",
            "items=0-1",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=-",
            "bytes=1-2-3",
            "bytes=+1-2",
            "bytes=0x1-2",
            "bytes=1 -2",
            "bytes=0-1;x",
        ] {
            assert_eq!(plan(v, 100), RangeRequest::Full, "{v:?}");
        }
    }

    #[test]
    fn abuse_is_bounded() {
        // The same range many times coalesces to one.
        let same = format!("bytes={}", vec!["0-99"; MAX_RANGE_SPECS].join(","));
        assert_eq!(plan(&same, 1000), RangeRequest::Partial(vec![r(0, 100)]));
        // Too many specs: ignored.
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGE_SPECS + 1].join(","));
        assert_eq!(plan(&many, 1000), RangeRequest::Full);
        // Too many disjoint small parts after coalescing: the whole file.
        let tiny: Vec<String> = (0..=MAX_PARTS as u64)
            .map(|i| format!("{}-{}", i * 10, i * 10))
            .collect();
        assert_eq!(
            plan(&format!("bytes={}", tiny.join(",")), 1000),
            RangeRequest::Full
        );
        let fits: Vec<String> = (0..MAX_PARTS as u64)
            .map(|i| format!("{}-{}", i * 10, i * 10))
            .collect();
        match plan(&format!("bytes={}", fits.join(",")), 1000) {
            RangeRequest::Partial(parts) => assert_eq!(parts.len(), MAX_PARTS),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn multipart_layout() {
        let pieces = multipart_pieces("B", "text/plain", 100, &[r(0, 2), r(10, 13)]);
        let mut text = Vec::new();
        let file: Vec<u8> = (0..100u8).collect();
        for p in &pieces {
            match p {
                Piece::Bytes(b) => text.extend_from_slice(b),
                Piece::File(range) => {
                    text.extend_from_slice(&file[range.start as usize..range.end as usize])
                }
            }
        }
        let mut expected =
            b"\r\n--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/100\r\n\r\n".to_vec();
        expected.extend_from_slice(&[0, 1]);
        expected.extend_from_slice(
            b"\r\n--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 10-12/100\r\n\r\n",
        );
        expected.extend_from_slice(&[10, 11, 12]);
        expected.extend_from_slice(b"\r\n--B--\r\n");
        assert_eq!(text, expected);
        assert_eq!(pieces_len(&pieces), expected.len() as u64);
    }
}
