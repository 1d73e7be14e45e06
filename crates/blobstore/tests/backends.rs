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
