//! Reads arbitrary bytes as the parts of a request that SigV4 parses before anything is
//! verified: the Authorization header, X-Amz-Date, the security token, and the query
//! string (presigned requests). Any panic is a bug in kura-edge's SigV4 code; every
//! malformed request must come back as an error.
#![no_main]

use http::{HeaderMap, HeaderValue};
use kura_edge::sigv4::{RequestParts, decode_query, parse_claim};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Newline-separated: authorization, x-amz-date, x-amz-security-token, query.
    let mut parts = data.split(|b| *b == b'\n');
    let mut headers = HeaderMap::new();
    for name in ["authorization", "x-amz-date", "x-amz-security-token"] {
        if let Some(value) = parts.next().and_then(|v| HeaderValue::from_bytes(v).ok()) {
            headers.insert(name, value);
        }
    }
    let query = parts
        .next()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let _ = decode_query(&query);
    let request = RequestParts {
        method: "POST",
        path: "/",
        query: &query,
        headers: &headers,
        body: b"{}",
    };
    if let Ok(claim) = parse_claim(&request) {
        let _ = claim.scope();
        let _ = claim.check_scope("us-east-1", "kms");
    }
});
