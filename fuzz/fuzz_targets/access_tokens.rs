//! Why this exists: the `Authorization: Bearer …` value is untrusted text that reaches
//! `marquee_auth::TokenIssuer::verify` (jsonwebtoken with HS256 pinned) on every authenticated
//! request. Verification must neither panic nor accept anything it did not sign: an input the
//! fuzzer made up can never carry a valid HMAC under our secret, so `verify` must return `Err`.
//!
//! Each input is tried twice: as raw text (lossy UTF-8), and split into three parts that are
//! base64url-encoded and joined with dots, so the fuzzer also reaches the JWT header and claims
//! decoding instead of stopping at the base64 layer.

#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use marquee_auth::{SigningSecret, TokenIssuer};
use std::sync::OnceLock;
use std::time::Duration;

fn issuer() -> &'static TokenIssuer {
    static ISSUER: OnceLock<TokenIssuer> = OnceLock::new();
    ISSUER.get_or_init(|| {
        let secret = SigningSecret::new(vec![7u8; 32]).expect("32 bytes is long enough");
        TokenIssuer::new(&secret, Duration::from_secs(3600))
    })
}

fn assert_refused(token: &str) {
    let result = issuer().verify(token);
    assert!(
        result.is_err(),
        "a token the fuzzer made up verified: {token:?} -> {result:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    assert_refused(&String::from_utf8_lossy(data));

    // Structured form: `b64(header).b64(claims).b64(signature)`, split at the first two 0xFF
    // bytes (0xFF never occurs in UTF-8, so it is a cheap separator for the fuzzer to learn).
    let mut parts = data.splitn(3, |byte| *byte == 0xFF);
    let header = parts.next().unwrap_or_default();
    let claims = parts.next().unwrap_or_default();
    let signature = parts.next().unwrap_or_default();
    let token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims),
        URL_SAFE_NO_PAD.encode(signature)
    );
    assert_refused(&token);
});
