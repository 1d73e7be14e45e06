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

    /// `complete_upload` records a blob in one statement. When another transaction
    /// creates the repository and commits while that statement waits for it, the
    /// statement's snapshot cannot see the new row; the blob must be linked anyway.
    #[tokio::test]
    async fn a_blob_completed_while_its_repository_is_created_elsewhere_is_linked() {
        use wharf_metastore::{MetaStore, UploadSession};
        let (store, ()) = make().await;
        let repo: wharf_oci::RepoName = "race/new".parse().unwrap();
        let digest: wharf_oci::Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let id = wharf_oci::UploadId::new_unchecked("u-race".into());
        store
            .create_upload(&UploadSession {
                id: id.clone(),
                repo: repo.clone(),
                size: 3,
                created_at_ms: 0,
                updated_at_ms: 0,
            })
            .await
            .unwrap();
        let mut other = store.pool().begin().await.unwrap();
        sqlx::query("INSERT INTO repositories (name, created_at) VALUES ('race/new', 0)")
            .execute(&mut *other)
            .await
            .unwrap();
        let completing = {
            let (store, repo, digest) = (store.clone(), repo.clone(), digest.clone());
            tokio::spawn(async move { store.complete_upload(&id, &repo, &digest, 3).await })
        };
        // Until the statement waits for the other transaction's row (at most 10 s).
        let mut waited = false;
        for _ in 0..1000 {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(store.pool())
            .await
            .unwrap();
            if n > 0 {
                waited = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(
            waited,
            "complete_upload never waited for the repository row"
        );
        other.commit().await.unwrap();
        completing.await.unwrap().unwrap();
        assert_eq!(store.repo_blob(&repo, &digest).await.unwrap(), Some(3));
        assert!(store
            .get_upload(&wharf_oci::UploadId::new_unchecked("u-race".into()))
            .await
            .unwrap()
            .is_none());
    }

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

/// A store at the previous schema level is refused until an upgrade expands it; the
/// expansion leaves what older releases read alone and can be undone until it is
/// finalised.
mod migrations {
    use wharf_metastore::journal::UpgradeJournal;
    use wharf_metastore::schema::{peek_postgres, peek_sqlite, MIGRATIONS, SCHEMA_LEVEL};
    use wharf_metastore::{AccountStore, MetaError, MetaStore, PgMetaStore, SqliteMetaStore};

    const OLD: u32 = SCHEMA_LEVEL - 1;

    /// A later release's expansion, not finalised (a rolling upgrade under way): this
    /// release serves on and restarts on it; its upgrade commands refuse it. (Release
    /// 1.1.0 refused to restart there: the reason rollback undoes the expansion before
    /// bringing old replicas back.)
    #[tokio::test]
    async fn sqlite_data_expanded_by_a_later_release_still_opens_for_serving() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.db");
        let store = SqliteMetaStore::open(&path).await.unwrap();
        store.create_user("kept", "h", false).await.unwrap();
        drop(store);
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS wharf_schema_expanded (
                     level INTEGER PRIMARY KEY, name TEXT NOT NULL,
                     applied_at INTEGER NOT NULL, wharf_version TEXT NOT NULL);
                 INSERT INTO wharf_schema_expanded VALUES ({}, 'a later release', 0, '9.9.0');
                 CREATE TABLE later_release_table (x INTEGER);",
                SCHEMA_LEVEL + 1
            ))
            .unwrap();
        let store = SqliteMetaStore::open(&path).await.unwrap();
        assert_eq!(store.schema_level().await.unwrap(), SCHEMA_LEVEL);
        assert!(store.user_credentials("kept").await.unwrap().is_some());
        drop(store);
        let err = SqliteMetaStore::open_for_upgrade(&path)
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, MetaError::SchemaTooNew { .. }), "{err}");
    }

    #[tokio::test]
    async fn sqlite_expand_undo_and_finalise() {
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
                "INSERT INTO wharf_schema VALUES (?, ?, 0, '1.0.0')",
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
        // What the previous release reads: its level in wharf_schema.
        let old_view = || {
            rusqlite::Connection::open(&path)
                .unwrap()
                .query_row("SELECT MAX(level) FROM wharf_schema", [], |r| {
                    r.get::<_, u32>(0)
                })
                .unwrap()
        };

        let applied = SqliteMetaStore::expand(&path, SCHEMA_LEVEL).await.unwrap();
        assert_eq!(applied, vec![SCHEMA_LEVEL]);
        assert!(
            SqliteMetaStore::expand(&path, SCHEMA_LEVEL)
                .await
                .unwrap()
                .is_empty(),
            "idempotent"
        );
        assert_eq!(old_view(), OLD, "older releases still read their level");
        let info = peek_sqlite(&path).unwrap().unwrap();
        assert_eq!(
            (info.level, info.expanded_level, info.wharf_version.as_str()),
            (OLD, SCHEMA_LEVEL, "1.0.0")
        );
        // This release serves the expanded data (the mixed-version window).
        let store = SqliteMetaStore::open(&path).await.unwrap();
        assert_eq!(store.schema_level().await.unwrap(), OLD);
        assert_eq!(store.data_version().await.unwrap(), "1.0.0");
        drop(store);

        // Rollback: undone, and refused by this release again.
        assert_eq!(
            SqliteMetaStore::undo_expand(&path, OLD).await.unwrap(),
            vec![SCHEMA_LEVEL]
        );
        assert_eq!(peek_sqlite(&path).unwrap().unwrap().expanded_level, OLD);
        assert!(SqliteMetaStore::open(&path).await.is_err());

        // Again, then finalised.
        SqliteMetaStore::expand(&path, SCHEMA_LEVEL).await.unwrap();
        let err = SqliteMetaStore::finalise(&path, SCHEMA_LEVEL + 1, "9.9.9")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not expanded"), "{err}");
        assert_eq!(
            SqliteMetaStore::finalise(&path, SCHEMA_LEVEL, "1.1.0")
                .await
                .unwrap(),
            vec![SCHEMA_LEVEL]
        );
        assert_eq!(
            old_view(),
            SCHEMA_LEVEL,
            "older releases now refuse the data"
        );
        let info = peek_sqlite(&path).unwrap().unwrap();
        assert_eq!(
            (info.level, info.expanded_level, info.wharf_version.as_str()),
            (SCHEMA_LEVEL, SCHEMA_LEVEL, "1.1.0")
        );
        let err = SqliteMetaStore::undo_expand(&path, OLD).await.unwrap_err();
        assert!(err.to_string().contains("finalised"), "{err}");
        let store = SqliteMetaStore::open(&path).await.unwrap();
        assert_eq!(store.schema_level().await.unwrap(), SCHEMA_LEVEL);
        assert_eq!(store.data_version().await.unwrap(), "1.1.0");
        assert!(
            store.user_credentials("kept").await.unwrap().is_some(),
            "data kept"
        );
        drop(store);
        let err = SqliteMetaStore::expand(&path, SCHEMA_LEVEL + 1)
            .await
            .unwrap_err();
        assert!(matches!(err, MetaError::SchemaTooNew { .. }), "{err}");
    }

    #[tokio::test]
    async fn postgres_expand_undo_and_finalise() {
        let Ok(url) = std::env::var("WHARF_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "WHARF_TEST_POSTGRES_URL is required under CI=true"
            );
            eprintln!("SKIPPED: no WHARF_TEST_POSTGRES_URL");
            return;
        };
        let db = format!("wharf_expand_{}", std::process::id());
        let admin = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
            .execute(&admin)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&admin)
            .await
            .unwrap();
        let (base, _) = url.rsplit_once('/').unwrap();
        let db_url = format!("{base}/{db}");
        {
            let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
            sqlx::raw_sql(
                "CREATE TABLE wharf_schema (level BIGINT PRIMARY KEY, name TEXT NOT NULL,
                 applied_at BIGINT NOT NULL, wharf_version TEXT NOT NULL)",
            )
            .execute(&pool)
            .await
            .unwrap();
            for m in &MIGRATIONS[..MIGRATIONS.len() - 1] {
                sqlx::raw_sql(m.postgres).execute(&pool).await.unwrap();
                sqlx::query("INSERT INTO wharf_schema VALUES ($1, $2, 0, '1.0.0')")
                    .bind(m.level as i64)
                    .bind(m.name)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
        assert!(PgMetaStore::open(&db_url).await.is_err(), "too old");
        assert_eq!(
            PgMetaStore::expand(&db_url, SCHEMA_LEVEL).await.unwrap(),
            vec![SCHEMA_LEVEL]
        );
        assert!(PgMetaStore::expand(&db_url, SCHEMA_LEVEL)
            .await
            .unwrap()
            .is_empty());
        let info = peek_postgres(&db_url).await.unwrap().unwrap();
        assert_eq!(
            (info.level, info.expanded_level, info.wharf_version.as_str()),
            (OLD, SCHEMA_LEVEL, "1.0.0")
        );
        let store = PgMetaStore::open(&db_url).await.unwrap();
        assert_eq!(store.data_version().await.unwrap(), "1.0.0");
        store.pool().close().await;
        assert_eq!(
            PgMetaStore::undo_expand(&db_url, OLD).await.unwrap(),
            vec![SCHEMA_LEVEL]
        );
        assert!(PgMetaStore::open(&db_url).await.is_err(), "too old again");
        PgMetaStore::expand(&db_url, SCHEMA_LEVEL).await.unwrap();
        assert_eq!(
            PgMetaStore::finalise(&db_url, SCHEMA_LEVEL, "1.1.0")
                .await
                .unwrap(),
            vec![SCHEMA_LEVEL]
        );
        let info = peek_postgres(&db_url).await.unwrap().unwrap();
        assert_eq!(
            (info.level, info.expanded_level, info.wharf_version.as_str()),
            (SCHEMA_LEVEL, SCHEMA_LEVEL, "1.1.0")
        );
        let err = PgMetaStore::undo_expand(&db_url, OLD).await.unwrap_err();
        assert!(err.to_string().contains("finalised"), "{err}");
        let store = PgMetaStore::open(&db_url).await.unwrap();
        assert_eq!(store.schema_level().await.unwrap(), SCHEMA_LEVEL);
        store.pool().close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {db} WITH (FORCE)"
        )))
        .execute(&admin)
        .await
        .unwrap();
    }
}
