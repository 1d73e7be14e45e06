//! Every backend in this crate against the shared suite.

mod fs {
    use wharf_blobstore::FsBlobStore;
    async fn make() -> (FsBlobStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (FsBlobStore::open(dir.path()).unwrap(), dir)
    }
    wharf_blobstore::blobstore_testsuite!(make());
}

mod memory {
    use wharf_blobstore::MemoryBlobStore;
    async fn make() -> (MemoryBlobStore, ()) {
        (MemoryBlobStore::new(), ())
    }
    wharf_blobstore::blobstore_testsuite!(make());
}

/// Against a real S3-compatible server: `scripts/test.sh` starts one (moto) and sets
/// `WHARF_TEST_S3_ENDPOINT` with a bucket `wharf-test`; each test gets its own prefix.
mod s3 {
    use wharf_blobstore::{S3BlobStore, S3Config};

    /// A store under a prefix of its own in the test server's bucket.
    pub fn store(prefix: &str, max_copy_bytes: Option<u64>) -> S3BlobStore {
        let Ok(endpoint) = std::env::var("WHARF_TEST_S3_ENDPOINT") else {
            panic!("WHARF_TEST_S3_ENDPOINT is not set: run the suite with scripts/test.sh, which starts an S3 server");
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let config = S3Config {
            bucket: "wharf-test".into(),
            prefix: format!("{prefix}{}-{nanos}", std::process::id()),
            endpoint: Some(endpoint),
            region: Some("us-east-1".into()),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            max_copy_bytes,
        };
        S3BlobStore::open(&config).unwrap()
    }

    async fn make() -> (S3BlobStore, ()) {
        (store("t", None), ())
    }

    wharf_blobstore::blobstore_testsuite!(make());

    /// The same suite with a copy limit of 1 MiB instead of S3's 5 GiB: every single
    /// chunk above it is committed as a layer over 5 GiB would be, streamed into a
    /// multipart upload rather than copied in one request.
    mod over_the_copy_limit {
        async fn make() -> (wharf_blobstore::S3BlobStore, ()) {
            (super::store("c", Some(1 << 20)), ())
        }

        wharf_blobstore::blobstore_testsuite!(make());
    }
}
