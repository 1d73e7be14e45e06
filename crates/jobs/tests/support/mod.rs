//! Helpers shared by the integration tests.

pub mod scan_images;
