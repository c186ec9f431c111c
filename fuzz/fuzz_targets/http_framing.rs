//! A request as it arrives on a connection: head, then a chunked body if it says so.
//! Never a panic; what the server accepts, `httparse` (the reference parser) accepts the
//! same way, and nothing ambiguous gets through:
//! - an accepted head parses with `httparse` to the same length, method, target, version
//!   and headers; it has exactly one `Host` on HTTP/1.1, never both `Content-Length` and
//!   `Transfer-Encoding`, and header values free of control characters other than HTAB;
//! - an accepted chunked body is the body a decoder built on `httparse::parse_chunk_size`
//!   reads from the same bytes, ending at the same byte, and every line of its framing
//!   ends in CRLF; fed in pieces of any size (as bytes arrive from a socket, the sizes
//!   taken from the input itself), the decoder reads the same body and ends at the same
//!   byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tiny_http::framing::{self, BodyFraming};

fuzz_target!(|input: &[u8]| {
    let Ok(Some((head, length))) = framing::parse_head(input) else {
        return;
    };
    let mut slots = [httparse::EMPTY_HEADER; framing::MAX_HEADERS];
    let mut reference = httparse::Request::new(&mut slots);
    assert_eq!(
        reference.parse(input),
        Ok(httparse::Status::Complete(length))
    );
    assert_eq!(reference.method, Some(head.method.as_str()));
    assert_eq!(reference.path, Some(head.target.as_str()));
    assert_eq!(reference.version, Some(head.version.1));
    assert_eq!(reference.headers.len(), head.headers.len());
    for (ours, theirs) in head.headers.iter().zip(reference.headers.iter()) {
        assert_eq!(ours.field.as_str().as_str(), theirs.name);
        assert_eq!(ours.value.as_str().as_bytes(), theirs.value);
        assert!(ours
            .value
            .as_str()
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b)));
    }
    let count = |name: &str| {
        head.headers
            .iter()
            .filter(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .count()
    };
    if head.version.1 == 1 {
        assert_eq!(count("host"), 1);
    }
    assert!(count("content-length") == 0 || count("transfer-encoding") == 0);

    if head.body != BodyFraming::Chunked {
        return;
    }
    let body_bytes = &input[length..];
    let mut body = Vec::new();
    let mut decoder = framing::ChunkedDecoder::new();
    let Ok(decoded) = decoder.decode(body_bytes, &mut body, usize::MAX) else {
        return;
    };
    if !decoded.done {
        return;
    }
    let (expected, expected_consumed) =
        reference_decode(body_bytes).expect("the reference decoder accepts what we accept");
    assert_eq!(body, expected);
    assert_eq!(decoded.consumed, expected_consumed);
    // The same bytes in pieces, with room for a few bytes of body at a time.
    let mut pieces = framing::ChunkedDecoder::new();
    let mut again = Vec::new();
    let mut at = 0;
    let mut step = 0;
    while !pieces.is_done() {
        let size = 1 + usize::from(input[step % input.len()] % 7);
        step += 1;
        let end = (at + size).min(body_bytes.len());
        let room = 1 + usize::from(input[step % input.len()] % 5);
        let d = pieces
            .decode(&body_bytes[at..end], &mut again, room)
            .expect("accepted whole, accepted in pieces");
        at += d.consumed;
        assert!(at <= decoded.consumed, "read past the end of the body");
    }
    assert_eq!(again, expected);
    assert_eq!(at, decoded.consumed);
});

/// A chunked decoder on `httparse::parse_chunk_size` (which is lenient: any byte, LF
/// included, inside an extension), asserting CRLF line ends where it can see them.
fn reference_decode(input: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut rest = input;
    let mut body = Vec::new();
    loop {
        let httparse::Status::Complete((line, size)) = httparse::parse_chunk_size(rest).ok()?
        else {
            return None;
        };
        assert!(
            crlf_only(&rest[..line]),
            "a chunk-size line with a bare LF was accepted"
        );
        rest = &rest[line..];
        if size == 0 {
            break;
        }
        let size = usize::try_from(size).ok()?;
        if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
    loop {
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = &rest[..end];
        assert!(
            !line.contains(&b'\n'),
            "a trailer line with a bare LF was accepted"
        );
        rest = &rest[end + 2..];
        if line.is_empty() {
            return Some((body, input.len() - rest.len()));
        }
    }
}

fn crlf_only(line: &[u8]) -> bool {
    line.iter()
        .enumerate()
        .all(|(i, &b)| b != b'\n' || (i > 0 && line[i - 1] == b'\r'))
}
