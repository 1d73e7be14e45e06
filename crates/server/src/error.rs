//! The one place where errors become HTTP responses: the distribution spec's
//! `{"errors":[{"code","message","detail"}]}` body with the code's status.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use wharf_oci::ErrorCode;
use wharf_registry::RegistryError;

use crate::endpoint::EndpointError;

/// The body of every error response: `{"errors":[{"code","message","detail"}]}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub errors: Vec<ErrorItem>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorItem {
    /// The distribution spec's code, e.g. `DENIED`, `UNAUTHORIZED`, `NAME_INVALID`.
    #[schema(example = "DENIED")]
    pub code: &'static str,
    /// The code's fixed message, or what refused the request where clients show only
    /// this (a vulnerability policy's refusal names the vulnerabilities here).
    pub message: String,
    /// What went wrong here.
    pub detail: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A status other than the code's own (a DENIED that must stay a 401 challenge).
    pub status_override: Option<StatusCode>,
    /// A message instead of the code's fixed one.
    pub message: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError {
            code,
            detail: detail.into(),
            headers: Vec::new(),
            status_override: None,
            message: None,
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: String) -> Self {
        if let Ok(v) = HeaderValue::from_str(&value) {
            self.headers.push((name, v));
        }
        self
    }
}

impl ApiError {
    /// The same text as code message and detail, for refusals clients must show.
    pub fn shown(code: ErrorCode, text: impl Into<String>) -> Self {
        let text = text.into();
        let mut e = ApiError::new(code, text.clone());
        e.message = Some(text);
        e
    }
}

impl From<wharf_proxy::ProxyError> for ApiError {
    fn from(e: wharf_proxy::ProxyError) -> Self {
        match e {
            wharf_proxy::ProxyError::Registry(e) => e.into(),
            // The upstream's failure is what the client needs to see (503).
            e @ wharf_proxy::ProxyError::Upstream { .. } => {
                ApiError::shown(ErrorCode::Unavailable, e.to_string())
            }
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let code = e.code();
        if code == ErrorCode::Unknown {
            // Internal details stay in the log; the client gets a pointer to it.
            tracing::error!(error = %e, "request failed");
            return ApiError::new(code, "internal error; the registry's log has the details");
        }
        let mut err = ApiError::new(code, e.to_string());
        if let RegistryError::PullDenied { message, .. } = &e {
            // Registry clients (Docker, containers/image) print `code: message`, not
            // the detail: the refusal's reason goes where they show it.
            err.message = Some(message.clone());
        }
        if let RegistryError::RangeInvalid { size, .. } = e {
            err = err.with_header(axum::http::header::CONTENT_RANGE, format!("bytes */{size}"));
        }
        err
    }
}

impl From<EndpointError> for ApiError {
    fn from(e: EndpointError) -> Self {
        match e {
            EndpointError::NotFound => ApiError::new(ErrorCode::NotFound, "no such endpoint"),
            EndpointError::Name(n) => ApiError::new(ErrorCode::NameInvalid, n.to_string()),
            EndpointError::Digest(d) => ApiError::new(ErrorCode::DigestInvalid, d),
            EndpointError::Reference(wharf_oci::NameError::BadDigest(d)) => {
                ApiError::new(ErrorCode::DigestInvalid, d.to_string())
            }
            EndpointError::Reference(r) => ApiError::new(ErrorCode::TagInvalid, r.to_string()),
            EndpointError::UploadId => ApiError::new(
                ErrorCode::BlobUploadUnknown,
                "upload id is not one this registry issues",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_override.unwrap_or_else(|| {
            StatusCode::from_u16(self.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        let body = ErrorBody {
            errors: vec![ErrorItem {
                code: self.code.code(),
                message: self
                    .message
                    .unwrap_or_else(|| self.code.message().to_string()),
                detail: self.detail,
            }],
        };
        let mut resp = (status, axum::Json(body)).into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}
