//! Small HTTP helpers shared by the handlers: query strings, ranges, bodies, headers.

use std::io;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use futures_util::{StreamExt, TryStreamExt};
use wharf_oci::ErrorCode;
use wharf_registry::{ByteRange, ByteStream, ChunkRange};

use crate::error::ApiError;

pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
pub const DOCKER_API_VERSION: HeaderName =
    HeaderName::from_static("docker-distribution-api-version");
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// The value of query parameter `key`, decoded.
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// A request body as a stream of bytes.
pub fn body_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(io::Error::other))
}

/// Reads a whole body, refusing more than `limit` bytes.
pub async fn body_bytes(body: Body, limit: u64) -> Result<bytes::Bytes, BodyError> {
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Read(e.to_string()))?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

pub enum BodyError {
    TooLarge,
    Read(String),
}

pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::new(ErrorCode::SizeInvalid, "Content-Length is not a number")),
    }
}

pub fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Parses a `Range: bytes=…` header against a blob of `size` bytes. A header we do not
/// understand (another unit, several ranges, bad syntax) is ignored and the whole blob
/// served, as RFC 9110 asks; a well-formed range outside the blob is a 416 that tells
/// the client the size.
pub fn parse_range(value: Option<&str>, size: u64) -> Result<Option<ByteRange>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let unsatisfiable = || {
        ApiError::new(
            ErrorCode::RangeInvalid,
            format!("range {value:?} cannot be served from {size} bytes"),
        )
        .with_header(header::CONTENT_RANGE, format!("bytes */{size}"))
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    let Some((a, b)) = spec.split_once('-').filter(|_| !spec.contains(',')) else {
        return Ok(None);
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let range = match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => {
            // The last `n` bytes.
            let Some(n) = number(b) else { return Ok(None) };
            if n == 0 || size == 0 {
                return Err(unsatisfiable());
            }
            ByteRange {
                start: size.saturating_sub(n),
                end: size,
            }
        }
        (false, _) => {
            let Some(start) = number(a) else {
                return Ok(None);
            };
            let end = if b.trim().is_empty() {
                size
            } else {
                let Some(last) = number(b) else {
                    return Ok(None);
                };
                if last < start {
                    return Ok(None); // syntactically invalid, so ignored
                }
                last.saturating_add(1).min(size)
            };
            if start >= size {
                return Err(unsatisfiable());
            }
            ByteRange { start, end }
        }
        (true, true) => return Ok(None),
    };
    Ok(Some(range))
}

/// Parses a PATCH `Content-Range`: `first-last`, also in the `bytes first-last/total`
/// and `bytes=first-last` spellings some clients use.
pub fn parse_content_range(value: Option<&str>) -> Result<Option<ChunkRange>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let bad = || {
        ApiError::new(
            ErrorCode::BlobUploadInvalid,
            format!("Content-Range {value:?} is not first-last"),
        )
    };
    let s = value.trim();
    let s = s
        .strip_prefix("bytes=")
        .or_else(|| s.strip_prefix("bytes "))
        .unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let first = a.trim().parse().map_err(|_| bad())?;
    let last = b.trim().parse().map_err(|_| bad())?;
    Ok(Some(ChunkRange { first, last }))
}

pub fn set(headers: &mut HeaderMap, name: HeaderName, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Ok(None)`: ignored (whole blob); `Err`: 416.
    fn r(v: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
        parse_range(Some(v), size)
            .map(|r| r.map(|r| (r.start, r.end)))
            .map_err(|_| ())
    }

    #[test]
    fn ranges() {
        assert_eq!(r("bytes=0-9", 100), Ok(Some((0, 10))));
        assert_eq!(r("bytes=90-", 100), Ok(Some((90, 100))));
        assert_eq!(r("bytes=90-200", 100), Ok(Some((90, 100))));
        assert_eq!(r("bytes=-10", 100), Ok(Some((90, 100))));
        assert_eq!(r("bytes=100-", 100), Err(()));
        assert_eq!(r("bytes=-0", 100), Err(()));
        // Not understood, so ignored.
        assert_eq!(r("bytes=5-4", 100), Ok(None));
        assert_eq!(r("bytes=0-1,3-4", 100), Ok(None));
        assert_eq!(r("items=0-1", 100), Ok(None));
        assert_eq!(r("bytes=a-b", 100), Ok(None));
    }

    #[test]
    fn content_ranges() {
        let c = |v| {
            parse_content_range(Some(v))
                .ok()
                .flatten()
                .map(|c| (c.first, c.last))
        };
        assert_eq!(c("0-99"), Some((0, 99)));
        assert_eq!(c("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(c("bytes=5-6"), Some((5, 6)));
        assert!(parse_content_range(Some("junk")).is_err());
    }
}
