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

/// Against a real PostgreSQL: `scripts/test.sh` starts a throwaway server and sets
/// `WHARF_TEST_POSTGRES_URL`; each test gets a database of its own.
mod postgres {
    use wharf_metastore::PgMetaStore;

    async fn make() -> (PgMetaStore, ()) {
        let Ok(url) = std::env::var("WHARF_TEST_POSTGRES_URL") else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "WHARF_TEST_POSTGRES_URL is required under CI=true (scripts/test.sh sets it)"
                );
            }
            panic!("WHARF_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh, which starts PostgreSQL");
        };
        let db = format!("wharf_test_{}", uuid_like());
        let admin = sqlx::PgPool::connect(&url)
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let (base, _) = url.rsplit_once('/').expect("a URL with a database");
        (
            PgMetaStore::open(&format!("{base}/{db}")).await.unwrap(),
            (),
        )
    }

    fn uuid_like() -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{}_{nanos}", std::process::id())
    }

    wharf_metastore::metastore_testsuite!(make());

    #[tokio::test]
    async fn refuses_a_schema_newer_than_it_knows() {
        let (store, ()) = make().await;
        sqlx::query("INSERT INTO wharf_schema (level, name, applied_at, wharf_version) VALUES (99, 'future', 0, '9.0.0')")
            .execute(store.pool())
            .await
            .unwrap();
        let url = store
            .pool()
            .connect_options()
            .get_database()
            .map(str::to_string)
            .unwrap();
        let base = std::env::var("WHARF_TEST_POSTGRES_URL").unwrap();
        let (base, _) = base.rsplit_once('/').unwrap();
        let err = PgMetaStore::open(&format!("{base}/{url}"))
            .await
            .err()
            .expect("must refuse");
        assert!(err.to_string().contains("level 99"), "{err}");
    }
}

/// A store at the previous schema level is refused until `migrate` raises it.
mod migrations {
    use wharf_metastore::schema::{MIGRATIONS, SCHEMA_LEVEL};
    use wharf_metastore::{AccountStore, MetaError, MetaStore, SqliteMetaStore};

    #[tokio::test]
    async fn sqlite_store_at_an_older_level_is_migrated_in_one_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.db");
        // A store as the previous release left it.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE wharf_schema (level INTEGER PRIMARY KEY, name TEXT NOT NULL,
             applied_at INTEGER NOT NULL, wharf_version TEXT NOT NULL)",
        )
        .unwrap();
        for m in &MIGRATIONS[..MIGRATIONS.len() - 1] {
            conn.execute_batch(m.sqlite).unwrap();
            conn.execute(
                "INSERT INTO wharf_schema VALUES (?, ?, 0, 'old')",
                rusqlite::params![m.level, m.name],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO users (name, password_hash, created_at) VALUES ('kept', 'h', 0)",
            [],
        )
        .unwrap();
        drop(conn);
        let err = SqliteMetaStore::open(&path).await.err().expect("refused");
        assert!(matches!(err, MetaError::SchemaTooOld { .. }), "{err}");
        assert!(err.to_string().contains("wharf upgrade apply"), "{err}");

        let applied = SqliteMetaStore::migrate(&path, SCHEMA_LEVEL).await.unwrap();
        assert_eq!(applied, vec![SCHEMA_LEVEL]);
        assert!(
            SqliteMetaStore::migrate(&path, SCHEMA_LEVEL)
                .await
                .unwrap()
                .is_empty(),
            "idempotent"
        );
        let store = SqliteMetaStore::open(&path).await.unwrap();
        assert_eq!(store.schema_level().await.unwrap(), SCHEMA_LEVEL);
        assert!(
            store.user_credentials("kept").await.unwrap().is_some(),
            "data kept"
        );
        let err = SqliteMetaStore::migrate(&path, SCHEMA_LEVEL + 1)
            .await
            .unwrap_err();
        assert!(matches!(err, MetaError::SchemaTooNew { .. }), "{err}");
    }
}
