//! A strict, streaming decoder for `Transfer-Encoding: chunked` bodies
//! (RFC 9112 §7.1): hex sizes without signs or spaces, CRLF line ends only,
//! capped extensions and trailers, and a cap on the decoded body.

use super::limits::{MAX_CHUNK_EXTENSIONS, MAX_TRAILERS};
use super::response::is_tchar;

/// Most hex digits in a chunk size (16 is 64 bits); more is an overflow.
const MAX_SIZE_DIGITS: u8 = 16;

/// Why a chunked body was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// Not valid chunked framing (bad or overflowing size, missing CRLF, bad byte).
    Malformed,
    /// The decoded body would exceed the body limit.
    TooLarge,
    /// Chunk extensions exceed [`MAX_CHUNK_EXTENSIONS`] bytes.
    ExtensionsTooLong,
    /// Trailer fields exceed [`MAX_TRAILERS`] bytes.
    TrailersTooLong,
}

/// How far one call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes decoded; the caller offers the rest again with more behind it.
    pub consumed: usize,
    /// The body ended (last chunk and trailer section read); later bytes belong
    /// to the next message.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size,
    /// Whitespace after the size: only a `;` extension may follow.
    SizeSpace,
    /// Inside chunk extensions, up to CR.
    Extension,
    /// CR seen after the size line, LF expected.
    SizeLf,
    /// Chunk data, `size` bytes left.
    Data,
    /// CR expected after chunk data.
    DataCr,
    /// LF expected after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field's name, up to its colon.
    TrailerName,
    /// Inside a trailer field's value, up to CR.
    TrailerValue,
    /// LF expected after a trailer line.
    TrailerLf,
    /// LF expected after the final empty line.
    FinalLf,
    /// The body is complete.
    Done,
}

/// Decoder state for one chunked body; 16 bytes, no allocation.
///
/// ```
/// use iomux_proto::http::ChunkedDecoder;
/// let mut decoder = ChunkedDecoder::new();
/// let mut body = Vec::new();
/// let p = decoder
///     .decode(b"5\r\nhello\r\n0\r\n\r\nNEXT", 1024, |d| body.extend_from_slice(d))
///     .unwrap();
/// assert!(p.done);
/// assert_eq!(p.consumed, 15);
/// assert_eq!(body, b"hello");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedDecoder {
    /// The size being read, then the data left in the current chunk.
    size: u64,
    /// Decoded body bytes so far.
    total: u32,
    /// Extension bytes (while in chunks) or trailer bytes (after the last chunk).
    overhead: u16,
    digits: u8,
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes allowed in chunk extensions and trailer lines: HTAB, visible ASCII,
/// space and obs-text; no other control bytes, no DEL.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub const fn new() -> ChunkedDecoder {
        ChunkedDecoder {
            size: 0,
            total: 0,
            overhead: 0,
            digits: 0,
            state: State::Size,
        }
    }

    /// Decoded body bytes so far.
    pub fn decoded(&self) -> u32 {
        self.total
    }

    /// True once the whole body, trailers included, has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn count_overhead(&mut self, cap: u16, err: ChunkError) -> Result<(), ChunkError> {
        if self.overhead >= cap {
            return Err(err);
        }
        self.overhead += 1;
        Ok(())
    }

    /// Decode a prefix of `input`, handing each piece of chunk data to `data`.
    /// The decoded body may not exceed `max_body` bytes
    /// ([`crate::http::HttpLimits::NO_BODY_LIMIT`]: no limit). After an
    /// error the decoder must not be used again: the connection is to be closed.
    pub fn decode(
        &mut self,
        input: &[u8],
        max_body: u32,
        mut data: impl FnMut(&[u8]),
    ) -> Result<Progress, ChunkError> {
        self.decode_until(input, max_body, |piece| {
            data(piece);
            piece.len()
        })
    }

    /// [`ChunkedDecoder::decode`] with backpressure: `data` returns how many
    /// bytes of each piece it took, and decoding stops after a piece it did
    /// not take whole (`consumed` then ends right after the bytes taken).
    pub fn decode_until(
        &mut self,
        input: &[u8],
        max_body: u32,
        mut data: impl FnMut(&[u8]) -> usize,
    ) -> Result<Progress, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Data {
                let n = (input.len() - i).min(self.size as usize);
                let taken = data(&input[i..i + n]).min(n);
                i += taken;
                self.size -= taken as u64;
                // Cannot overflow but without a limit: the chunk was checked against it.
                self.total = self.total.saturating_add(taken as u32);
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                if taken < n {
                    return Ok(Progress {
                        consumed: i,
                        done: false,
                    });
                }
                continue;
            }
            let b = input[i];
            i += 1;
            match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        self.digits += 1;
                        if self.digits > MAX_SIZE_DIGITS {
                            return Err(ChunkError::Malformed);
                        }
                        let v = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.size = (self.size << 4) | v;
                    }
                    _ if self.digits == 0 => return Err(ChunkError::Malformed),
                    b';' => {
                        self.count_overhead(MAX_CHUNK_EXTENSIONS, ChunkError::ExtensionsTooLong)?;
                        self.state = State::Extension;
                    }
                    b' ' | b'\t' => {
                        self.count_overhead(MAX_CHUNK_EXTENSIONS, ChunkError::ExtensionsTooLong)?;
                        self.state = State::SizeSpace;
                    }
                    b'\r' => self.state = State::SizeLf,
                    _ => return Err(ChunkError::Malformed),
                },
                State::SizeSpace => match b {
                    b' ' | b'\t' | b';' => {
                        self.count_overhead(MAX_CHUNK_EXTENSIONS, ChunkError::ExtensionsTooLong)?;
                        if b == b';' {
                            self.state = State::Extension;
                        }
                    }
                    _ => return Err(ChunkError::Malformed),
                },
                State::Extension => match b {
                    b'\r' => self.state = State::SizeLf,
                    _ if is_field_byte(b) => {
                        self.count_overhead(MAX_CHUNK_EXTENSIONS, ChunkError::ExtensionsTooLong)?
                    }
                    _ => return Err(ChunkError::Malformed),
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.digits = 0;
                    if self.size == 0 {
                        // The last chunk: trailers are counted afresh.
                        self.overhead = 0;
                        self.state = State::TrailerStart;
                    } else if max_body != u32::MAX
                        && self.size > u64::from(max_body - self.total.min(max_body))
                    {
                        return Err(ChunkError::TooLarge);
                    } else {
                        self.state = State::Data;
                    }
                }
                State::Data => unreachable!("handled above"),
                State::DataCr => match b {
                    b'\r' => self.state = State::DataLf,
                    _ => return Err(ChunkError::Malformed),
                },
                State::DataLf => match b {
                    b'\n' => self.state = State::Size,
                    _ => return Err(ChunkError::Malformed),
                },
                State::TrailerStart => match b {
                    b'\r' => self.state = State::FinalLf,
                    // A field line starts with a name: no obs-fold, no whitespace.
                    _ if is_tchar(b) => {
                        self.count_overhead(MAX_TRAILERS, ChunkError::TrailersTooLong)?;
                        self.state = State::TrailerName;
                    }
                    _ => return Err(ChunkError::Malformed),
                },
                // field-line = field-name ":" OWS field-value OWS (RFC 9112
                // §5): a line without its colon (or with space before it) is
                // not a field.
                State::TrailerName => match b {
                    b':' => {
                        self.count_overhead(MAX_TRAILERS, ChunkError::TrailersTooLong)?;
                        self.state = State::TrailerValue;
                    }
                    _ if is_tchar(b) => {
                        self.count_overhead(MAX_TRAILERS, ChunkError::TrailersTooLong)?
                    }
                    _ => return Err(ChunkError::Malformed),
                },
                State::TrailerValue => match b {
                    b'\r' => self.state = State::TrailerLf,
                    _ if is_field_byte(b) => {
                        self.count_overhead(MAX_TRAILERS, ChunkError::TrailersTooLong)?
                    }
                    _ => return Err(ChunkError::Malformed),
                },
                State::TrailerLf => match b {
                    b'\n' => self.state = State::TrailerStart,
                    _ => return Err(ChunkError::Malformed),
                },
                State::FinalLf => match b {
                    b'\n' => {
                        self.state = State::Done;
                        return Ok(Progress {
                            consumed: i,
                            done: true,
                        });
                    }
                    _ => return Err(ChunkError::Malformed),
                },
                State::Done => {
                    return Ok(Progress {
                        consumed: i - 1,
                        done: true,
                    })
                }
            }
        }
        Ok(Progress {
            consumed: i,
            done: self.state == State::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], max: u32) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut body = Vec::new();
        let p = d.decode(input, max, |x| body.extend_from_slice(x))?;
        Ok((body, p.consumed, p.done))
    }

    /// Byte by byte must agree with all at once.
    fn decode_bytewise(input: &[u8], max: u32) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut used = 0;
        for k in 0..input.len() {
            let p = d.decode(&input[k..k + 1], max, |x| body.extend_from_slice(x))?;
            used += p.consumed;
            if p.done {
                return Ok((body, used, true));
            }
        }
        Ok((body, used, false))
    }

    #[test]
    fn good_bodies() {
        let cases: &[(&[u8], &[u8], usize)] = &[
            (b"0\r\n\r\n", b"", 5),
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello", 15),
            (b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET", b"abcde", 20),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", 20),
            (
                b"a;name=value\r\n0123456789\r\n0\r\n\r\n",
                b"0123456789",
                31,
            ),
            (b"1 ;x\r\na\r\n0\r\n\r\n", b"a", 14),
            (b"1\r\na\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\n", b"a", 25),
            (b"001\r\nz\r\n0000\r\n\r\n", b"z", 16),
        ];
        for (input, body, used) in cases {
            let got = decode_all(input, 1024).unwrap();
            assert_eq!(
                got,
                (body.to_vec(), *used, true),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(decode_bytewise(input, 1024).unwrap(), got);
        }
    }

    #[test]
    fn partial_bodies_wait() {
        for input in [
            &b"5\r\nhel"[..],
            b"5",
            b"5\r\nhello\r\n0\r\n",
            b"0\r\nX: y\r\n",
        ] {
            let (_, used, done) = decode_all(input, 1024).unwrap();
            assert!(!done);
            assert_eq!(used, input.len());
        }
    }

    #[test]
    fn hostile_bodies() {
        use ChunkError::*;
        let cases: &[(&[u8], ChunkError)] = &[
            (b"\r\n", Malformed),
            (b"x\r\n", Malformed),
            (b"-1\r\n", Malformed),
            (b"+1\r\n", Malformed),
            (b" 1\r\n", Malformed),
            (b"1 \r\na\r\n", Malformed),
            (b"0x5\r\n", Malformed),
            (b"1\na\r\n0\r\n\r\n", Malformed),
            (b"1\r\nab\r\n", Malformed),
            (b"1\r\na\n0\r\n\r\n", Malformed),
            (b"1\r\na\r\r\n", Malformed),
            (b"1;\x00\r\n", Malformed),
            (b"1;a\nb\r\n", Malformed),
            (b"0\r\n X: y\r\n\r\n", Malformed),
            (b"0\r\nX: \x01\r\n\r\n", Malformed),
            // Trailer lines that are not fields: no colon, space before it, empty name.
            (b"0\r\nX-Trailer\r\n\r\n", Malformed),
            (b"0\r\nX-Trailer value\r\n\r\n", Malformed),
            (b"0\r\nX-Trailer : v\r\n\r\n", Malformed),
            (b"0\r\n: v\r\n\r\n", Malformed),
            (b"0\r\n\r\r", Malformed),
            (b"10000000000000000\r\n", Malformed),
            (b"ffffffffffffffffff\r\n", Malformed),
            (b"ffffffffffffffff\r\n", TooLarge),
            (b"401\r\n", TooLarge),
            (b"400\r\n", Malformed), // allowed size, then the data is not there: bad CR
        ];
        for (input, want) in cases {
            let mut input = input.to_vec();
            if input == b"400\r\n" {
                input.extend(std::iter::repeat_n(b'x', 1025));
            }
            assert_eq!(
                decode_all(&input, 1024).map(|_| ()),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(&input)
            );
            assert_eq!(decode_bytewise(&input, 1024).map(|_| ()), Err(*want));
        }
    }

    #[test]
    fn body_limit_counts_all_chunks() {
        let ok = b"200\r\n"
            .iter()
            .chain(&[b'x'; 512])
            .chain(b"\r\n200\r\n")
            .chain(&[b'y'; 512])
            .chain(b"\r\n0\r\n\r\n")
            .copied()
            .collect::<Vec<u8>>();
        assert_eq!(decode_all(&ok, 1024).unwrap().0.len(), 1024);
        let mut over = ok.clone();
        over.truncate(over.len() - 5);
        over.extend_from_slice(b"1\r\nz\r\n0\r\n\r\n");
        assert_eq!(
            decode_all(&over, 1024).map(|_| ()),
            Err(ChunkError::TooLarge)
        );
    }

    #[test]
    fn extensions_and_trailers_are_capped() {
        let mut ext = b"1;".to_vec();
        ext.extend(std::iter::repeat_n(b'e', MAX_CHUNK_EXTENSIONS as usize));
        assert_eq!(
            decode_all(&ext, 1024).map(|_| ()),
            Err(ChunkError::ExtensionsTooLong)
        );
        // Caps add up over chunks, so many small extensions do not escape them.
        let mut many = Vec::new();
        for _ in 0..1000 {
            many.extend_from_slice(b"1;abcdefgh\r\nx\r\n");
        }
        assert_eq!(
            decode_all(&many, 1 << 20).map(|_| ()),
            Err(ChunkError::ExtensionsTooLong)
        );
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..1000 {
            trailers.extend_from_slice(b"X-Trailer: 12345\r\n");
        }
        assert_eq!(
            decode_all(&trailers, 1024).map(|_| ()),
            Err(ChunkError::TrailersTooLong)
        );
    }
}
