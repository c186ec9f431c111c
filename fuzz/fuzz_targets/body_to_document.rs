//! A POST /data body, as the service turns it into a document: never a panic, and
//! whatever is accepted is valid BSON that reads back as the same document, converted
//! within what the converter said it held.
#![no_main]

use libfuzzer_sys::fuzz_target;
use codec::json::{parse_document, write_document, JsonOut};

fuzz_target!(|body: &[u8]| {
    let mut held = 0;
    let Ok(document) = parse_document(body, &mut |total| {
        held = total;
        true
    }) else {
        return;
    };
    document
        .to_document()
        .expect("an accepted document is valid BSON");
    assert!(
        document.as_bytes().len() <= held,
        "the converter held less than it wrote"
    );
    let mut json = Vec::new();
    write_document(
        &document,
        &mut JsonOut::new(&mut json, &mut |_| true),
        false,
    )
    .expect("a stored document encodes as JSON");
    let again = parse_document(&json, &mut |_| true).expect("the service's own JSON parses");
    assert_eq!(again, document, "the round trip changed the document");
});
