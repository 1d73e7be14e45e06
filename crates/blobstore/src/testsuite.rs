//! The behaviour every [`BlobStore`] backend must show, as one suite of checks.
//!
//! A backend's crate instantiates it with [`blobstore_testsuite!`]; each check starts
//! from an empty store and must leave it empty, so a backend that leaks objects fails.

use bytes::Bytes;
use futures_util::TryStreamExt;
use wharf_oci::{Digest, UploadId};

use crate::{BlobStore, ByteRange, StoreError};

fn id(n: u32) -> UploadId {
    format!("00000000-0000-4000-8000-{n:012}").parse().unwrap()
}

async fn read_all(store: &dyn BlobStore, d: &Digest, r: Option<ByteRange>) -> Vec<u8> {
    let s = store.read(d, r).await.expect("read");
    let chunks: Vec<Bytes> = s.try_collect().await.expect("stream");
    chunks.concat()
}

async fn put(store: &dyn BlobStore, upload: &UploadId, data: &[u8]) -> Digest {
    let d = Digest::sha256_of(data);
    let mut w = store.upload_writer(upload, 0).await.unwrap();
    w.write(Bytes::copy_from_slice(data)).await.unwrap();
    assert_eq!(w.finish().await.unwrap(), data.len() as u64);
    store.upload_commit(upload, &d).await.unwrap();
    store.upload_delete(upload).await.unwrap();
    d
}

async fn assert_empty(store: &dyn BlobStore) {
    assert_eq!(
        store.list().await.unwrap(),
        Vec::<Digest>::new(),
        "leaked blobs"
    );
    assert_eq!(
        store.upload_list().await.unwrap(),
        Vec::<UploadId>::new(),
        "leaked uploads"
    );
}

pub async fn missing_blob_is_not_found(store: &dyn BlobStore) {
    let d = Digest::sha256_of(b"never stored");
    assert_eq!(store.stat(&d).await.unwrap(), None);
    assert!(matches!(
        store.read(&d, None).await,
        Err(StoreError::NotFound)
    ));
    assert!(!store.delete(&d).await.unwrap());
    assert_empty(store).await;
}

pub async fn upload_commit_read_delete(store: &dyn BlobStore) {
    // Committing keeps the upload's data until the caller deletes it, so a commit can
    // be repeated (the registry does, if garbage collection raced it).
    let u = id(1);
    let mut w = store.upload_writer(&u, 0).await.unwrap();
    w.write(Bytes::from_static(b"hello, wharf")).await.unwrap();
    w.finish().await.unwrap();
    let d = Digest::sha256_of(b"hello, wharf");
    store.upload_commit(&u, &d).await.unwrap();
    assert_eq!(store.upload_list().await.unwrap(), vec![u.clone()]);
    assert!(store.delete(&d).await.unwrap());
    assert_eq!(store.stat(&d).await.unwrap(), None);
    store.upload_commit(&u, &d).await.unwrap();
    store.upload_delete(&u).await.unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), Some(12));
    assert_eq!(read_all(store, &d, None).await, b"hello, wharf");
    assert_eq!(store.list().await.unwrap(), vec![d.clone()]);
    assert_eq!(
        store.upload_list().await.unwrap(),
        vec![],
        "the upload is gone once deleted"
    );
    assert!(store.delete(&d).await.unwrap());
    assert_empty(store).await;
}

pub async fn ranged_reads(store: &dyn BlobStore) {
    let d = put(store, &id(2), b"0123456789").await;
    let r = |start, end| Some(ByteRange { start, end });
    assert_eq!(read_all(store, &d, r(2, 5)).await, b"234");
    assert_eq!(read_all(store, &d, r(9, 10)).await, b"9");
    assert_eq!(read_all(store, &d, r(10, 10)).await, b"");
    assert!(matches!(
        store.read(&d, r(5, 11)).await,
        Err(StoreError::InvalidRange { .. })
    ));
    assert!(matches!(
        store.read(&d, r(6, 5)).await,
        Err(StoreError::InvalidRange { .. })
    ));
    store.delete(&d).await.unwrap();
    assert_empty(store).await;
}

pub async fn chunked_upload_appends(store: &dyn BlobStore) {
    let u = id(3);
    let mut w = store.upload_writer(&u, 0).await.unwrap();
    w.write(Bytes::from_static(b"abc")).await.unwrap();
    assert_eq!(w.finish().await.unwrap(), 3);
    let mut w = store.upload_writer(&u, 3).await.unwrap();
    w.write(Bytes::from_static(b"de")).await.unwrap();
    w.write(Bytes::from_static(b"f")).await.unwrap();
    assert_eq!(w.finish().await.unwrap(), 6);
    let got: Vec<Bytes> = store
        .upload_read(&u)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(got.concat(), b"abcdef");
    assert_eq!(store.upload_list().await.unwrap(), vec![u.clone()]);
    store.upload_delete(&u).await.unwrap();
    store.upload_delete(&u).await.unwrap(); // idempotent
    assert_empty(store).await;
}

pub async fn resumed_upload_discards_unrecorded_bytes(store: &dyn BlobStore) {
    let u = id(4);
    let mut w = store.upload_writer(&u, 0).await.unwrap();
    w.write(Bytes::from_static(b"0123456789")).await.unwrap();
    w.finish().await.unwrap();
    // The registry had recorded only 5 bytes when the writer died.
    let mut w = store.upload_writer(&u, 5).await.unwrap();
    w.write(Bytes::from_static(b"xyz")).await.unwrap();
    assert_eq!(w.finish().await.unwrap(), 8);
    let got: Vec<Bytes> = store
        .upload_read(&u)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(got.concat(), b"01234xyz");
    // An offset beyond the data cannot be resumed.
    assert!(store.upload_writer(&u, 100).await.is_err());
    // Nor can a session that never existed.
    assert!(store.upload_writer(&id(99), 5).await.is_err());
    store.upload_delete(&u).await.unwrap();
    assert_empty(store).await;
}

pub async fn committing_an_existing_blob_succeeds(store: &dyn BlobStore) {
    let d1 = put(store, &id(5), b"same bytes").await;
    let d2 = put(store, &id(6), b"same bytes").await;
    assert_eq!(d1, d2);
    assert_eq!(read_all(store, &d1, None).await, b"same bytes");
    assert_eq!(store.list().await.unwrap().len(), 1);
    store.delete(&d1).await.unwrap();
    assert_empty(store).await;
}

pub async fn committing_an_unknown_upload_is_not_found(store: &dyn BlobStore) {
    let d = Digest::sha256_of(b"x");
    assert!(matches!(
        store.upload_commit(&id(7), &d).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.stat(&d).await.unwrap(), None);
    assert_empty(store).await;
}

pub async fn large_blob_roundtrips(store: &dyn BlobStore) {
    let data: Vec<u8> = (0..(5 << 20) + 123)
        .map(|i: u32| (i * 7 % 251) as u8)
        .collect();
    let u = id(8);
    let mut w = store.upload_writer(&u, 0).await.unwrap();
    for chunk in data.chunks(300_000) {
        w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    w.finish().await.unwrap();
    let d = Digest::sha256_of(&data);
    store.upload_commit(&u, &d).await.unwrap();
    store.upload_delete(&u).await.unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), Some(data.len() as u64));
    assert!(read_all(store, &d, None).await == data);
    let r = ByteRange {
        start: 1_000_000,
        end: 4_000_001,
    };
    assert!(read_all(store, &d, Some(r)).await == data[1_000_000..4_000_001]);
    store.delete(&d).await.unwrap();
    assert_empty(store).await;
}

pub async fn large_upload_in_several_sessions_roundtrips(store: &dyn BlobStore) {
    // Three writes of 6 MiB each, as three PATCHes: on S3 these are multipart uploads
    // that the commit concatenates.
    let part: Vec<u8> = (0..6u32 << 20).map(|i| (i * 13 % 251) as u8).collect();
    let u = id(9);
    let mut all = Vec::new();
    for n in 0..3u64 {
        let mut w = store
            .upload_writer(&u, n * part.len() as u64)
            .await
            .unwrap();
        for piece in part.chunks(1 << 20) {
            w.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        assert_eq!(w.finish().await.unwrap(), (n + 1) * part.len() as u64);
        all.extend_from_slice(&part);
    }
    let d = Digest::sha256_of(&all);
    store.upload_commit(&u, &d).await.unwrap();
    store.upload_delete(&u).await.unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), Some(all.len() as u64));
    let r = ByteRange {
        start: 6 << 20,
        end: (12 << 20) + 7,
    };
    assert!(read_all(store, &d, Some(r)).await == all[6 << 20..(12 << 20) + 7]);
    assert!(read_all(store, &d, None).await == all);
    store.delete(&d).await.unwrap();
    assert_empty(store).await;
}

/// Instantiates every check of the suite as a `#[tokio::test]` for a backend.
/// `$make` is an async expression that yields `(store, guard)`; the guard is kept
/// alive for the test (a temp dir, a server).
#[macro_export]
macro_rules! blobstore_testsuite {
    ($make:expr) => {
        $crate::blobstore_testsuite!(@each $make;
            missing_blob_is_not_found,
            upload_commit_read_delete,
            ranged_reads,
            chunked_upload_appends,
            resumed_upload_discards_unrecorded_bytes,
            committing_an_existing_blob_succeeds,
            committing_an_unknown_upload_is_not_found,
            large_blob_roundtrips,
            large_upload_in_several_sessions_roundtrips,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (store, _guard) = $make.await;
                $crate::testsuite::$check(&store).await;
            }
        )*
    };
}
