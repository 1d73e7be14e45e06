//! The API explorer: Swagger UI, served from the binary, over `/api/v0/openapi.json`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `GET /explorer`.
pub async fn page() -> Response {
    (
        StatusCode::NOT_IMPLEMENTED,
        "the API explorer is being built\n",
    )
        .into_response()
}
