//! The chunked decoder on arbitrary bytes: never panic, never exceed the body
//! limit, and decode the same whether fed whole, byte by byte or in pieces.
#![no_main]

use iomux_proto::http::{ChunkError, ChunkedDecoder};
use libfuzzer_sys::fuzz_target;

type Outcome = Result<(Vec<u8>, usize, bool), ChunkError>;

fn decode(input: &[u8], max: u32, piece: usize) -> Outcome {
    let mut decoder = ChunkedDecoder::new();
    let mut body = Vec::new();
    let mut used = 0;
    for part in input.chunks(piece.max(1)) {
        let progress = decoder.decode(part, max, |d| body.extend_from_slice(d))?;
        assert!(progress.consumed <= part.len());
        used += progress.consumed;
        if progress.done {
            return Ok((body, used, true));
        }
        assert_eq!(progress.consumed, part.len(), "stopped early without finishing");
    }
    Ok((body, used, false))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let max = if selector & 1 == 0 { 64 } else { 1 << 20 };
    let whole = decode(input, max, input.len());
    if let Ok((body, used, _)) = &whole {
        assert!(body.len() <= max as usize);
        assert!(*used <= input.len());
        assert!(body.len() <= *used);
    }
    assert_eq!(whole, decode(input, max, 1), "byte by byte differs");
    assert_eq!(whole, decode(input, max, usize::from(selector >> 1) + 2), "pieces differ");
});
