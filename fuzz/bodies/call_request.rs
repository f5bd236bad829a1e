//! The Inngest call-request decoder: any bytes either decode into a request whose memo turns
//! into a journal, or give an error message; the signing canonicalizer never panics.

/// The target body.
pub fn run(data: &[u8]) {
    match cairn_http::call::decode(data) {
        Ok(request) => {
            let records = cairn_http::call::journal(&request);
            assert!(records.len() <= request.steps.len());
        }
        Err(error) => assert!(error.to_string().starts_with("malformed call request: ")),
    }
    let _ = cairn_http::signing::canonical(data);
}
