//! The one error type of the registry. Every failure a handler can meet becomes an [`Error`] carrying an OCI error
//! code; this module alone decides which HTTP status each code gets and how the OCI error body looks, so no handler
//! picks a status by hand.

use http::StatusCode;
use serde_json::{json, Value};
use std::fmt;

/// Error codes of the OCI Distribution Spec (plus the few distribution adds), with their HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    PaginationNumberInvalid,
    RangeInvalid,
    PayloadTooLarge,
    MethodNotAllowed,
    NotFound,
    Unavailable,
    Unknown,
}

impl ErrorCode {
    /// The code string of the OCI error body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::TagInvalid => "TAG_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported | ErrorCode::MethodNotAllowed => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::PayloadTooLarge => "SIZE_INVALID",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// The HTTP status this code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown
            | ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid
            | ErrorCode::TagInvalid
            | ErrorCode::PaginationNumberInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
            ErrorCode::Unsupported | ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn default_message(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "blob unknown to registry",
            ErrorCode::BlobUploadInvalid => "blob upload invalid",
            ErrorCode::BlobUploadUnknown => "blob upload unknown to registry",
            ErrorCode::DigestInvalid => "provided digest did not match uploaded content",
            ErrorCode::ManifestBlobUnknown => "manifest references a manifest or blob unknown to registry",
            ErrorCode::ManifestInvalid => "manifest invalid",
            ErrorCode::ManifestUnknown => "manifest unknown to registry",
            ErrorCode::NameInvalid => "invalid repository name",
            ErrorCode::NameUnknown => "repository name not known to registry",
            ErrorCode::SizeInvalid => "provided length did not match content length",
            ErrorCode::TagInvalid => "invalid tag",
            ErrorCode::Unauthorized => "authentication required",
            ErrorCode::Denied => "requested access to the resource is denied",
            ErrorCode::Unsupported => "the operation is unsupported",
            ErrorCode::MethodNotAllowed => "method not allowed for this endpoint",
            ErrorCode::TooManyRequests => "too many requests",
            ErrorCode::PaginationNumberInvalid => "invalid number of results requested",
            ErrorCode::RangeInvalid => "requested range not satisfiable",
            ErrorCode::PayloadTooLarge => "payload too large",
            ErrorCode::NotFound => "no such endpoint",
            ErrorCode::Unavailable => "service unavailable",
            ErrorCode::Unknown => "unknown error",
        }
    }
}

/// A registry error: an OCI code, a message, optional detail and extra response headers (e.g. `Range` on a 416).
#[derive(Debug, Clone)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<Value>,
    pub headers: Vec<(&'static str, String)>,
}

/// Result type of the registry core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with the code's default message.
    pub fn new(code: ErrorCode) -> Self {
        Error { code, message: code.default_message().to_string(), detail: None, headers: Vec::new() }
    }

    /// An error with a message of its own.
    pub fn msg(code: ErrorCode, message: impl Into<String>) -> Self {
        Error { code, message: message.into(), detail: None, headers: Vec::new() }
    }

    /// Attach a detail value (shown to the client: never put secrets here).
    pub fn with_detail(mut self, detail: impl Into<Value>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Attach a response header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// A failure of a storage backend. The message reaches the log, not the client.
    pub fn storage(context: impl fmt::Display) -> Self {
        Error::msg(ErrorCode::Unknown, "storage backend failed").with_detail(context.to_string())
    }

    /// Stored upload parts no longer match what the upload session recorded (a part replaced, missing, or the
    /// multipart upload gone): the upload cannot complete and the client must start it again.
    pub fn parts_mismatch(context: impl fmt::Display) -> Self {
        Error::msg(ErrorCode::BlobUploadInvalid, "the stored parts of this upload do not match its record; start the upload again")
            .with_detail(context.to_string())
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The OCI error body: `{"errors":[{"code","message","detail"}]}`.
    pub fn body(&self) -> Value {
        // Backend failures keep their context out of the response: it may name hosts or keys.
        let detail = if self.code == ErrorCode::Unknown { None } else { self.detail.clone() };
        json!({ "errors": [ { "code": self.code.as_str(), "message": self.message, "detail": detail } ] })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_oci_shape() {
        let e = Error::new(ErrorCode::BlobUnknown).with_detail("sha256:abc");
        let b = e.body();
        assert_eq!(b["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(b["errors"][0]["detail"], "sha256:abc");
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn storage_detail_is_not_shown() {
        let e = Error::storage("s3 at secret-host failed");
        assert!(e.body()["errors"][0]["detail"].is_null());
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
