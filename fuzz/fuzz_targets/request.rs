//! Arbitrary bytes into a connection: never panic, consume no more than
//! offered, produce well-formed responses, read nothing after a close, and
//! (without 100-continue) answer the same whether the bytes come whole or in pieces.
#![no_main]

use iomux_fuzz::{check_output, connection, end, offer, routes, DEFAULT, SMALL};
use iomux_proto::http::feed_in_reads;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let config = if selector & 1 == 0 { &DEFAULT } else { &SMALL };
    let mut http = connection(config);
    let mut out = Vec::new();
    let step = offer(&mut http, input, &mut out);
    assert!(step.consumed <= input.len());
    if step.close {
        let mut more = Vec::new();
        let again = offer(&mut http, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut more);
        assert!(again.close && more.is_empty(), "input read after close");
    } else {
        end(&mut http, &input[step.consumed..], &mut out);
    }
    check_output(&out, step.close);

    // 100 Continue depends on whether the body has arrived: the one exception.
    let expects = input
        .windows(12)
        .any(|w| w.eq_ignore_ascii_case(b"100-continue"));
    if !expects && input.len() > 2 {
        let cuts = [
            usize::from(selector) % input.len(),
            (usize::from(selector) * 7 + 1) % input.len(),
            input.len() / 2,
        ];
        assert_eq!(
            feed_in_reads(config, routes(), input, &[]),
            feed_in_reads(config, routes(), input, &cuts),
            "the split changed the output"
        );
    }
});
