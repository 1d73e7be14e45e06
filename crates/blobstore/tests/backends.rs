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

/// An S3-compatible server that `scripts/test.sh` started, with a bucket `wharf-test`;
/// each test gets its own prefix in it.
struct S3Server {
    endpoint: String,
    key_id: String,
    secret: String,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite with scripts/test.sh, which starts the S3 servers")
    })
}

/// A store under a prefix of its own on `server`.
fn s3_store(
    server: S3Server,
    prefix: &str,
    max_copy_bytes: Option<u64>,
) -> wharf_blobstore::S3BlobStore {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let config = wharf_blobstore::S3Config {
        bucket: "wharf-test".into(),
        prefix: format!("{prefix}{}-{nanos}", std::process::id()),
        endpoint: Some(server.endpoint),
        region: Some("us-east-1".into()),
        access_key_id: Some(server.key_id),
        secret_access_key: Some(server.secret),
        max_copy_bytes,
    };
    wharf_blobstore::S3BlobStore::open(&config).unwrap()
}

/// The suite against the `server()` of the module it is expanded in: with S3's own copy
/// limit, and again with a limit of 1 MiB instead of 5 GiB, so that every single chunk
/// above it is committed as a layer over 5 GiB would be, streamed into a multipart
/// upload rather than copied in one request.
macro_rules! s3_suites {
    () => {
        async fn make() -> (wharf_blobstore::S3BlobStore, ()) {
            (super::s3_store(server(), "t", None), ())
        }

        wharf_blobstore::blobstore_testsuite!(make());

        mod over_the_copy_limit {
            async fn make() -> (wharf_blobstore::S3BlobStore, ()) {
                (
                    super::super::s3_store(super::server(), "c", Some(1 << 20)),
                    (),
                )
            }

            wharf_blobstore::blobstore_testsuite!(make());
        }
    };
}

/// moto, a mock of S3 (`WHARF_TEST_S3_ENDPOINT`).
mod s3 {
    fn server() -> super::S3Server {
        super::S3Server {
            endpoint: super::env("WHARF_TEST_S3_ENDPOINT"),
            key_id: "test".into(),
            secret: "test".into(),
        }
    }

    s3_suites!();
}

/// Garage, a real S3-compatible object store (`WHARF_TEST_GARAGE_ENDPOINT` and its key).
mod garage {
    fn server() -> super::S3Server {
        super::S3Server {
            endpoint: super::env("WHARF_TEST_GARAGE_ENDPOINT"),
            key_id: super::env("WHARF_TEST_GARAGE_KEY_ID"),
            secret: super::env("WHARF_TEST_GARAGE_SECRET"),
        }
    }

    s3_suites!();
}
