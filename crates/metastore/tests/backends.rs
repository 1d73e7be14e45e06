//! Every backend in this crate against the shared suite, plus SQLite's own schema rules.

mod sqlite {
    use wharf_metastore::SqliteMetaStore;
    async fn make() -> (SqliteMetaStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteMetaStore::open(dir.path().join("metadata.db"))
            .await
            .unwrap();
        (store, dir)
    }
    wharf_metastore::metastore_testsuite!(make());

    #[tokio::test]
    async fn refuses_a_schema_newer_than_it_knows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.db");
        drop(SqliteMetaStore::open(&path).await.unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO wharf_schema (level, name, applied_at, wharf_version) VALUES (99, 'future', 0, '9.0.0')",
            [],
        )
        .unwrap();
        drop(conn);
        let err = SqliteMetaStore::open(&path)
            .await
            .err()
            .expect("must refuse");
        assert!(err.to_string().contains("level 99"), "{err}");
    }
}
