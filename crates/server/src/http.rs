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

/// Parses a `Range: bytes=…` header against a blob of `size` bytes. One range only;
/// anything unsatisfiable is a 416 that tells the client the size.
pub fn parse_range(value: Option<&str>, size: u64) -> Result<Option<ByteRange>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let bad = || {
        ApiError::new(
            ErrorCode::RangeInvalid,
            format!("range {value:?} cannot be served from {size} bytes"),
        )
        .with_header(header::CONTENT_RANGE, format!("bytes */{size}"))
    };
    let spec = value.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(bad());
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        (true, false) => {
            // The last `n` bytes.
            let n: u64 = b.parse().map_err(|_| bad())?;
            if n == 0 {
                return Err(bad());
            }
            ByteRange {
                start: size.saturating_sub(n),
                end: size,
            }
        }
        (false, _) => {
            let start: u64 = a.parse().map_err(|_| bad())?;
            let end = if b.is_empty() {
                size
            } else {
                b.parse::<u64>()
                    .map_err(|_| bad())?
                    .saturating_add(1)
                    .min(size)
            };
            if start >= size || start >= end {
                return Err(bad());
            }
            ByteRange { start, end }
        }
        (true, true) => return Err(bad()),
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

    fn r(v: &str, size: u64) -> Option<(u64, u64)> {
        parse_range(Some(v), size)
            .ok()
            .map(|r| r.map(|r| (r.start, r.end)).unwrap())
    }

    #[test]
    fn ranges() {
        assert_eq!(r("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(r("bytes=90-", 100), Some((90, 100)));
        assert_eq!(r("bytes=90-200", 100), Some((90, 100)));
        assert_eq!(r("bytes=-10", 100), Some((90, 100)));
        assert_eq!(r("bytes=100-", 100), None);
        assert_eq!(r("bytes=5-4", 100), None);
        assert_eq!(r("bytes=0-1,3-4", 100), None);
        assert_eq!(r("items=0-1", 100), None);
        assert_eq!(r("bytes=-0", 100), None);
        assert_eq!(r("bytes=a-b", 100), None);
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
