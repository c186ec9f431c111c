//! The query string of GET /data: never a panic; accepted limits are in range, and an
//! accepted cursor, issued again by the service, is accepted again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use codec::paging::{self, Params};
use bson::RawBson;

fuzz_target!(|query: &str| {
    let Ok(params) = Params::parse(query, 1000) else {
        return;
    };
    if let Some(limit) = params.limit {
        assert!((1..=1000).contains(&limit));
    }
    if let Some(after) = params.after {
        let raw = RawBson::try_from(after).expect("a decoded cursor holds a BSON value");
        let token = paging::encode(raw.as_raw_bson_ref());
        assert!(
            paging::decode(&token).is_some(),
            "a cursor we issue must be accepted"
        );
    }
});
