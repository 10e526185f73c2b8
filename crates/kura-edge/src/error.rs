//! The one error type that crosses the wire, and its two renderings.
//!
//! Each service has its own error enum and converts it once, exhaustively, into
//! [`ApiError`]; the edge turns an `ApiError` into the bytes of the caller's protocol:
//!
//! - JSON 1.1 (KMS, CloudTrail): `{"__type":"<Code>","message":"<text>"}`
//! - Query (IAM, STS, RDS): `<ErrorResponse><Error><Type>Sender</Type><Code>…</Code>
//!   <Message>…</Message></Error><RequestId>…</RequestId></ErrorResponse>`

use std::borrow::Cow;

use crate::xml::escape;

/// An AWS error as the client will see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The error code SDKs match on (`__type` in JSON, `Code` in XML).
    pub code: Cow<'static, str>,
    /// Human-readable message; AWS sends some errors with an empty one.
    pub message: String,
    /// HTTP status. Client errors are 4xx, server faults 5xx (SDKs retry those).
    pub status: u16,
}

impl ApiError {
    pub fn new(
        code: impl Into<Cow<'static, str>>,
        status: u16,
        message: impl Into<String>,
    ) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            status,
        }
    }

    /// A 400 client error.
    pub fn client(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(code, 400, message)
    }

    /// A 500 server fault. The message is generic on purpose: internals are logged with
    /// the request id, never sent to the caller.
    pub fn internal(code: &'static str) -> Self {
        Self::new(
            code,
            500,
            "We encountered an internal error. Please try again.",
        )
    }

    /// A server fault whose detail goes to the log (with `code`), never to the caller.
    pub fn internal_logged(code: &'static str, detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, code, "internal error");
        Self::internal(code)
    }

    pub fn is_server_fault(&self) -> bool {
        self.status >= 500
    }

    /// The JSON 1.1 body.
    pub fn json_body(&self) -> Vec<u8> {
        let body = serde_json::json!({ "__type": self.code, "message": self.message });
        serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// The Query protocol `ErrorResponse` body.
    pub fn xml_body(&self, request_id: &str) -> Vec<u8> {
        let fault = if self.is_server_fault() {
            "Receiver"
        } else {
            "Sender"
        };
        format!(
            "<ErrorResponse><Error><Type>{fault}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
            escape(&self.code),
            escape(&self.message),
            escape(request_id)
        )
        .into_bytes()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_json_and_xml() {
        let e = ApiError::client("DisabledException", "arn:aws:kms:r:1:key/k is disabled.");
        let json: serde_json::Value = serde_json::from_slice(&e.json_body()).unwrap_or_default();
        assert_eq!(json["__type"], "DisabledException");
        assert_eq!(json["message"], "arn:aws:kms:r:1:key/k is disabled.");
        let xml =
            String::from_utf8(ApiError::client("A<B", "x & y").xml_body("rid")).unwrap_or_default();
        assert_eq!(
            xml,
            "<ErrorResponse><Error><Type>Sender</Type><Code>A&lt;B</Code><Message>x &amp; y</Message></Error><RequestId>rid</RequestId></ErrorResponse>"
        );
        assert!(ApiError::internal("KMSInternalException").is_server_fault());
    }
}
