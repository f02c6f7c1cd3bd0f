//! RESP2 reply encoding, appended to an output buffer.

/// `+OK`
pub const OK: &[u8] = b"+OK\r\n";
/// The null bulk string (a missing key).
pub const NIL: &[u8] = b"$-1\r\n";

/// `+text` (a status reply; `text` must hold no CR or LF).
pub fn simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `-text`: an error reply. Like Redis, CR and LF in the text become spaces
/// so the reply stays one line.
pub fn error(out: &mut Vec<u8>, text: impl AsRef<[u8]>) {
    out.push(b'-');
    out.extend(
        text.as_ref()
            .iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// `:n`
pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `$len\r\nbytes\r\n`
pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    header(out, b'$', bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// `*n`: the header of an array of `n` replies that follow.
pub fn array(out: &mut Vec<u8>, n: usize) {
    header(out, b'*', n);
}

fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}
