//! AWS Signature Version 4: parsing and verifying the header and presigned-query forms.
//!
//! Reference: "Create a signed AWS API request" and "Elements of an AWS API request
//! signature" in the IAM user guide. The steps, in the order a verifier needs them:
//!
//! 1. read the claim: access key, credential scope, signed headers, signature, date
//!    ([`parse_claim`]);
//! 2. look up the secret for the access key (the caller's job: [`crate::CredentialResolver`]);
//! 3. check the scope and the clock ([`SignatureClaim::check_scope`], [`SignatureClaim::check_time`]);
//! 4. rebuild the canonical request and the string to sign from what was received
//!    ([`string_to_sign`]), derive the signing key ([`signing_key`]) and compare the
//!    signatures in constant time ([`verify_signature`]).
//!
//! Deliberate choices, stricter than some AWS services and never looser:
//! - the payload hash is always computed from the body received; an
//!   `x-amz-content-sha256` header must agree with it (no `UNSIGNED-PAYLOAD` for
//!   these services, so the body — the operation's parameters — is always signed);
//! - `host`, and `x-amz-target` / `x-amz-security-token` / `x-amz-content-sha256` when
//!   present, must be among the signed headers;
//! - the request time must be within [`MAX_CLOCK_SKEW_SECS`] of the server clock.
//!
//! Like every AWS service except S3, the canonical URI is the request path URI-encoded a
//! second time (botocore and the AWS SDKs do the same on the signing side).

use http::HeaderMap;
use kura_crypto::{constant_time_eq, hmac_sha256, sha256_hex};
use kura_types::Timestamp;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// AWS accepts requests whose date is within five minutes of its own clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 5 * 60;
/// Longest lifetime a presigned request may ask for (seven days, as AWS).
pub const MAX_PRESIGNED_EXPIRES_SECS: i64 = 7 * 24 * 3600;

/// Why a signature was refused. The edge maps each variant to the protocol's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// No Authorization header and no presigned query parameters.
    #[error("Missing Authentication Token")]
    Missing,
    /// An authorization was present but lacks required parts.
    #[error("{0}")]
    Incomplete(String),
    /// The scope, date or signature do not check out.
    #[error("{0}")]
    Invalid(String),
    /// The signature is outside its validity window.
    #[error("{0}")]
    Expired(String),
}

pub const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// The parts of an HTTP request a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path exactly as received (still percent-encoded).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// What a request claims about its signature, before verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureClaim {
    pub access_key_id: String,
    /// `YYYYMMDD` from the credential scope.
    pub scope_date: String,
    pub region: String,
    pub service: String,
    /// Lowercase header names, as listed by the client.
    pub signed_headers: Vec<String>,
    /// Lowercase hex.
    pub signature: String,
    /// The raw `X-Amz-Date` value and its parsed time.
    pub amz_date: String,
    pub time: Timestamp,
    /// Seconds of validity for presigned requests.
    pub expires_secs: Option<i64>,
    pub security_token: Option<String>,
    pub presigned: bool,
}

impl SignatureClaim {
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.scope_date, self.region, self.service
        )
    }

    /// Checks that the scope names this server's region and the service the request is for.
    pub fn check_scope(&self, region: &str, service: &str) -> Result<(), SigV4Error> {
        if self.amz_date.get(..8) != Some(self.scope_date.as_str()) {
            return Err(SigV4Error::Invalid(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{}'.",
                self.scope_date,
                self.amz_date.get(..8).unwrap_or_default(),
                self.amz_date
            )));
        }
        if self.region != region {
            return Err(SigV4Error::Invalid(format!(
                "Credential should be scoped to a valid region. This kura server serves region '{region}', the request was signed for '{}'.",
                self.region
            )));
        }
        if self.service != service {
            return Err(SigV4Error::Invalid(format!(
                "Credential should be scoped to correct service: '{service}'. "
            )));
        }
        Ok(())
    }

    /// Checks the request time against the server clock (and presigned expiry).
    pub fn check_time(&self, now: Timestamp) -> Result<(), SigV4Error> {
        let skew = MAX_CLOCK_SKEW_SECS;
        let minutes = skew / 60;
        let signed = self.time.secs();
        let now_secs = now.secs();
        if let Some(expires) = self.expires_secs {
            if now_secs > signed.saturating_add(expires) {
                return Err(SigV4Error::Expired(format!(
                    "Signature expired: {} is now earlier than {} ({} - {expires} sec.)",
                    Timestamp::from_secs(signed.saturating_add(expires)).amz_date(),
                    now.amz_date(),
                    now.amz_date(),
                )));
            }
        } else if signed < now_secs - skew {
            return Err(SigV4Error::Expired(format!(
                "Signature expired: {} is now earlier than {} ({} - {minutes} min.)",
                self.amz_date,
                Timestamp::from_secs(now_secs - skew).amz_date(),
                now.amz_date()
            )));
        }
        if signed > now_secs + skew {
            return Err(SigV4Error::Expired(format!(
                "Signature not yet current: {} is still later than {} ({} + {minutes} min.)",
                self.amz_date,
                Timestamp::from_secs(now_secs + skew).amz_date(),
                now.amz_date()
            )));
        }
        Ok(())
    }
}

/// Reads the signature claim from the Authorization header or the presigned query.
pub fn parse_claim(parts: &RequestParts<'_>) -> Result<SignatureClaim, SigV4Error> {
    if let Some(value) = parts.headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| {
            SigV4Error::Incomplete("Authorization header is not valid ASCII.".into())
        })?;
        return parse_header_claim(value, parts.headers);
    }
    let query = decode_query(parts.query);
    if query
        .iter()
        .any(|(k, _)| k == "X-Amz-Signature" || k == "X-Amz-Credential")
    {
        return parse_presigned_claim(&query);
    }
    Err(SigV4Error::Missing)
}

fn parse_header_claim(value: &str, headers: &HeaderMap) -> Result<SignatureClaim, SigV4Error> {
    let Some(rest) = value.strip_prefix(ALGORITHM) else {
        let algorithm = value.split_whitespace().next().unwrap_or_default();
        return Err(SigV4Error::Incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}'. Use {ALGORITHM}."
        )));
    };
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for component in rest.split(',') {
        let component = component.trim();
        if let Some(v) = component.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = component.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = component.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let amz_date = header_str(headers, "x-amz-date");
    let mut missing = String::new();
    if credential.is_none() {
        missing.push_str("Authorization header requires 'Credential' parameter. ");
    }
    if signature.is_none() {
        missing.push_str("Authorization header requires 'Signature' parameter. ");
    }
    if signed_headers.is_none() {
        missing.push_str("Authorization header requires 'SignedHeaders' parameter. ");
    }
    if amz_date.is_none() {
        missing.push_str(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ",
        );
    }
    let (Some(credential), Some(signed_headers), Some(signature), Some(amz_date)) =
        (credential, signed_headers, signature, amz_date)
    else {
        return Err(SigV4Error::Incomplete(format!(
            "{missing}Authorization={value}"
        )));
    };
    build_claim(ClaimParts {
        credential,
        signed_headers,
        signature,
        amz_date,
        expires: None,
        security_token: header_str(headers, "x-amz-security-token").map(str::to_owned),
        presigned: false,
    })
}

fn parse_presigned_claim(query: &[(String, String)]) -> Result<SignatureClaim, SigV4Error> {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let algorithm = param("X-Amz-Algorithm").unwrap_or_default();
    if algorithm != ALGORITHM {
        return Err(SigV4Error::Incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}'. Use {ALGORITHM}."
        )));
    }
    let required = |name: &str| {
        param(name).ok_or_else(|| {
            SigV4Error::Incomplete(format!(
                "Query-string authentication requires the {name} parameter."
            ))
        })
    };
    let expires = required("X-Amz-Expires")?;
    let expires: i64 = expires
        .parse()
        .ok()
        .filter(|e| (0..=MAX_PRESIGNED_EXPIRES_SECS).contains(e))
        .ok_or_else(|| {
            SigV4Error::Invalid(format!(
                "X-Amz-Expires must be a number of seconds between 0 and {MAX_PRESIGNED_EXPIRES_SECS}."
            ))
        })?;
    build_claim(ClaimParts {
        credential: required("X-Amz-Credential")?,
        signed_headers: required("X-Amz-SignedHeaders")?,
        signature: required("X-Amz-Signature")?,
        amz_date: required("X-Amz-Date")?,
        expires: Some(expires),
        security_token: param("X-Amz-Security-Token").map(str::to_owned),
        presigned: true,
    })
}

struct ClaimParts<'a> {
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
    amz_date: &'a str,
    expires: Option<i64>,
    security_token: Option<String>,
    presigned: bool,
}

fn build_claim(parts: ClaimParts<'_>) -> Result<SignatureClaim, SigV4Error> {
    let scope: Vec<&str> = parts.credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = scope.as_slice() else {
        return Err(SigV4Error::Incomplete(format!(
            "Credential should be of the form ACCESS_KEY/YYYYMMDD/REGION/SERVICE/aws4_request, got '{}'.",
            parts.credential
        )));
    };
    if *terminator != "aws4_request" {
        return Err(SigV4Error::Invalid(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'."
        )));
    }
    if access_key_id.is_empty() {
        return Err(SigV4Error::Incomplete(
            "Credential is missing the access key id.".into(),
        ));
    }
    let time = Timestamp::parse_amz_date(parts.amz_date).ok_or_else(|| {
        SigV4Error::Incomplete(format!(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\", got '{}'.",
            parts.amz_date
        ))
    })?;
    let signed_headers: Vec<String> = parts
        .signed_headers
        .split(';')
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let signature = parts.signature.to_ascii_lowercase();
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SigV4Error::Invalid(SIGNATURE_MISMATCH.into()));
    }
    Ok(SignatureClaim {
        access_key_id: (*access_key_id).to_owned(),
        scope_date: (*date).to_owned(),
        region: (*region).to_owned(),
        service: (*service).to_owned(),
        signed_headers,
        signature,
        amz_date: parts.amz_date.to_owned(),
        time,
        expires_secs: parts.expires,
        security_token: parts.security_token,
        presigned: parts.presigned,
    })
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Headers that must be signed whenever they are present.
const MUST_SIGN_IF_PRESENT: [&str; 3] = [
    "x-amz-target",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// Builds the SigV4 string to sign for `parts` as described by `claim`.
pub fn string_to_sign(
    parts: &RequestParts<'_>,
    claim: &SignatureClaim,
) -> Result<String, SigV4Error> {
    let canonical = canonical_request(parts, claim)?;
    Ok(format!(
        "{ALGORITHM}\n{}\n{}\n{}",
        claim.amz_date,
        claim.scope(),
        sha256_hex(canonical.as_bytes())
    ))
}

/// The canonical request (step 1 of signing), rebuilt from the received request.
pub fn canonical_request(
    parts: &RequestParts<'_>,
    claim: &SignatureClaim,
) -> Result<String, SigV4Error> {
    if !claim.signed_headers.iter().any(|h| h == "host") {
        return Err(SigV4Error::Invalid(
            "'Host' must be a signed header.".into(),
        ));
    }
    for name in MUST_SIGN_IF_PRESENT {
        if !claim.presigned
            && parts.headers.contains_key(name)
            && !claim.signed_headers.iter().any(|h| h == name)
        {
            return Err(SigV4Error::Invalid(format!(
                "'{name}' must be a signed header."
            )));
        }
    }
    let payload_hash = sha256_hex(parts.body);
    if let Some(declared) = header_str(parts.headers, "x-amz-content-sha256")
        && !declared.eq_ignore_ascii_case(&payload_hash)
    {
        return Err(SigV4Error::Invalid(
            "The provided 'x-amz-content-sha256' header does not match what was computed.".into(),
        ));
    }

    let mut out = String::with_capacity(512);
    out.push_str(parts.method);
    out.push('\n');
    out.push_str(&canonical_uri(parts.path));
    out.push('\n');
    out.push_str(&canonical_query(parts.query, claim.presigned));
    out.push('\n');
    for name in &claim.signed_headers {
        out.push_str(name);
        out.push(':');
        out.push_str(&canonical_header_value(parts.headers, name));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&claim.signed_headers.join(";"));
    out.push('\n');
    out.push_str(&payload_hash);
    Ok(out)
}

/// The SigV4 signing key for a secret and scope.
pub fn signing_key(secret: &[u8], date: &str, region: &str, service: &str) -> [u8; 32] {
    let mut prefixed = kura_crypto::SecretBytes::zeroed(4 + secret.len());
    prefixed.expose_mut()[..4].copy_from_slice(b"AWS4");
    prefixed.expose_mut()[4..].copy_from_slice(secret);
    let k_date = hmac_sha256(prefixed.expose(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// The lowercase hex signature of `string_to_sign`.
pub fn signature(signing_key: &[u8; 32], string_to_sign: &str) -> String {
    hmac_sha256(signing_key, string_to_sign.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares the claimed signature with the expected one in constant time.
pub fn verify_signature(
    claim: &SignatureClaim,
    signing_key: &[u8; 32],
    string_to_sign: &str,
) -> Result<(), SigV4Error> {
    let expected = signature(signing_key, string_to_sign);
    if constant_time_eq(expected.as_bytes(), claim.signature.as_bytes()) {
        Ok(())
    } else {
        Err(SigV4Error::Invalid(SIGNATURE_MISMATCH.into()))
    }
}

/// URI-encodes per SigV4: everything except `A-Z a-z 0-9 - _ . ~` (and `/` when asked).
fn uri_encode(input: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for b in input.bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn canonical_uri(raw_path: &str) -> String {
    let normalized = normalize_path(raw_path);
    uri_encode(&normalized, true)
}

/// Removes `.` and `..` segments, as the SDKs do before signing non-S3 requests.
fn normalize_path(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut joined = segments.join("/");
    if !joined.starts_with('/') {
        joined.insert(0, '/');
    }
    if path.ends_with('/') && !joined.ends_with('/') {
        joined.push('/');
    }
    joined
}

/// Splits a raw query string into percent-decoded (name, value) pairs, in order.
pub fn decode_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

fn canonical_query(raw: &str, presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = decode_query(raw)
        .into_iter()
        .filter(|(name, _)| !(presigned && name == "X-Amz-Signature"))
        .map(|(name, value)| (uri_encode(&name, false), uri_encode(&value, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_header_value(headers: &HeaderMap, name: &str) -> String {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| collapse_spaces(&String::from_utf8_lossy(v.as_bytes())))
        .collect();
    values.join(",")
}

fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Signs a request the way an SDK would, returning the `Authorization` header value.
/// Used by tests and by the load generator, never by the server.
pub fn authorization_header(
    parts: &RequestParts<'_>,
    access_key_id: &str,
    secret: &[u8],
    region: &str,
    service: &str,
    time: Timestamp,
) -> Result<String, SigV4Error> {
    let mut signed_headers: Vec<String> = parts
        .headers
        .keys()
        .map(|k| k.as_str().to_ascii_lowercase())
        .filter(|k| k == "host" || k == "content-type" || k.starts_with("x-amz-"))
        .collect();
    signed_headers.sort();
    signed_headers.dedup();
    let amz_date = time.amz_date();
    let claim = SignatureClaim {
        access_key_id: access_key_id.to_owned(),
        scope_date: amz_date.get(..8).unwrap_or_default().to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers,
        signature: String::new(),
        amz_date,
        time,
        expires_secs: None,
        security_token: None,
        presigned: false,
    };
    let to_sign = string_to_sign(parts, &claim)?;
    let key = signing_key(secret, &claim.scope_date, region, service);
    Ok(format!(
        "{ALGORITHM} Credential={access_key_id}/{}, SignedHeaders={}, Signature={}",
        claim.scope(),
        claim.signed_headers.join(";"),
        signature(&key, &to_sign)
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http::HeaderValue;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    /// The worked example from the AWS General Reference ("Signature Version 4 signing
    /// process": IAM ListUsers, 2015-08-30).
    fn iam_example_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        headers.insert("host", HeaderValue::from_static("iam.amazonaws.com"));
        headers.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
        headers
    }

    #[test]
    fn aws_documentation_example_verifies() {
        let mut headers = iam_example_headers();
        headers.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            ),
        );
        let parts = RequestParts {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: &headers,
            body: b"",
        };
        let claim = parse_claim(&parts).unwrap();
        assert_eq!(claim.access_key_id, "AKIDEXAMPLE");
        let canonical = canonical_request(&parts, &claim).unwrap();
        assert_eq!(
            sha256_hex(canonical.as_bytes()),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let to_sign = string_to_sign(&parts, &claim).unwrap();
        let key = signing_key(SECRET.as_bytes(), "20150830", "us-east-1", "iam");
        assert!(verify_signature(&claim, &key, &to_sign).is_ok());
        let wrong_key = signing_key(b"other", "20150830", "us-east-1", "iam");
        assert_eq!(
            verify_signature(&claim, &wrong_key, &to_sign),
            Err(SigV4Error::Invalid(SIGNATURE_MISMATCH.into()))
        );
    }

    fn signed_kms_request(body: &'static [u8], time: Timestamp) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("127.0.0.1:4566"));
        headers.insert(
            "x-amz-target",
            HeaderValue::from_static("TrentService.ListKeys"),
        );
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        headers.insert(
            "x-amz-date",
            HeaderValue::from_str(&time.amz_date()).unwrap(),
        );
        let parts = RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body,
        };
        let auth = authorization_header(
            &parts,
            "AKIDEXAMPLE",
            SECRET.as_bytes(),
            "us-east-1",
            "kms",
            time,
        )
        .unwrap();
        headers.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        headers
    }

    fn verify(headers: &HeaderMap, body: &[u8]) -> Result<(), SigV4Error> {
        let parts = RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers,
            body,
        };
        let claim = parse_claim(&parts)?;
        let key = signing_key(
            SECRET.as_bytes(),
            &claim.scope_date,
            &claim.region,
            &claim.service,
        );
        verify_signature(&claim, &key, &string_to_sign(&parts, &claim)?)
    }

    #[test]
    fn own_signer_round_trips_and_body_is_covered() {
        let time = Timestamp::from_secs(1_790_000_000);
        let headers = signed_kms_request(b"{}", time);
        assert_eq!(verify(&headers, b"{}"), Ok(()));
        assert!(verify(&headers, b"{\"Limit\":1}").is_err());
    }

    #[test]
    fn target_header_must_be_signed() {
        let time = Timestamp::from_secs(1_790_000_000);
        let mut headers = signed_kms_request(b"{}", time);
        let auth = headers["authorization"]
            .to_str()
            .unwrap()
            .replace(";x-amz-target", "");
        headers.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        assert!(matches!(
            verify(&headers, b"{}"),
            Err(SigV4Error::Invalid(_))
        ));
    }

    #[test]
    fn missing_and_incomplete_authorizations() {
        let headers = HeaderMap::new();
        let parts = RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: b"",
        };
        assert_eq!(parse_claim(&parts), Err(SigV4Error::Missing));

        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/kms/aws4_request",
            ),
        );
        let parts = RequestParts {
            headers: &headers,
            ..parts
        };
        let Err(SigV4Error::Incomplete(message)) = parse_claim(&parts) else {
            unreachable!("expected an incomplete signature");
        };
        assert!(message.contains("requires 'Signature' parameter"));
        assert!(message.contains("'X-Amz-Date'"));

        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        let parts = RequestParts {
            headers: &headers,
            ..parts
        };
        assert!(matches!(
            parse_claim(&parts),
            Err(SigV4Error::Incomplete(_))
        ));
    }

    #[test]
    fn clock_skew_window() {
        let time = Timestamp::from_secs(1_790_000_000);
        let headers = signed_kms_request(b"{}", time);
        let parts = RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: b"{}",
        };
        let claim = parse_claim(&parts).unwrap();
        assert!(claim.check_time(time.plus_millis(299_000)).is_ok());
        let Err(SigV4Error::Expired(message)) = claim.check_time(time.plus_millis(301_000)) else {
            unreachable!("expected expiry");
        };
        assert!(message.starts_with("Signature expired: "));
        assert!(message.ends_with(" - 5 min.)"));
        assert!(matches!(
            claim.check_time(time.plus_millis(-301_000)),
            Err(SigV4Error::Expired(_))
        ));
    }

    #[test]
    fn scope_must_match_region_and_service() {
        let time = Timestamp::from_secs(1_790_000_000);
        let headers = signed_kms_request(b"{}", time);
        let parts = RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: b"{}",
        };
        let claim = parse_claim(&parts).unwrap();
        assert!(claim.check_scope("us-east-1", "kms").is_ok());
        assert!(claim.check_scope("eu-west-1", "kms").is_err());
        assert!(claim.check_scope("us-east-1", "iam").is_err());
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a/./b/../c"), "/a/c");
        assert_eq!(canonical_uri("/a%20b"), "/a%2520b");
        assert_eq!(canonical_query("b=2&a=1&a=0", false), "a=0&a=1&b=2");
        assert_eq!(canonical_query("x=a%20b&y=%2F", false), "x=a%20b&y=%2F");
        assert_eq!(canonical_query("X-Amz-Signature=s&A=1", true), "A=1");
        assert_eq!(collapse_spaces("  a   b  "), "a b");
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_authorization_never_panics(value in "\\PC{0,300}", query in "\\PC{0,300}") {
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert("authorization", v);
            }
            headers.insert("x-amz-date", HeaderValue::from_static("20260101T000000Z"));
            let parts = RequestParts { method: "POST", path: "/", query: &query, headers: &headers, body: b"" };
            if let Ok(claim) = parse_claim(&parts) {
                let _ = string_to_sign(&parts, &claim);
            }
        }
    }
}
