//! A POST /data body, as the service turns it into a document: never a panic, and
//! whatever is accepted is valid BSON that reads back as the same document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mongo_api::json::{parse_document, write_document};
use mongodb::bson::RawDocumentBuf;

fuzz_target!(|body: &[u8]| {
    let Ok(document) = parse_document(body) else {
        return;
    };
    let raw = RawDocumentBuf::from_document(&document).expect("an accepted document is valid BSON");
    let mut json = Vec::new();
    write_document(&raw, &mut json, false).expect("a stored document encodes as JSON");
    let again = parse_document(&json).expect("the service's own JSON parses");
    assert_eq!(again, document, "the round trip changed the document");
});
