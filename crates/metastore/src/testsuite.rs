//! The behaviour every [`MetaStore`] backend must show. Each check starts from an empty
//! store; backends instantiate all of them with [`metastore_testsuite!`].

use bytes::Bytes;
use wharf_oci::{Digest, Reference, RepoName, Tag, UploadId};

use crate::schema::SCHEMA_LEVEL;
use crate::{now_ms, MetaError, MetaStore, NewManifest, UploadSession};

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}
fn tag(s: &str) -> Tag {
    s.parse().unwrap()
}
fn upload_id(n: u32) -> UploadId {
    format!("00000000-0000-4000-8000-{n:012}").parse().unwrap()
}

async fn session(store: &dyn MetaStore, n: u32, r: &RepoName) -> UploadId {
    let s = UploadSession {
        id: upload_id(n),
        repo: r.clone(),
        size: 0,
        created_at_ms: now_ms(),
        updated_at_ms: now_ms(),
    };
    store.create_upload(&s).await.unwrap();
    s.id
}

/// Stores a blob in `r` through an upload session, as a push does.
async fn blob(store: &dyn MetaStore, r: &RepoName, content: &[u8]) -> Digest {
    let d = Digest::sha256_of(content);
    let n = u32::from_be_bytes(d.hex().as_bytes()[..4].try_into().unwrap()) % 1_000_000;
    let id = session(store, n, r).await;
    store
        .complete_upload(&id, r, &d, content.len() as u64)
        .await
        .unwrap();
    d
}

fn manifest(payload: &str, blobs: Vec<Digest>, manifests: Vec<Digest>) -> NewManifest {
    NewManifest {
        digest: Digest::sha256_of(payload.as_bytes()),
        media_type: wharf_oci::media::OCI_MANIFEST.into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        artifact_type: None,
        subject: None,
        annotations_json: None,
        required_blobs: blobs,
        required_manifests: manifests,
        scan: None,
        summary: None,
        references_on_demand: false,
    }
}

pub async fn new_store_is_empty_at_current_level(store: &dyn MetaStore) {
    assert_eq!(store.schema_level().await.unwrap(), SCHEMA_LEVEL);
    assert!(store.list_repositories(None, 100).await.unwrap().is_empty());
    assert_eq!(
        store.list_tags(&repo("nope"), None, 10).await.unwrap(),
        None
    );
    assert_eq!(store.get_upload(&upload_id(1)).await.unwrap(), None);
}

pub async fn stale_uploads_oldest_first(store: &dyn MetaStore) {
    let r = repo("a/b");
    let old = session(store, 1, &r).await;
    let now = now_ms();
    assert!(store
        .stale_uploads(now - 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    let stale = store.stale_uploads(now + 60_000, 10).await.unwrap();
    assert_eq!(stale.iter().map(|s| &s.id).collect::<Vec<_>>(), vec![&old]);
    session(store, 2, &r).await;
    assert_eq!(
        store.stale_uploads(now + 60_000, 1).await.unwrap()[0].id,
        old
    );
}

pub async fn upload_session_lifecycle(store: &dyn MetaStore) {
    let r = repo("team/app");
    let id = session(store, 1, &r).await;
    let s = store.get_upload(&id).await.unwrap().unwrap();
    assert_eq!((s.repo.clone(), s.size), (r.clone(), 0));
    assert!(store.advance_upload(&id, 0, 10).await.unwrap());
    assert!(
        !store.advance_upload(&id, 0, 20).await.unwrap(),
        "stale offset must lose"
    );
    assert_eq!(store.get_upload(&id).await.unwrap().unwrap().size, 10);
    // The repository appears only once something is stored in it.
    assert!(store.list_repositories(None, 10).await.unwrap().is_empty());
    let d = Digest::sha256_of(b"0123456789");
    store.complete_upload(&id, &r, &d, 10).await.unwrap();
    assert_eq!(store.get_upload(&id).await.unwrap(), None);
    assert_eq!(store.repo_blob(&r, &d).await.unwrap(), Some(10));
    assert_eq!(store.blob_size(&d).await.unwrap(), Some(10));
    assert_eq!(store.list_repositories(None, 10).await.unwrap(), vec![r]);
    let other = session(store, 2, &repo("x")).await;
    assert!(store.delete_upload(&other).await.unwrap());
    assert!(!store.delete_upload(&other).await.unwrap());
}

pub async fn blobs_are_per_repository(store: &dyn MetaStore) {
    let (a, b) = (repo("a"), repo("b"));
    let d = blob(store, &a, b"layer").await;
    assert_eq!(store.repo_blob(&b, &d).await.unwrap(), None);
    assert_eq!(
        store.repositories_with_blob(&d, 10).await.unwrap(),
        vec![a.clone()]
    );
    assert!(
        store.link_blob(&b, &d).await.unwrap(),
        "mount a stored blob"
    );
    assert_eq!(store.repo_blob(&b, &d).await.unwrap(), Some(5));
    let unknown = Digest::sha256_of(b"unknown");
    assert!(!store.link_blob(&b, &unknown).await.unwrap());
    assert_eq!(
        store.repositories_with_blob(&d, 10).await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(
        store.repositories_with_blob(&d, 1).await.unwrap(),
        vec![a.clone()]
    );
    assert!(store.unlink_blob(&a, &d).await.unwrap());
    assert!(!store.unlink_blob(&a, &d).await.unwrap());
    assert_eq!(store.repo_blob(&a, &d).await.unwrap(), None);
    assert_eq!(
        store.repo_blob(&b, &d).await.unwrap(),
        Some(5),
        "other repos keep it"
    );
}

pub async fn manifests_need_their_blobs(store: &dyn MetaStore) {
    let r = repo("app");
    let config = blob(store, &r, b"{}").await;
    let missing = Digest::sha256_of(b"missing layer");
    let m = manifest("image-1", vec![config.clone(), missing.clone()], vec![]);
    match store.put_manifest(&r, &m, Some(&tag("v1"))).await {
        Err(MetaError::MissingReference(d)) => assert_eq!(d, missing),
        other => panic!("expected MissingReference, got {other:?}"),
    }
    assert_eq!(store.list_tags(&r, None, 10).await.unwrap(), Some(vec![]));
    let m = manifest("image-1", vec![config], vec![]);
    store.put_manifest(&r, &m, Some(&tag("v1"))).await.unwrap();
    let by_tag = store
        .get_manifest(&r, &Reference::Tag(tag("v1")), true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_tag.digest, m.digest);
    assert_eq!(by_tag.payload.as_deref(), Some(&b"image-1"[..]));
    let by_digest = store
        .get_manifest(&r, &Reference::Digest(m.digest.clone()), false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((by_digest.size, by_digest.payload), (7, None));
    assert_eq!(
        store
            .get_manifest(&repo("other"), &Reference::Tag(tag("v1")), true)
            .await
            .unwrap(),
        None
    );
}

pub async fn indexes_need_their_manifests(store: &dyn MetaStore) {
    let r = repo("multi");
    let child = manifest("child", vec![], vec![]);
    let index = manifest("index", vec![], vec![child.digest.clone()]);
    assert!(matches!(
        store.put_manifest(&r, &index, None).await,
        Err(MetaError::MissingReference(_))
    ));
    store.put_manifest(&r, &child, None).await.unwrap();
    store
        .put_manifest(&r, &index, Some(&tag("latest")))
        .await
        .unwrap();
    // Pushing the same manifest again is a no-op, not an error.
    store
        .put_manifest(&r, &index, Some(&tag("latest")))
        .await
        .unwrap();
}

pub async fn tags_move_list_and_delete(store: &dyn MetaStore) {
    let r = repo("tags");
    let m1 = manifest("one", vec![], vec![]);
    let m2 = manifest("two", vec![], vec![]);
    for t in ["b", "a", "c"] {
        store.put_manifest(&r, &m1, Some(&tag(t))).await.unwrap();
    }
    store.put_manifest(&r, &m2, Some(&tag("b"))).await.unwrap();
    let got = store
        .get_manifest(&r, &Reference::Tag(tag("b")), false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.digest, m2.digest, "a tag moves to the newest push");
    let names = |v: Option<Vec<Tag>>| v.unwrap().iter().map(|t| t.to_string()).collect::<Vec<_>>();
    assert_eq!(
        names(store.list_tags(&r, None, 10).await.unwrap()),
        ["a", "b", "c"]
    );
    assert_eq!(
        names(store.list_tags(&r, None, 2).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        names(store.list_tags(&r, Some("b"), 2).await.unwrap()),
        ["c"]
    );
    assert!(store.delete_tag(&r, &tag("a")).await.unwrap());
    assert!(!store.delete_tag(&r, &tag("a")).await.unwrap());
    assert!(
        store
            .get_manifest(&r, &Reference::Digest(m1.digest.clone()), false)
            .await
            .unwrap()
            .is_some(),
        "deleting a tag keeps the manifest"
    );
    assert!(store.delete_manifest(&r, &m1.digest).await.unwrap());
    assert!(!store.delete_manifest(&r, &m1.digest).await.unwrap());
    assert_eq!(
        names(store.list_tags(&r, None, 10).await.unwrap()),
        ["b"],
        "its tags went with it"
    );
}

pub async fn referrers_by_subject_and_type(store: &dyn MetaStore) {
    let r = repo("refs");
    let subject = manifest("subject", vec![], vec![]);
    store.put_manifest(&r, &subject, None).await.unwrap();
    for (payload, at) in [("sig", "application/x-sig"), ("sbom", "application/x-sbom")] {
        let mut m = manifest(payload, vec![], vec![]);
        m.subject = Some(subject.digest.clone());
        m.artifact_type = Some(at.into());
        m.annotations_json = Some(r#"{"k":"v"}"#.into());
        store.put_manifest(&r, &m, None).await.unwrap();
    }
    let all = store.referrers(&r, &subject.digest, None).await.unwrap();
    assert_eq!(all.len(), 2);
    let sigs = store
        .referrers(&r, &subject.digest, Some("application/x-sig"))
        .await
        .unwrap();
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0].digest, Digest::sha256_of(b"sig"));
    assert_eq!(sigs[0].annotations_json.as_deref(), Some(r#"{"k":"v"}"#));
    assert!(store
        .referrers(&repo("elsewhere"), &subject.digest, None)
        .await
        .unwrap()
        .is_empty());
}

pub async fn catalog_is_paginated_in_order(store: &dyn MetaStore) {
    for name in ["c/deep/name", "a", "b/x"] {
        blob(store, &repo(name), name.as_bytes()).await;
    }
    let list = |after: Option<&'static str>, n| async move {
        store
            .list_repositories(after, n)
            .await
            .unwrap()
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(None, 10).await, ["a", "b/x", "c/deep/name"]);
    assert_eq!(list(None, 2).await, ["a", "b/x"]);
    assert_eq!(list(Some("b/x"), 2).await, ["c/deep/name"]);
}

#[macro_export]
macro_rules! metastore_testsuite {
    ($make:expr) => {
        $crate::metastore_testsuite!(@each $make;
            new_store_is_empty_at_current_level,
            upload_session_lifecycle,
            stale_uploads_oldest_first,
            blobs_are_per_repository,
            manifests_need_their_blobs,
            indexes_need_their_manifests,
            tags_move_list_and_delete,
            referrers_by_subject_and_type,
            catalog_is_paginated_in_order,
            users_and_org_names_are_unique,
            access_tokens_lifecycle,
            repository_facts_combine_grants_teams_and_namespaces,
            the_first_signing_key_wins,
            audit_log_is_newest_first_and_paginated,
            replicas_heartbeat_and_expire,
            content_caches_tokens_heartbeats_and_routes,
            backup_export_and_import_round_trip,
            backup_export_is_one_snapshot,
            backups_are_recorded_newest_first,
            jobs_are_claimed_in_order_one_per_action,
            failed_jobs_are_retried_until_attempts_run_out,
            jobs_heartbeat_and_cancel,
            jobs_of_dead_workers_are_requeued,
            job_logs_are_ordered_and_capped,
            workers_and_crons,
            concurrent_claims_take_each_job_once,
            gc_removes_only_unreferenced_links_and_blobs,
            gc_untagged_manifests_spare_tagged_children_and_referrers,
            browsing_shows_what_each_viewer_may_see_in_keyset_pages,
            browsing_tags_orgs_and_grants,
            manifest_summaries_are_stored_with_pushes_and_filled_in_later,
            scan_inventories_replace_and_share_packages,
            scan_vulndb_imports_swap_whole_sets,
            scan_matches_findings_summaries_and_changes,
            scan_policies_and_allowlist_round_trip,
            scan_gc_removes_orphan_inventories_and_packages,
            scan_on_push_queues_one_job_per_image,
            proxies_and_their_bookkeeping,
            proxied_manifests_need_no_references,
            scans_are_claimed_after_other_jobs,
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

// ---------------------------------------------------------------- accounts

use crate::accounts::{Level, Namespace, RepoFacts, SigningKey, Subject, Visibility};

pub async fn users_and_org_names_are_unique(store: &dyn MetaStore) {
    let alice = store.create_user("alice", "hash-a", false).await.unwrap();
    assert!(!alice.is_admin && !alice.disabled);
    assert!(matches!(
        store.create_user("alice", "h", true).await,
        Err(MetaError::Conflict(_))
    ));
    assert!(matches!(
        store.create_org("alice").await,
        Err(MetaError::Conflict(_))
    ));
    let org = store.create_org("acme").await.unwrap();
    assert!(matches!(
        store.create_user("acme", "h", false).await,
        Err(MetaError::Conflict(_))
    ));
    assert_eq!(
        store.namespace("alice").await.unwrap(),
        Some(Namespace::User(alice.id))
    );
    assert_eq!(
        store.namespace("acme").await.unwrap(),
        Some(Namespace::Org(org.id))
    );
    assert_eq!(store.namespace("nobody").await.unwrap(), None);
    let creds = store.user_credentials("alice").await.unwrap().unwrap();
    assert_eq!(creds.password_hash, "hash-a");
    assert!(store.set_password("alice", "hash-b").await.unwrap());
    assert!(store.set_disabled("alice", true).await.unwrap());
    assert!(store.set_admin("alice", true).await.unwrap());
    assert!(!store.set_password("nobody", "x").await.unwrap());
    let u = store.user_credentials("alice").await.unwrap().unwrap();
    assert_eq!(
        (u.password_hash.as_str(), u.user.disabled, u.user.is_admin),
        ("hash-b", true, true)
    );
    assert_eq!(store.count_users().await.unwrap(), 1);
    assert_eq!(store.list_users().await.unwrap().len(), 1);
}

pub async fn access_tokens_lifecycle(store: &dyn MetaStore) {
    let u = store.create_user("tok", "h", false).await.unwrap();
    let t = store
        .create_token(u.id, "ci", "hash-1", Some(123))
        .await
        .unwrap();
    let (found, owner) = store.token_by_hash("hash-1").await.unwrap().unwrap();
    assert_eq!(
        (
            found.id,
            found.label.as_str(),
            found.expires_at_ms,
            owner.name.as_str()
        ),
        (t.id, "ci", Some(123), "tok")
    );
    assert_eq!(store.token_by_id(t.id).await.unwrap().unwrap().0, found);
    assert!(store.token_by_hash("hash-2").await.unwrap().is_none());
    store.touch_token(t.id, 999).await.unwrap();
    assert_eq!(
        store.list_tokens(u.id).await.unwrap()[0].last_used_at_ms,
        Some(999)
    );
    assert!(store.revoke_token(u.id, t.id).await.unwrap());
    assert!(
        !store.revoke_token(u.id, t.id).await.unwrap(),
        "already revoked"
    );
    assert!(store
        .token_by_hash("hash-1")
        .await
        .unwrap()
        .unwrap()
        .0
        .revoked_at_ms
        .is_some());
    let other = store.create_user("other", "h", false).await.unwrap();
    let t2 = store
        .create_token(u.id, "second", "hash-3", None)
        .await
        .unwrap();
    assert!(
        !store.revoke_token(other.id, t2.id).await.unwrap(),
        "only the owner's tokens"
    );
}

pub async fn repository_facts_combine_grants_teams_and_namespaces(store: &dyn MetaStore) {
    let alice = store.create_user("alice", "h", false).await.unwrap();
    let bob = store.create_user("bob", "h", false).await.unwrap();
    let org = store.create_org("acme").await.unwrap();
    let facts = |uid: Option<i64>, repo: &'static str| async move {
        store.repo_facts(uid, repo).await.unwrap()
    };
    assert_eq!(
        facts(Some(alice.id), "alice/app").await,
        RepoFacts {
            own_namespace: true,
            ..RepoFacts::default()
        }
    );
    assert_eq!(facts(Some(bob.id), "alice/app").await, RepoFacts::default());
    store.set_org_member(org.id, bob.id, true).await.unwrap();
    let f = facts(Some(bob.id), "acme/app").await;
    assert!(f.org_member && f.org_admin);
    store.set_org_member(org.id, alice.id, false).await.unwrap();
    let f = facts(Some(alice.id), "acme/app").await;
    assert!(f.org_member && !f.org_admin && f.granted.is_none());
    let team = store.create_team(org.id, "devs").await.unwrap();
    assert!(matches!(
        store.create_team(org.id, "devs").await,
        Err(MetaError::Conflict(_))
    ));
    assert_eq!(
        store.team_by_name(org.id, "devs").await.unwrap(),
        Some(team.clone())
    );
    store.add_team_member(team.id, alice.id).await.unwrap();
    store
        .grant("acme/app", Subject::Team(team.id), Level::Write)
        .await
        .unwrap();
    store
        .grant("acme/app", Subject::User(alice.id), Level::Read)
        .await
        .unwrap();
    assert_eq!(
        facts(Some(alice.id), "acme/app").await.granted,
        Some(Level::Write),
        "the highest grant wins"
    );
    store
        .grant("acme/app", Subject::User(alice.id), Level::Admin)
        .await
        .unwrap();
    assert_eq!(
        facts(Some(alice.id), "acme/app").await.granted,
        Some(Level::Admin)
    );
    assert!(store
        .revoke_grant("acme/app", Subject::User(alice.id))
        .await
        .unwrap());
    assert!(store.remove_team_member(team.id, alice.id).await.unwrap());
    assert_eq!(facts(Some(alice.id), "acme/app").await.granted, None);
    assert_eq!(facts(None, "acme/app").await.visibility, None);
    store
        .set_visibility("acme/app", Visibility::Public)
        .await
        .unwrap();
    assert_eq!(
        facts(None, "acme/app").await.visibility,
        Some(Visibility::Public)
    );
    assert!(store.remove_org_member(org.id, alice.id).await.unwrap());
    assert!(!facts(Some(alice.id), "acme/app").await.org_member);
}

pub async fn the_first_signing_key_wins(store: &dyn MetaStore) {
    let key = |id: &str| SigningKey {
        id: id.into(),
        secret: id.as_bytes().to_vec(),
        created_at_ms: 1,
    };
    let first = store.signing_keys(key("one")).await.unwrap();
    let second = store.signing_keys(key("two")).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(second.len(), 1);
    assert_eq!(
        (first[0].id.as_str(), second[0].id.as_str()),
        ("one", "one")
    );
    assert_eq!(second[0].secret, b"one");
}

pub async fn audit_log_is_newest_first_and_paginated(store: &dyn MetaStore) {
    for i in 0..5 {
        store
            .audit("admin", "user.create", &format!("u{i}"), None)
            .await
            .unwrap();
    }
    let all = store.list_audit(None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        ["u4", "u3", "u2", "u1", "u0"]
    );
    let page = store.list_audit(Some(all[1].id), 2).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        ["u2", "u1"]
    );
}

// ---------------------------------------------------------------- replicas

pub async fn replicas_heartbeat_and_expire(store: &dyn MetaStore) {
    let report = |id: &str, version: &str| crate::ReplicaReport {
        id: id.into(),
        address: "127.0.0.1:5000".into(),
        version: version.into(),
        schema_level: 1,
        started_at_ms: now_ms(),
        clock_ms: now_ms(),
        disk_free_bytes: 10,
        disk_total_bytes: 100,
        memory_available_bytes: 1000,
        heartbeat_interval_ms: 5000,
    };
    let before = now_ms();
    store.heartbeat(&report("a", "1.0.0")).await.unwrap();
    store.heartbeat(&report("b", "1.0.0")).await.unwrap();
    store.heartbeat(&report("a", "1.1.0")).await.unwrap();
    let (rows, now) = store.replicas().await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r.report.id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(
        rows[0].report.version, "1.1.0",
        "a heartbeat updates the row"
    );
    assert!(rows[0].heartbeat_at_ms >= before - 1000 && rows[0].heartbeat_at_ms <= now + 1000);
    store.remove_replica("b").await.unwrap();
    assert_eq!(store.replicas().await.unwrap().0.len(), 1);
    assert_eq!(store.expire_replicas(now + 60_000).await.unwrap(), 1);
    assert!(store.replicas().await.unwrap().0.is_empty());
}

pub async fn content_caches_tokens_heartbeats_and_routes(store: &dyn MetaStore) {
    store
        .create_content_cache("eu", "http://127.0.0.1:1", "eu-west", "hash-eu")
        .await
        .unwrap();
    store
        .create_content_cache("us", "http://127.0.0.1:2", "us-east", "hash-us")
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_content_cache("eu", "http://x", "r", "hash-other")
            .await,
        Err(MetaError::Conflict(_))
    ));
    let found = store.content_cache_by_token("hash-us").await.unwrap();
    assert_eq!(found.map(|c| c.name).as_deref(), Some("us"));
    assert!(store
        .content_cache_by_token("nope")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .set_content_cache_token("us", "hash-us-2")
        .await
        .unwrap());
    assert!(store
        .content_cache_by_token("hash-us")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .update_content_cache("us", "http://127.0.0.1:3", "us-west")
        .await
        .unwrap());
    assert!(!store.update_content_cache("none", "u", "r").await.unwrap());

    let before = now_ms();
    assert!(store
        .content_cache_heartbeat("eu", r#"{"state":"serving"}"#)
        .await
        .unwrap());
    assert!(!store.content_cache_heartbeat("gone", "{}").await.unwrap());
    let (rows, now) = store.content_caches().await.unwrap();
    assert_eq!(
        rows.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["eu", "us"]
    );
    let at = rows[0].heartbeat_at_ms.unwrap();
    assert!(at >= before - 1000 && at <= now + 1000);
    assert_eq!(rows[0].report.as_deref(), Some(r#"{"state":"serving"}"#));
    assert_eq!(
        (rows[1].url.as_str(), rows[1].region.as_str()),
        ("http://127.0.0.1:3", "us-west")
    );
    assert!(rows[1].heartbeat_at_ms.is_none());

    // Routes: a user's own choice wins over a team's; a team's reaches its members.
    let alice = store.create_user("alice", "h", false).await.unwrap();
    let bob = store.create_user("bob", "h", false).await.unwrap();
    let carol = store.create_user("carol", "h", false).await.unwrap();
    let org = store.create_org("acme").await.unwrap();
    let team = store.create_team(org.id, "ops").await.unwrap();
    store.add_team_member(team.id, alice.id).await.unwrap();
    store.add_team_member(team.id, bob.id).await.unwrap();
    store
        .choose_content_cache(Subject::Team(team.id), Some("us"))
        .await
        .unwrap();
    store
        .choose_content_cache(Subject::User(alice.id), Some("eu"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .choose_content_cache(Subject::User(carol.id), Some("mars"))
            .await,
        Err(MetaError::Conflict(_))
    ));
    let mut routes = store.content_cache_routes().await.unwrap();
    routes.sort();
    assert_eq!(
        routes,
        [(alice.id, "eu".to_string()), (bob.id, "us".to_string())]
    );
    assert_eq!(
        store
            .content_cache_choice(Subject::User(alice.id))
            .await
            .unwrap()
            .as_deref(),
        Some("eu")
    );
    store
        .choose_content_cache(Subject::User(alice.id), None)
        .await
        .unwrap();
    let mut routes = store.content_cache_routes().await.unwrap();
    routes.sort();
    assert_eq!(
        routes,
        [(alice.id, "us".to_string()), (bob.id, "us".to_string())]
    );
    // Deleting a cache forgets the choices of it.
    assert!(store.delete_content_cache("us").await.unwrap());
    assert!(!store.delete_content_cache("us").await.unwrap());
    assert!(store.content_cache_routes().await.unwrap().is_empty());
    assert!(store
        .content_cache_choice(Subject::Team(team.id))
        .await
        .unwrap()
        .is_none());
}

// ---------------------------------------------------------------- backups

use crate::dump::{BackupRecord, DumpItem, TABLES};

/// Everything the export of `store` sends.
async fn export_all(store: &dyn MetaStore) -> Vec<DumpItem> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let (done, items) = tokio::join!(store.export(tx), async {
        let mut items = Vec::new();
        while let Some(i) = rx.recv().await {
            items.push(i);
        }
        items
    });
    done.unwrap();
    items
}

async fn import_all(
    store: &dyn MetaStore,
    items: Vec<DumpItem>,
    replace: bool,
) -> crate::Result<u64> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let (loaded, _) = tokio::join!(store.import(rx, replace), async move {
        for i in items {
            if tx.send(i).await.is_err() {
                break;
            }
        }
    });
    loaded
}

/// Rows of each table, sorted, so two dumps compare regardless of row order.
fn by_table(items: &[DumpItem]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for i in items {
        match i {
            DumpItem::Table { name, .. } => out.push((name.clone(), Vec::new())),
            DumpItem::Row(r) => out.last_mut().unwrap().1.push(format!("{r:?}")),
        }
    }
    for (_, rows) in &mut out {
        rows.sort();
    }
    out
}

/// A store with something in every table a backup holds.
async fn populate(store: &dyn MetaStore) {
    let r = repo("team/app");
    let layer = blob(store, &r, b"layer").await;
    let mut m = manifest(r#"{"backup":1}"#, vec![layer], vec![]);
    m.summary = Some(wharf_oci::ManifestSummary {
        size: 10,
        platforms: Some("linux/amd64".into()),
    });
    store.put_manifest(&r, &m, Some(&tag("v1"))).await.unwrap();
    // What scanning keeps in a backup: the policies and the allowlist (booleans and
    // NULLs included).
    store
        .set_scan_policy(
            "",
            &crate::scan::ScanPolicy {
                scan_on_push: true,
                block_severity: None,
                unscanned: "allow".into(),
                attach_sbom: false,
            },
        )
        .await
        .unwrap();
    store
        .add_allow(&crate::scan::AllowRow {
            repository: "team/app".into(),
            vuln_id: "CVE-2024-1".into(),
            expires_at_ms: None,
            reason: "not reachable".into(),
            created_by: "alice".into(),
            created_at_ms: 0,
        })
        .await
        .unwrap();
    let alice = store.create_user("alice", "hash-a", true).await.unwrap();
    store
        .create_token(alice.id, "ci", "token-hash", None)
        .await
        .unwrap();
    let org = store.create_org("team").await.unwrap();
    store.set_org_member(org.id, alice.id, false).await.unwrap();
    let team = store.create_team(org.id, "devs").await.unwrap();
    store.add_team_member(team.id, alice.id).await.unwrap();
    store
        .set_visibility("team/app", Visibility::Public)
        .await
        .unwrap();
    store
        .grant("team/app", Subject::Team(team.id), Level::Write)
        .await
        .unwrap();
    store
        .create_content_cache("eu", "https://cache-eu.example", "eu-west", "cache-hash")
        .await
        .unwrap();
    store
        .content_cache_heartbeat("eu", r#"{"state":"serving"}"#)
        .await
        .unwrap();
    store
        .choose_content_cache(Subject::Team(team.id), Some("eu"))
        .await
        .unwrap();
    store
        .signing_keys(SigningKey {
            id: "k1".into(),
            secret: vec![0, 159, 255],
            created_at_ms: 7,
        })
        .await
        .unwrap();
    store
        .audit("alice", "push", "team/app", Some("{}"))
        .await
        .unwrap();
    store
        .put_cron(&crate::jobs::Cron {
            name: "nightly".into(),
            action: "gc".into(),
            params: "{}".into(),
            schedule: "0 3 * * *".into(),
            run_for_minutes: None,
            enabled: true,
            next_run_at_ms: 5,
            last_job_id: None,
        })
        .await
        .unwrap();
    store
        .create_proxy(&crate::proxy::ProxyConfig {
            prefix: "hub/".into(),
            upstreams: vec!["https://upstream.example".into()],
            username: Some("u".into()),
            password: Some("p".into()),
            revalidate_secs: 60,
            max_bytes: None,
            max_idle_days: Some(30),
            created_at_ms: 1,
            updated_at_ms: 1,
        })
        .await
        .unwrap();
    let (proxied, digest) = (repo("hub/library/alpine"), Digest::sha256_of(b"proxied"));
    store
        .set_proxy_tag(&proxied, &tag("3"), &digest, 9)
        .await
        .unwrap();
    store
        .touch_proxied_manifest("hub/", &proxied, &digest, 123, 9)
        .await
        .unwrap();
}

pub async fn backup_export_and_import_round_trip(store: &dyn MetaStore) {
    assert!(store.is_empty().await.unwrap());
    populate(store).await;
    assert!(!store.is_empty().await.unwrap());
    let dump = export_all(store).await;
    let tables: Vec<String> = by_table(&dump).into_iter().map(|(t, _)| t).collect();
    assert_eq!(tables, TABLES, "every table, in load order");
    for (table, rows) in by_table(&dump) {
        assert!(!rows.is_empty(), "{table} has rows to back up");
    }

    // Into a store that holds data: refused without replace, and nothing changes.
    let err = import_all(store, dump.clone(), false).await.unwrap_err();
    assert!(err.to_string().contains("--replace"), "{err}");
    assert_eq!(by_table(&export_all(store).await), by_table(&dump));

    // With replace: the same rows come back, booleans and bytes intact.
    store.create_user("bob", "hash-b", false).await.unwrap();
    let rows = dump
        .iter()
        .filter(|i| matches!(i, DumpItem::Row(_)))
        .count();
    assert_eq!(
        import_all(store, dump.clone(), true).await.unwrap(),
        rows as u64
    );
    assert_eq!(by_table(&export_all(store).await), by_table(&dump));
    assert!(
        store.user_credentials("bob").await.unwrap().is_none(),
        "replaced"
    );
    let alice = store.user_credentials("alice").await.unwrap().unwrap();
    assert!(alice.user.is_admin);
    // Ids handed out after a load do not collide with loaded ones.
    let carol = store.create_user("carol", "hash-c", false).await.unwrap();
    assert!(carol.id > alice.user.id);
    let key = store.signing_keys(SigningKey {
        id: "k2".into(),
        secret: vec![1],
        created_at_ms: 8,
    });
    assert_eq!(key.await.unwrap()[0].secret, vec![0, 159, 255]);

    // A failed load changes nothing: a row of the wrong shape aborts it.
    let mut broken = dump.clone();
    broken.push(DumpItem::Row(vec![]));
    assert!(import_all(store, broken, true).await.is_err());
    assert!(store.user_credentials("carol").await.unwrap().is_some());
}

pub async fn backup_export_is_one_snapshot(store: &dyn MetaStore) {
    populate(store).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let export = store.export(tx);
    let late_writer = async {
        // The first item is sent after the snapshot is taken; what commits now must
        // not show up in the export, however far the export has got.
        let first = rx.recv().await.unwrap();
        let r = repo("late/arrival");
        let d = blob(store, &r, b"late").await;
        store.create_user("late", "hash", false).await.unwrap();
        let mut items = vec![first];
        while let Some(i) = rx.recv().await {
            items.push(i);
        }
        (items, d)
    };
    let (done, (items, late_blob)) = tokio::join!(export, late_writer);
    done.unwrap();
    let text = format!("{items:?}");
    assert!(text.contains("team/app"));
    assert!(
        !text.contains("late/arrival"),
        "a repository created during the export"
    );
    assert!(
        !text.contains(late_blob.hex()),
        "a blob stored during the export"
    );
    assert!(
        !text.contains("\"late\""),
        "a user created during the export"
    );
}

pub async fn backups_are_recorded_newest_first(store: &dyn MetaStore) {
    assert!(store.backups(10).await.unwrap().is_empty());
    let record = |scope: &str| BackupRecord {
        finished_at_ms: 0,
        scope: scope.into(),
        wharf_version: "1.0.0".into(),
        schema_level: SCHEMA_LEVEL,
        location: format!("/backups/{scope}.tar"),
        bytes: 1234,
        checksum: "sha256:abc".into(),
    };
    let before = now_ms();
    store.record_backup(&record("metadata")).await.unwrap();
    store
        .record_backup(&record("metadata+blobs"))
        .await
        .unwrap();
    let got = store.backups(10).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].scope, "metadata+blobs");
    assert_eq!(got[1].location, "/backups/metadata.tar");
    // Stamped by the store's clock when recorded.
    assert!(got[0].finished_at_ms >= before - 5_000, "{got:?}");
    assert_eq!(store.backups(1).await.unwrap().len(), 1);
}

// ---------------------------------------------------------------- jobs

use crate::jobs::{Cron, JobStatus, Lease, NewJob, Outcome, Worker, JOB_LOG_CAP_BYTES};

fn new_job(action: &str) -> NewJob {
    NewJob {
        action: action.into(),
        params: "{}".into(),
        max_attempts: 3,
        deadline_ms: None,
        cron: None,
    }
}

fn failed(retry_after_ms: i64) -> Outcome {
    Outcome::Failed {
        error: "boom".into(),
        retry_after_ms,
    }
}

pub async fn jobs_are_claimed_in_order_one_per_action(store: &dyn MetaStore) {
    let gc1 = store.enqueue(&new_job("gc")).await.unwrap();
    let gc2 = store.enqueue(&new_job("gc")).await.unwrap();
    let purge = store.enqueue(&new_job("purge_uploads")).await.unwrap();
    assert_eq!(gc1.status, JobStatus::Waiting);
    let actions = ["gc", "purge_uploads"];
    let a = store.claim("w1", &actions).await.unwrap().unwrap();
    assert_eq!(
        (a.id, a.status, a.attempts),
        (gc1.id, JobStatus::Running, 1)
    );
    assert_eq!(a.worker_id.as_deref(), Some("w1"));
    // The second gc waits for the first: the next claim takes the purge.
    let b = store.claim("w2", &actions).await.unwrap().unwrap();
    assert_eq!(b.id, purge.id);
    assert!(store.claim("w3", &actions).await.unwrap().is_none());
    // A worker only gets the actions it knows.
    store
        .finish_job(a.id, "w1", &Outcome::Done)
        .await
        .unwrap()
        .unwrap();
    assert!(store
        .claim("w3", &["purge_uploads"])
        .await
        .unwrap()
        .is_none());
    let c = store.claim("w3", &actions).await.unwrap().unwrap();
    assert_eq!(c.id, gc2.id);
    let done = store.job(gc1.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Done);
    assert!(done.finished_at_ms.is_some());
    let listed: Vec<i64> = store
        .jobs(None, None, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, vec![purge.id, gc2.id, gc1.id], "newest first");
    let running = store
        .jobs(Some("gc"), Some(JobStatus::Running), None, 10)
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(
        store.jobs(None, None, Some(gc2.id), 10).await.unwrap()[0].id,
        gc1.id
    );
}

/// Scans wait for every other kind of job: scan on push queues many, and a garbage
/// collection or an upgrade's migration must not queue behind them.
pub async fn scans_are_claimed_after_other_jobs(store: &dyn MetaStore) {
    let scan1 = store.enqueue(&new_job("scan")).await.unwrap();
    let scan2 = store.enqueue(&new_job("scan")).await.unwrap();
    let migration = store
        .enqueue(&new_job("metadatastoremigration"))
        .await
        .unwrap();
    let actions = ["scan", "metadatastoremigration"];
    let first = store.claim("w1", &actions).await.unwrap().unwrap();
    assert_eq!(first.id, migration.id, "the migration goes first");
    let second = store.claim("w2", &actions).await.unwrap().unwrap();
    assert_eq!(second.id, scan1.id, "then scans, in order");
    assert!(store.claim("w3", &actions).await.unwrap().is_none());
    store
        .finish_job(second.id, "w2", &Outcome::Done)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.claim("w2", &actions).await.unwrap().unwrap().id,
        scan2.id
    );
}

pub async fn failed_jobs_are_retried_until_attempts_run_out(store: &dyn MetaStore) {
    let job = store.enqueue(&new_job("gc")).await.unwrap();
    for attempt in 1..=3u32 {
        let j = store
            .claim("w", &["gc"])
            .await
            .unwrap()
            .expect("claimable again");
        assert_eq!((j.id, j.attempts), (job.id, attempt));
        let after = store
            .finish_job(j.id, "w", &failed(0))
            .await
            .unwrap()
            .unwrap();
        let expected = if attempt < 3 {
            JobStatus::Waiting
        } else {
            JobStatus::Error
        };
        assert_eq!(after.status, expected, "after attempt {attempt}");
        assert_eq!(after.last_error.as_deref(), Some("boom"));
    }
    assert!(
        store.claim("w", &["gc"]).await.unwrap().is_none(),
        "no fourth attempt"
    );
    // A retry waits for its back-off.
    let slow = store.enqueue(&new_job("gc")).await.unwrap();
    let j = store.claim("w", &["gc"]).await.unwrap().unwrap();
    assert_eq!(j.id, slow.id);
    store
        .finish_job(j.id, "w", &failed(3_600_000))
        .await
        .unwrap();
    assert!(
        store.claim("w", &["gc"]).await.unwrap().is_none(),
        "backing off"
    );
}

pub async fn jobs_heartbeat_and_cancel(store: &dyn MetaStore) {
    let waiting = store.enqueue(&new_job("purge_uploads")).await.unwrap();
    let cancelled = store.cancel_job(waiting.id).await.unwrap().unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(store
        .claim("w", &["purge_uploads"])
        .await
        .unwrap()
        .is_none());

    let job = store.enqueue(&new_job("gc")).await.unwrap();
    let j = store.claim("w", &["gc"]).await.unwrap().unwrap();
    assert_eq!(
        store
            .job_heartbeat(j.id, "w", Some(r#"{"done":1}"#))
            .await
            .unwrap(),
        Lease::Held
    );
    assert_eq!(
        store.job(j.id).await.unwrap().unwrap().progress.as_deref(),
        Some(r#"{"done":1}"#)
    );
    assert_eq!(
        store.job_heartbeat(j.id, "intruder", None).await.unwrap(),
        Lease::Lost
    );
    let c = store.cancel_job(job.id).await.unwrap().unwrap();
    assert_eq!(c.status, JobStatus::CancelRequest);
    assert_eq!(
        store.job_heartbeat(j.id, "w", None).await.unwrap(),
        Lease::CancelRequested
    );
    let end = store
        .finish_job(j.id, "w", &Outcome::Cancelled)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end.status, JobStatus::Cancelled);
    // A stopping worker hands its job back without using up an attempt.
    let handed = store.enqueue(&new_job("purge_uploads")).await.unwrap();
    let h = store.claim("w", &["purge_uploads"]).await.unwrap().unwrap();
    let back = store
        .finish_job(h.id, "w", &Outcome::Released)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (back.status, back.attempts, back.worker_id),
        (JobStatus::Waiting, 0, None)
    );
    let again = store
        .claim("w2", &["purge_uploads"])
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.id, again.attempts), (handed.id, 1));
    // Finished jobs are left alone; unknown ones are None.
    assert_eq!(
        store.cancel_job(job.id).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );
    assert!(store.cancel_job(999_999).await.unwrap().is_none());
}

pub async fn jobs_of_dead_workers_are_requeued(store: &dyn MetaStore) {
    let job = store.enqueue(&new_job("gc")).await.unwrap();
    let j = store.claim("w1", &["gc"]).await.unwrap().unwrap();
    let now = store.store_now().await.unwrap();
    // Nothing is dead yet by an old cutoff.
    assert!(store.reap_dead_jobs(now - 60_000).await.unwrap().is_empty());
    let reaped = store.reap_dead_jobs(now + 60_000).await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(
        (reaped[0].job_id, reaped[0].status),
        (job.id, JobStatus::Waiting)
    );
    // The dead worker, should it wake up, has lost the job.
    assert_eq!(
        store.job_heartbeat(j.id, "w1", None).await.unwrap(),
        Lease::Lost
    );
    assert!(store
        .finish_job(j.id, "w1", &Outcome::Done)
        .await
        .unwrap()
        .is_none());
    let again = store.claim("w2", &["gc"]).await.unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (job.id, 2));
    let log = store.job_log(job.id, 0, 10).await.unwrap();
    assert!(
        log.iter()
            .any(|l| l.line.contains("worker_dead") && l.line.contains("w1")),
        "{log:?}"
    );
    // Out of attempts: the job stays dead.
    store.finish_job(again.id, "w2", &failed(0)).await.unwrap();
    store.claim("w3", &["gc"]).await.unwrap().unwrap();
    let reaped = store
        .reap_dead_jobs(store.store_now().await.unwrap() + 60_000)
        .await
        .unwrap();
    assert_eq!(reaped[0].status, JobStatus::WorkerDead);
    assert_eq!(
        store.job(job.id).await.unwrap().unwrap().status,
        JobStatus::WorkerDead
    );
}

pub async fn job_logs_are_ordered_and_capped(store: &dyn MetaStore) {
    let job = store.enqueue(&new_job("gc")).await.unwrap();
    store
        .append_job_log(job.id, 1, &["one".into(), "two".into()])
        .await
        .unwrap();
    store
        .append_job_log(job.id, 2, &["three".into()])
        .await
        .unwrap();
    let log = store.job_log(job.id, 0, 10).await.unwrap();
    let lines: Vec<(&str, u32)> = log.iter().map(|l| (l.line.as_str(), l.attempt)).collect();
    assert_eq!(lines, [("one", 1), ("two", 1), ("three", 2)]);
    let rest = store.job_log(job.id, log[0].seq, 10).await.unwrap();
    assert_eq!(rest.len(), 2);
    // Past the cap, one line says so and nothing more is kept.
    let big = "x".repeat(64 * 1024);
    let n = (JOB_LOG_CAP_BYTES as usize / big.len()) + 4;
    store
        .append_job_log(job.id, 2, &vec![big; n])
        .await
        .unwrap();
    store
        .append_job_log(job.id, 2, &["after the cap".into()])
        .await
        .unwrap();
    let all = store.job_log(job.id, 0, 1000).await.unwrap();
    let kept: usize = all.iter().map(|l| l.line.len()).sum();
    assert!(kept as i64 <= JOB_LOG_CAP_BYTES + 100, "{kept}");
    assert!(
        all.last().unwrap().line.contains("size limit"),
        "{:?}",
        all.last()
    );
    assert!(!all.iter().any(|l| l.line == "after the cap"));
}

pub async fn workers_and_crons(store: &dyn MetaStore) {
    let w = Worker {
        id: "w1".into(),
        address: "http://127.0.0.1:5000".into(),
        version: "1.1.0".into(),
        actions: "gc,purge_uploads".into(),
        started_at_ms: 1,
        heartbeat_at_ms: 0,
        job_id: Some(7),
    };
    store.worker_heartbeat(&w).await.unwrap();
    let (workers, now) = store.workers().await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].job_id, Some(7));
    assert!((now - workers[0].heartbeat_at_ms).abs() < 5_000);
    assert_eq!(store.expire_workers(now - 60_000).await.unwrap(), 0);
    assert_eq!(store.expire_workers(now + 60_000).await.unwrap(), 1);

    let cron = Cron {
        name: "nightly-gc".into(),
        action: "gc".into(),
        params: "{}".into(),
        schedule: "0 3 * * *".into(),
        run_for_minutes: Some(30),
        enabled: true,
        next_run_at_ms: 1_000,
        last_job_id: None,
    };
    store.put_cron(&cron).await.unwrap();
    let job = NewJob {
        cron: Some("nightly-gc".into()),
        ..new_job("gc")
    };
    let fired = store
        .fire_cron("nightly-gc", 1_000, 2_000, &job)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fired.cron.as_deref(), Some("nightly-gc"));
    // Another replica firing the same due time gets nothing.
    assert!(store
        .fire_cron("nightly-gc", 1_000, 2_000, &job)
        .await
        .unwrap()
        .is_none());
    let crons = store.crons().await.unwrap();
    assert_eq!(
        (crons[0].next_run_at_ms, crons[0].last_job_id),
        (2_000, Some(fired.id))
    );
    assert_eq!(crons[0].run_for_minutes, Some(30));
    assert!(store.delete_cron("nightly-gc").await.unwrap());
    assert!(!store.delete_cron("nightly-gc").await.unwrap());
}

/// Many workers claiming at once: every job is run by exactly one of them.
pub async fn concurrent_claims_take_each_job_once(store: &dyn MetaStore) {
    let actions: Vec<String> = (0..24).map(|i| format!("action-{i}")).collect();
    for a in &actions {
        store.enqueue(&new_job(a)).await.unwrap();
    }
    let refs: Vec<&str> = actions.iter().map(String::as_str).collect();
    let claims = (0..6).map(|w| {
        let refs = refs.clone();
        async move {
            let mut mine = Vec::new();
            for _ in 0..100 {
                match store.claim(&format!("w{w}"), &refs).await.unwrap() {
                    Some(j) => mine.push(j.id),
                    None => break,
                }
            }
            mine
        }
    });
    let mut all: Vec<i64> = futures_util::future::join_all(claims)
        .await
        .into_iter()
        .flatten()
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (24, 24), "each job claimed once");
}

// ---------------------------------------------------------------- garbage collection

use crate::gc::DeleteBytes;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc as StdArc;

fn counting_deleter(count: &StdArc<AtomicUsize>, fail: bool) -> DeleteBytes {
    let count = count.clone();
    Box::new(move |digests| {
        Box::pin(async move {
            count.fetch_add(digests.len(), AtomicOrdering::SeqCst);
            digests
                .iter()
                .map(|_| {
                    if fail {
                        Err("disk on fire".to_string())
                    } else {
                        Ok(())
                    }
                })
                .collect()
        })
    })
}

pub async fn gc_removes_only_unreferenced_links_and_blobs(store: &dyn MetaStore) {
    let r = repo("gc/app");
    let used = blob(store, &r, b"used layer").await;
    let unused = blob(store, &r, b"abandoned layer").await;
    let m = manifest(r#"{"gc":1}"#, vec![used.clone()], vec![]);
    store.put_manifest(&r, &m, Some(&tag("v1"))).await.unwrap();
    assert_eq!(
        store.count_manifests_without_refs().await.unwrap(),
        0,
        "1.1.0 records references on push"
    );

    // Within the grace period nothing is a candidate.
    let long_ago = now_ms() - 3_600_000;
    assert!(store
        .unreferenced_links(long_ago, None, 100)
        .await
        .unwrap()
        .is_empty());
    let cutoff = now_ms() + 60_000;
    let links = store.unreferenced_links(cutoff, None, 100).await.unwrap();
    assert_eq!(
        links.iter().map(|l| &l.digest).collect::<Vec<_>>(),
        vec![&unused]
    );
    assert_eq!(links[0].repository, "gc/app");
    assert_eq!(
        store.unlink_unreferenced(&links, long_ago).await.unwrap(),
        0,
        "young link kept"
    );
    // A referenced link is never removed, whatever the candidate list said.
    let forged = crate::gc::Link {
        repository_id: links[0].repository_id,
        repository: "gc/app".into(),
        digest: used.clone(),
    };
    let batch = vec![forged, links[0].clone()];
    assert_eq!(store.unlink_unreferenced(&batch, cutoff).await.unwrap(), 1);
    assert_eq!(
        store.unlink_unreferenced(&batch, cutoff).await.unwrap(),
        0,
        "already gone"
    );
    assert_eq!(store.repo_blob(&r, &used).await.unwrap(), Some(10));

    // The blob is now linked nowhere: its row and bytes go, together.
    let blobs = store.unlinked_blobs(cutoff, None, 100).await.unwrap();
    assert_eq!(blobs, vec![(unused.clone(), 15)]);
    let calls = StdArc::new(AtomicUsize::new(0));
    let both = vec![used.clone(), unused.clone()];
    let outcome = store
        .delete_unlinked_blobs(&both, cutoff, counting_deleter(&calls, true))
        .await
        .unwrap();
    assert!(outcome.deleted.is_empty());
    assert_eq!(
        outcome.failed,
        vec![(unused.clone(), "disk on fire".to_string())],
        "a failed byte deletion is reported"
    );
    assert_eq!(
        store.blob_size(&unused).await.unwrap(),
        Some(15),
        "and keeps the row"
    );
    assert_eq!(
        calls.load(AtomicOrdering::SeqCst),
        1,
        "the linked blob's bytes were never offered for deletion"
    );
    let outcome = store
        .delete_unlinked_blobs(&both, long_ago, counting_deleter(&calls, false))
        .await
        .unwrap();
    assert_eq!(outcome, Default::default(), "young blob kept");
    let outcome = store
        .delete_unlinked_blobs(&both, cutoff, counting_deleter(&calls, false))
        .await
        .unwrap();
    assert_eq!(outcome.deleted, vec![unused.clone()]);
    assert_eq!(calls.load(AtomicOrdering::SeqCst), 2);
    assert_eq!(store.blob_size(&unused).await.unwrap(), None);
    assert_eq!(store.blob_size(&used).await.unwrap(), Some(10));

    // Uploading or mounting again makes a link young again.
    let again = blob(store, &r, b"abandoned layer").await;
    assert_eq!(again, unused);
    assert!(store
        .unreferenced_links(now_ms() - 60_000, None, 100)
        .await
        .unwrap()
        .is_empty());
}

pub async fn gc_untagged_manifests_spare_tagged_children_and_referrers(store: &dyn MetaStore) {
    let r = repo("gc/multi");
    let child = manifest(r#"{"child":1}"#, vec![], vec![]);
    store.put_manifest(&r, &child, None).await.unwrap();
    let index = manifest(r#"{"index":1}"#, vec![], vec![child.digest.clone()]);
    store
        .put_manifest(&r, &index, Some(&tag("latest")))
        .await
        .unwrap();
    let mut orphan = manifest(r#"{"orphan":1}"#, vec![], vec![]);
    orphan.summary = Some(wharf_oci::ManifestSummary {
        size: 1,
        platforms: Some(String::new()),
    });
    store.put_manifest(&r, &orphan, None).await.unwrap();
    let mut sig = manifest(r#"{"signature":1}"#, vec![], vec![]);
    sig.subject = Some(index.digest.clone());
    store.put_manifest(&r, &sig, None).await.unwrap();

    let cutoff = now_ms() + 60_000;
    let found = store.untagged_manifests(cutoff, None, 100).await.unwrap();
    assert_eq!(
        found.iter().map(|m| &m.digest).collect::<Vec<_>>(),
        vec![&orphan.digest]
    );
    assert_eq!(
        store
            .delete_unused_manifests(&found, now_ms() - 60_000)
            .await
            .unwrap(),
        0,
        "young"
    );
    assert_eq!(
        store.delete_unused_manifests(&found, cutoff).await.unwrap(),
        1
    );
    assert_eq!(
        store.delete_orphan_summaries().await.unwrap(),
        0,
        "the collected manifest's summary went with it"
    );
    // Untagging the index frees it, and then its child.
    store.delete_tag(&r, &tag("latest")).await.unwrap();
    let found = store.untagged_manifests(cutoff, None, 100).await.unwrap();
    assert_eq!(
        found.iter().map(|m| &m.digest).collect::<Vec<_>>(),
        vec![&index.digest]
    );
    let child_key = crate::gc::ManifestKey {
        repository_id: found[0].repository_id,
        repository: "gc/multi".into(),
        digest: child.digest.clone(),
    };
    assert_eq!(
        store
            .delete_unused_manifests(std::slice::from_ref(&child_key), cutoff)
            .await
            .unwrap(),
        0,
        "still in the index"
    );
    assert_eq!(
        store.delete_unused_manifests(&found, cutoff).await.unwrap(),
        1
    );
    assert_eq!(
        store
            .delete_unused_manifests(&[child_key], cutoff)
            .await
            .unwrap(),
        1,
        "freed once the index went"
    );
}

// ---------------------------------------------------------------- browsing (web UI)

use crate::browse::{RepoCursor, RepoQuery, RepoSort, Viewer};

fn names(rows: &[crate::browse::RepoSummary]) -> Vec<&str> {
    rows.iter().map(|r| r.name.as_str()).collect()
}

pub async fn browsing_shows_what_each_viewer_may_see_in_keyset_pages(store: &dyn MetaStore) {
    let alice = store.create_user("alice", "x", false).await.unwrap();
    let bob = store.create_user("bob", "x", false).await.unwrap();
    let acme = store.create_org("acme").await.unwrap();
    store.set_org_member(acme.id, bob.id, true).await.unwrap();
    let team = store.create_team(acme.id, "devs").await.unwrap();
    store.add_team_member(team.id, alice.id).await.unwrap();
    let m = manifest("browse", vec![], vec![]);
    for (name, tags) in [
        ("acme/api", vec!["v1"]),
        ("acme/web", vec!["v1", "v2", "v3"]),
        ("alice/tool", vec!["latest"]),
        // Not in alice's namespace, though its name starts with hers.
        ("alice-bot/x", vec!["1"]),
        ("bob/secret", vec!["x"]),
        ("library/alpine", vec!["3.20", "latest"]),
        ("solo", vec![]),
    ] {
        let r = repo(name);
        store.put_manifest(&r, &m, None).await.unwrap();
        for t in tags {
            store.put_manifest(&r, &m, Some(&tag(t))).await.unwrap();
        }
    }
    store
        .set_visibility("library/alpine", Visibility::Public)
        .await
        .unwrap();
    store
        .grant("acme/web", Subject::Team(team.id), Level::Read)
        .await
        .unwrap();
    // Settings and grants may name repositories nobody pushed yet: they list nothing.
    store
        .set_visibility("ghost/public", Visibility::Public)
        .await
        .unwrap();
    store
        .grant("ghost/granted", Subject::User(alice.id), Level::Read)
        .await
        .unwrap();
    let all = |viewer: Viewer| async move {
        store
            .browse_repositories(
                &viewer,
                &RepoQuery {
                    limit: 100,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
    };
    let admin = all(Viewer::Admin).await;
    assert_eq!(
        names(&admin),
        [
            "acme/api",
            "acme/web",
            "alice-bot/x",
            "alice/tool",
            "bob/secret",
            "library/alpine",
            "solo"
        ]
    );
    assert_eq!(admin[1].tag_count, 3);
    assert_eq!(admin[6].tag_count, 0);
    assert!(admin[6].last_push_ms.is_none() && admin[1].last_push_ms.is_some());
    assert_eq!(admin[5].visibility, Some(Visibility::Public));
    assert_eq!(names(&all(Viewer::Anonymous).await), ["library/alpine"]);
    // Alice: her namespace, a grant to her team, public repositories.
    let alice_v = Viewer::User {
        id: alice.id,
        name: "alice".into(),
    };
    assert_eq!(
        names(&all(alice_v.clone()).await),
        ["acme/web", "alice/tool", "library/alpine"]
    );
    // A restricted viewer's keyset pages, also with a search.
    let alice_page = |after: Option<&str>, contains: &str| {
        let q = RepoQuery {
            after: after.map(|a| RepoCursor::Name(a.into())),
            contains: contains.into(),
            limit: 2,
            ..Default::default()
        };
        let v = alice_v.clone();
        async move { store.browse_repositories(&v, &q).await.unwrap() }
    };
    assert_eq!(
        names(&alice_page(None, "").await),
        ["acme/web", "alice/tool"]
    );
    assert_eq!(
        names(&alice_page(Some("alice/tool"), "").await),
        ["library/alpine"]
    );
    assert!(alice_page(Some("library/alpine"), "").await.is_empty());
    assert_eq!(
        names(&alice_page(Some("acme/web"), "a").await),
        ["alice/tool", "library/alpine"]
    );
    // Bob administers acme and owns his namespace.
    let bob_v = Viewer::User {
        id: bob.id,
        name: "bob".into(),
    };
    assert_eq!(
        names(&all(bob_v).await),
        ["acme/api", "acme/web", "bob/secret", "library/alpine"]
    );
    // Keyset pages: each starts after the last name of the one before.
    let page = |after: Option<&str>| {
        let q = RepoQuery {
            after: after.map(|a| RepoCursor::Name(a.into())),
            limit: 2,
            ..Default::default()
        };
        async move { store.browse_repositories(&Viewer::Admin, &q).await.unwrap() }
    };
    assert_eq!(names(&page(None).await), ["acme/api", "acme/web"]);
    assert_eq!(
        names(&page(Some("acme/web")).await),
        ["alice-bot/x", "alice/tool"]
    );
    assert_eq!(names(&page(Some("library/alpine")).await), ["solo"]);
    // A namespace (prefix) and a substring, also for a restricted viewer.
    let q = RepoQuery {
        prefix: "acme/".into(),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        names(&store.browse_repositories(&Viewer::Admin, &q).await.unwrap()),
        ["acme/api", "acme/web"]
    );
    let q = RepoQuery {
        contains: "l".into(),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        names(&store.browse_repositories(&alice_v, &q).await.unwrap()),
        ["alice/tool", "library/alpine"]
    );
    // By last push: newest first, then by name; the cursor carries both.
    let r = repo("alice/tool");
    let m2 = manifest("newer", vec![], vec![]);
    store
        .put_manifest(&r, &m2, Some(&tag("new")))
        .await
        .unwrap();
    let q = RepoQuery {
        sort: RepoSort::LastPush,
        limit: 2,
        ..Default::default()
    };
    let first = store.browse_repositories(&Viewer::Admin, &q).await.unwrap();
    assert_eq!(first[0].name, "alice/tool");
    let mut seen: Vec<String> = first.iter().map(|r| r.name.clone()).collect();
    let mut after = first.last().map(|r| r.cursor(RepoSort::LastPush));
    for _ in 0..10 {
        let q = RepoQuery {
            sort: RepoSort::LastPush,
            after: after.clone(),
            limit: 2,
            ..Default::default()
        };
        let next = store.browse_repositories(&Viewer::Admin, &q).await.unwrap();
        if next.is_empty() {
            break;
        }
        seen.extend(next.iter().map(|r| r.name.clone()));
        after = next.last().map(|r| r.cursor(RepoSort::LastPush));
    }
    assert_eq!(seen.len(), 7, "every repository once: {seen:?}");
    assert_eq!(
        seen.last().map(String::as_str),
        Some("solo"),
        "untagged last: {seen:?}"
    );
}

pub async fn browsing_tags_orgs_and_grants(store: &dyn MetaStore) {
    let r = repo("team/app");
    let m1 = manifest("t1", vec![], vec![]);
    let m2 = manifest("t2", vec![], vec![]);
    for (t, m) in [("b", &m1), ("a", &m1), ("c", &m2)] {
        store.put_manifest(&r, m, Some(&tag(t))).await.unwrap();
    }
    let page = store
        .tag_details("team/app", None, 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        page.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(page[0].digest, m1.digest.to_string());
    assert_eq!(page[0].payload.as_ref(), b"t1");
    assert_eq!(page[0].media_type, wharf_oci::media::OCI_MANIFEST);
    let rest = store
        .tag_details("team/app", Some("b"), 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].digest, m2.digest.to_string());
    assert!(store.tag_details("nope", None, 2).await.unwrap().is_none());
    assert_eq!(store.tag_count("team/app").await.unwrap(), 3);
    assert_eq!(store.tag_count("nope").await.unwrap(), 0);
    assert_eq!(
        store
            .tags_of_manifest("team/app", &m1.digest.to_string())
            .await
            .unwrap(),
        ["a", "b"]
    );
    let u = store.create_user("carol", "x", false).await.unwrap();
    let org = store.create_org("team").await.unwrap();
    store.set_org_member(org.id, u.id, false).await.unwrap();
    let t = store.create_team(org.id, "ops").await.unwrap();
    store.create_team(org.id, "empty").await.unwrap();
    store.add_team_member(t.id, u.id).await.unwrap();
    assert_eq!(
        store.list_orgs().await.unwrap(),
        [("team".to_string(), 1, 2)]
    );
    let d = store.org_detail("team").await.unwrap().unwrap();
    assert_eq!(d.members, [("carol".to_string(), false)]);
    assert_eq!(
        d.teams,
        [
            ("empty".to_string(), vec![]),
            ("ops".to_string(), vec!["carol".to_string()])
        ]
    );
    assert!(store.org_detail("none").await.unwrap().is_none());
    store
        .grant("team/app", Subject::User(u.id), Level::Write)
        .await
        .unwrap();
    store
        .grant("team/app", Subject::Team(t.id), Level::Read)
        .await
        .unwrap();
    assert_eq!(
        store.repo_grants("team/app").await.unwrap(),
        [
            (
                "team".to_string(),
                "team/ops".to_string(),
                "read".to_string()
            ),
            ("user".to_string(), "carol".to_string(), "write".to_string())
        ]
    );
}

// ---------------------------------------------------------------- vulnerability scanning

use crate::scan::{
    AdvisoryRow, AffectedRow, AllowRow, InventoryRow, MatchDiff, NewMatch, PackageRow, ScanPolicy,
};

fn pkg(ecosystem: &str, name: &str, version: &str, location: &str) -> PackageRow {
    PackageRow {
        ecosystem: ecosystem.into(),
        name: name.into(),
        version: version.into(),
        match_name: name.into(),
        match_version: version.into(),
        purl: format!("pkg:generic/{name}@{version}"),
        location: location.into(),
    }
}

fn scanned(packages: Vec<PackageRow>) -> InventoryRow {
    InventoryRow {
        status: "scanned".into(),
        os_json: Some(r#"{"id":"debian","version_id":"12"}"#.into()),
        scanner_version: "1.2.0".into(),
        error: None,
        notes_json: "[]".into(),
        packages,
    }
}

fn advisory(id: &str, severity: &str, packages: &[(&str, &str)]) -> AdvisoryRow {
    AdvisoryRow {
        id: id.into(),
        modified: "2024-01-01T00:00:00Z".into(),
        withdrawn: None,
        aliases: vec![format!("CVE-{id}")],
        severity: severity.into(),
        score: Some(7.5),
        summary: format!("summary of {id}"),
        affected: packages
            .iter()
            .map(|(e, n)| AffectedRow {
                ecosystem: e.to_string(),
                name: n.to_string(),
                affected_json: format!(r#"{{"package":{{"name":"{n}"}}}}"#),
            })
            .collect(),
    }
}

fn digest_of(s: &str) -> String {
    Digest::sha256_of(s.as_bytes()).to_string()
}

/// Imports `advisories` as one database version, in batches of two; returns its id.
async fn import(store: &dyn MetaStore, advisories: &[AdvisoryRow]) -> i64 {
    let v = store.begin_vulndb_import("file:/tmp/test").await.unwrap();
    for batch in advisories.chunks(2) {
        store.stage_advisories(v, batch).await.unwrap();
    }
    store
        .commit_vulndb_import(v, r#"{"Debian:12":1}"#, "{}")
        .await
        .unwrap();
    v
}

fn new_match(package_id: i64, advisory: &str, fixed: Option<&str>) -> NewMatch {
    NewMatch {
        package_id,
        advisory_id: advisory.into(),
        fixed: fixed.map(str::to_string),
    }
}

pub async fn scan_inventories_replace_and_share_packages(store: &dyn MetaStore) {
    let a = digest_of("image-a");
    let first = store
        .store_inventory(
            &a,
            &scanned(vec![
                pkg("Debian:12", "openssl", "3.0.1", "/var/lib/dpkg/status"),
                pkg("Debian:12", "zlib", "1.2", "/var/lib/dpkg/status"),
                // The same package at a second location: one package, two rows.
                pkg("PyPI", "requests", "2.0", "/app/a"),
                pkg("PyPI", "requests", "2.0", "/app/b"),
            ]),
        )
        .await
        .unwrap();
    let mut new_names: Vec<_> = first
        .new_packages
        .iter()
        .map(|(_, p)| p.name.as_str())
        .collect();
    new_names.sort();
    assert_eq!(new_names, ["openssl", "requests", "zlib"]);
    let detail = store.inventory(&a).await.unwrap().unwrap();
    assert_eq!(detail.id, first.inventory_id);
    assert_eq!(detail.status, "scanned");
    assert_eq!(detail.packages.len(), 4);
    assert_eq!(
        detail
            .packages
            .iter()
            .filter(|(_, p)| p.name == "requests")
            .map(|(_, p)| p.location.as_str())
            .collect::<Vec<_>>(),
        ["/app/a", "/app/b"]
    );

    // A rescan replaces the inventory; the same packages are not new again.
    let again = store
        .store_inventory(
            &a,
            &scanned(vec![
                pkg("Debian:12", "openssl", "3.0.1", "/var/lib/dpkg/status"),
                pkg("Debian:12", "zlib", "1.2", "/var/lib/dpkg/status"),
            ]),
        )
        .await
        .unwrap();
    assert!(again.new_packages.is_empty(), "{:?}", again.new_packages);
    let detail = store.inventory(&a).await.unwrap().unwrap();
    assert_eq!(detail.id, again.inventory_id);
    assert_eq!(detail.packages.len(), 2);
    let same_openssl = first
        .new_packages
        .iter()
        .find(|(_, p)| p.name == "openssl")
        .unwrap()
        .0;
    assert!(detail.packages.iter().any(|(id, _)| *id == same_openssl));

    // A second image sharing packages gets only its own new ones.
    let b = digest_of("image-b");
    let second = store
        .store_inventory(
            &b,
            &scanned(vec![
                pkg("Debian:12", "openssl", "3.0.1", "/var/lib/dpkg/status"),
                pkg("Debian:12", "curl", "8.0", "/var/lib/dpkg/status"),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(
        second
            .new_packages
            .iter()
            .map(|(_, p)| p.name.as_str())
            .collect::<Vec<_>>(),
        ["curl"]
    );

    // A failed scan is stored with its reason, without packages or counts.
    let c = digest_of("image-c");
    let failed = InventoryRow {
        status: "failed".into(),
        os_json: None,
        error: Some("layer too large".into()),
        ..scanned(vec![])
    };
    store.store_inventory(&c, &failed).await.unwrap();
    let detail = store.inventory(&c).await.unwrap().unwrap();
    assert_eq!(
        (detail.status.as_str(), detail.error.as_deref()),
        ("failed", Some("layer too large"))
    );
    assert!(store.set_sbom_digest(&b, "sha256:sbom").await.unwrap());
    assert!(!store.set_sbom_digest("sha256:none", "x").await.unwrap());
    assert_eq!(
        store
            .inventory(&b)
            .await
            .unwrap()
            .unwrap()
            .sbom_digest
            .as_deref(),
        Some("sha256:sbom")
    );
    assert!(store.inventory("sha256:none").await.unwrap().is_none());

    // Every distinct package, page by page.
    let page1 = store.packages_page(0, 2).await.unwrap();
    let page2 = store.packages_page(page1[1].0, 10).await.unwrap();
    let mut all: Vec<_> = page1
        .iter()
        .chain(&page2)
        .map(|(_, p)| p.name.clone())
        .collect();
    all.sort();
    assert_eq!(all, ["curl", "openssl", "requests", "zlib"]);
    assert!(page1.iter().all(|(_, p)| p.location.is_empty()));
}

pub async fn scan_vulndb_imports_swap_whole_sets(store: &dyn MetaStore) {
    assert!(store.current_vulndb().await.unwrap().is_none());
    let set1 = [
        advisory("A-1", "high", &[("Debian:12", "openssl")]),
        advisory(
            "A-2",
            "low",
            &[("Debian:12", "zlib"), ("Alpine:v3.19", "zlib")],
        ),
        advisory("A-3", "critical", &[("PyPI", "requests")]),
    ];
    let v1 = import(store, &set1).await;
    let current = store.current_vulndb().await.unwrap().unwrap();
    assert_eq!(
        (current.id, current.status.as_str(), current.records),
        (v1, "current", Some(3))
    );
    assert_eq!(
        current.ecosystems_json.as_deref(),
        Some(r#"{"Debian:12":1}"#)
    );
    assert_eq!(store.all_affected().await.unwrap().len(), 4);
    let zlib = store
        .affected_for(&[
            ("Debian:12".into(), "zlib".into()),
            ("x".into(), "y".into()),
        ])
        .await
        .unwrap();
    assert_eq!(zlib.len(), 1);
    assert_eq!(
        (zlib[0].advisory_id.as_str(), zlib[0].name.as_str()),
        ("A-2", "zlib")
    );
    let got = store
        .advisories(&["A-2".into(), "nope".into()])
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    // Its `affected` entries by ecosystem and name.
    let mut want = set1[1].clone();
    want.affected
        .sort_by(|x, y| (&x.ecosystem, &x.name).cmp(&(&y.ecosystem, &y.name)));
    assert_eq!(got[0], want);

    // The second version replaces the whole set; an advisory staged twice (in two
    // archives) counts once, with what was staged last.
    let mut withdrawn = advisory("B-2", "medium", &[("npm", "lodash")]);
    withdrawn.withdrawn = Some("2024-02-01T00:00:00Z".into());
    let v2 = store
        .begin_vulndb_import("https://osv/all.zip")
        .await
        .unwrap();
    store
        .stage_advisories(v2, &[advisory("B-1", "low", &[("Debian:12", "curl")])])
        .await
        .unwrap();
    store
        .stage_advisories(
            v2,
            &[
                advisory(
                    "B-1",
                    "high",
                    &[("Debian:12", "curl"), ("Debian:12", "libcurl")],
                ),
                withdrawn,
            ],
        )
        .await
        .unwrap();
    // Until the commit, the current set is untouched.
    assert_eq!(store.current_vulndb().await.unwrap().unwrap().id, v1);
    assert_eq!(store.all_affected().await.unwrap().len(), 4);
    assert_eq!(
        store
            .commit_vulndb_import(v2, "{}", r#"{"etag":"x"}"#)
            .await
            .unwrap(),
        2
    );
    let b1 = &store.advisories(&["B-1".into()]).await.unwrap()[0];
    assert_eq!((b1.severity.as_str(), b1.affected.len()), ("high", 2));
    assert!(store.advisories(&["A-1".into()]).await.unwrap().is_empty());
    // The withdrawn one is kept but matches nothing.
    assert_eq!(store.advisories(&["B-2".into()]).await.unwrap().len(), 1);
    assert_eq!(store.all_affected().await.unwrap().len(), 2);
    assert!(store
        .affected_for(&[("npm".into(), "lodash".into())])
        .await
        .unwrap()
        .is_empty());

    // A failed import leaves the current version and its advisories in place.
    let v3 = store
        .begin_vulndb_import("https://osv/all.zip")
        .await
        .unwrap();
    store
        .stage_advisories(v3, &[advisory("C-1", "high", &[("PyPI", "flask")])])
        .await
        .unwrap();
    store
        .fail_vulndb_import(v3, "checksum mismatch")
        .await
        .unwrap();
    assert!(matches!(
        store.commit_vulndb_import(v3, "{}", "{}").await,
        Err(MetaError::Conflict(_))
    ));
    assert!(matches!(
        store
            .stage_advisories(v3, &[advisory("C-2", "low", &[])])
            .await,
        Err(MetaError::Conflict(_))
    ));
    assert_eq!(store.current_vulndb().await.unwrap().unwrap().id, v2);
    assert!(store.advisories(&["C-1".into()]).await.unwrap().is_empty());
    assert_eq!(store.all_affected().await.unwrap().len(), 2);

    // An import left 'importing' (its process died) is abandoned by the next one.
    let v4 = store.begin_vulndb_import("upload:a.zip").await.unwrap();
    store
        .stage_advisories(v4, &[advisory("D-1", "low", &[("PyPI", "x")])])
        .await
        .unwrap();
    let v5 = store.begin_vulndb_import("upload:b.zip").await.unwrap();
    assert!(store.commit_vulndb_import(v4, "{}", "{}").await.is_err());
    assert_eq!(store.commit_vulndb_import(v5, "{}", "{}").await.unwrap(), 0);

    let versions = store.vulndb_versions(10).await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.id, v.status.as_str()))
            .collect::<Vec<_>>(),
        [
            (v5, "current"),
            (v4, "failed"),
            (v3, "failed"),
            (v2, "superseded"),
            (v1, "superseded")
        ]
    );
    assert_eq!(versions[2].error.as_deref(), Some("checksum mismatch"));
    assert!(versions[1].error.as_deref().unwrap().contains("abandoned"));
    assert_eq!(
        versions[3].validators_json.as_deref(),
        Some(r#"{"etag":"x"}"#)
    );
    assert_eq!(store.vulndb_versions(1).await.unwrap().len(), 1);
    assert!(matches!(
        store
            .stage_advisories(v5, &[advisory("E", "severe", &[])])
            .await,
        Err(MetaError::Conflict(_))
    ));
}

pub async fn scan_matches_findings_summaries_and_changes(store: &dyn MetaStore) {
    let v1 = import(
        store,
        &[
            advisory("A-1", "critical", &[("Debian:12", "openssl")]),
            advisory(
                "A-2",
                "high",
                &[("Debian:12", "openssl"), ("Debian:12", "zlib")],
            ),
            advisory("A-3", "low", &[("PyPI", "requests")]),
        ],
    )
    .await;
    let (a, b) = (digest_of("image-a"), digest_of("image-b"));
    let sa = store
        .store_inventory(
            &a,
            &scanned(vec![
                pkg("Debian:12", "openssl", "3.0.1", "/s"),
                pkg("Debian:12", "zlib", "1.2", "/s"),
                pkg("PyPI", "requests", "2.0", "/app/a"),
                pkg("PyPI", "requests", "2.0", "/app/b"),
            ]),
        )
        .await
        .unwrap();
    let id = |name: &str| {
        sa.new_packages
            .iter()
            .find(|(_, p)| p.name == name)
            .unwrap()
            .0
    };
    let (openssl, zlib, requests) = (id("openssl"), id("zlib"), id("requests"));
    let summary = |s: &crate::scan::SummaryRow| (s.critical, s.high, s.medium, s.low, s.unknown);
    // Stored before any match: scanned, nothing found yet.
    let s = store.summaries(std::slice::from_ref(&a)).await.unwrap();
    assert_eq!(summary(&s[0].1), (0, 0, 0, 0, 0));
    assert_eq!(s[0].1.status, "scanned");

    // A new image's first matches.
    let changes = store
        .apply_matches(&MatchDiff {
            db_version: v1,
            added: vec![
                new_match(openssl, "A-1", Some("3.0.2")),
                new_match(openssl, "A-2", None),
                new_match(zlib, "A-2", Some("1.3")),
                new_match(requests, "A-3", Some("2.1")),
            ],
            removed: vec![],
            record_changes: false,
            refresh_summaries: true,
        })
        .await
        .unwrap();
    assert_eq!((changes.added, changes.removed), (4, 0));
    assert_eq!(changes.newly_affected_inventories, 1);
    assert!(store.vuln_changes(v1, 100).await.unwrap().is_empty());
    let f = store.findings(&a).await.unwrap();
    assert_eq!(
        f.iter()
            .map(|f| (f.advisory_id.as_str(), f.name.as_str(), f.severity.as_str()))
            .collect::<Vec<_>>(),
        [
            ("A-1", "openssl", "critical"),
            ("A-2", "openssl", "high"),
            ("A-2", "zlib", "high"),
            ("A-3", "requests", "low"),
        ],
        "one finding per package, whatever the number of locations"
    );
    assert_eq!(f[0].fixed.as_deref(), Some("3.0.2"));
    assert_eq!(f[0].aliases, ["CVE-A-1"]);
    assert_eq!(f[0].score, Some(7.5));
    assert_eq!(f[0].purl, "pkg:generic/openssl@3.0.1");
    let s = store.summaries(std::slice::from_ref(&a)).await.unwrap();
    assert_eq!(summary(&s[0].1), (1, 2, 0, 1, 0));
    assert_eq!(s[0].1.db_version, Some(v1));

    // A second image made of known packages gets its summary when stored.
    store
        .store_inventory(
            &b,
            &scanned(vec![pkg("Debian:12", "openssl", "3.0.1", "/s")]),
        )
        .await
        .unwrap();
    let s = store
        .summaries(&[b.clone(), "sha256:none".into(), a.clone()])
        .await
        .unwrap();
    assert_eq!(
        s.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>(),
        [b.as_str(), a.as_str()]
    );
    assert_eq!(summary(&s[0].1), (1, 1, 0, 0, 0));

    // A re-match after a database change: A-1 no longer affects openssl, a new A-4
    // affects zlib, A-2 moves its fix.
    let v2 = import(
        store,
        &[
            advisory("A-1", "critical", &[]),
            advisory(
                "A-2",
                "high",
                &[("Debian:12", "openssl"), ("Debian:12", "zlib")],
            ),
            advisory("A-3", "low", &[("PyPI", "requests")]),
            advisory("A-4", "medium", &[("Debian:12", "zlib")]),
        ],
    )
    .await;
    let existing = store
        .package_vulns_for(&[openssl, zlib, requests])
        .await
        .unwrap();
    assert_eq!(existing.len(), 4);
    assert!(existing.contains(&new_match(zlib, "A-2", Some("1.3"))));
    let changes = store
        .apply_matches(&MatchDiff {
            db_version: v2,
            added: vec![
                new_match(zlib, "A-4", None),
                new_match(openssl, "A-2", Some("3.0.9")),
            ],
            removed: vec![(openssl, "A-1".into())],
            record_changes: true,
            refresh_summaries: true,
        })
        .await
        .unwrap();
    assert_eq!((changes.added, changes.removed), (1, 1));
    assert_eq!(changes.newly_affected_inventories, 1, "image a gained A-4");
    assert_eq!(changes.unaffected_inventories, 2, "both lost A-1");
    let mut expected = vec![
        (a.clone(), "A-1".to_string(), "removed".to_string()),
        (a.clone(), "A-4".to_string(), "added".to_string()),
        (b.clone(), "A-1".to_string(), "removed".to_string()),
    ];
    expected.sort();
    let got: Vec<_> = store
        .vuln_changes(v2, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.manifest_digest, c.advisory_id, c.change))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(store.vuln_changes(v2, 1).await.unwrap().len(), 1);
    assert_eq!(
        store.vuln_change_counts(v2).await.unwrap(),
        (1, 2),
        "a newly affected by A-4; a and b no longer by A-1"
    );
    let s = store.summaries(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(summary(&s[0].1), (0, 2, 1, 1, 0));
    assert_eq!(summary(&s[1].1), (0, 1, 0, 0, 0));
    assert_eq!(s[0].1.db_version, Some(v2));
    let f = store.findings(&a).await.unwrap();
    assert_eq!(
        f.iter()
            .find(|f| f.advisory_id == "A-2" && f.name == "openssl")
            .unwrap()
            .fixed
            .as_deref(),
        Some("3.0.9")
    );

    // Removed on one page and added back on another within one version: no change.
    store
        .apply_matches(&MatchDiff {
            db_version: v2,
            added: vec![new_match(openssl, "A-1", None)],
            removed: vec![],
            record_changes: true,
            refresh_summaries: false,
        })
        .await
        .unwrap();
    let got: Vec<_> = store
        .vuln_changes(v2, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.manifest_digest, c.advisory_id))
        .collect();
    assert_eq!(got, [(a.clone(), "A-4".to_string())]);
    // Not refreshed yet; then every summary at once.
    assert_eq!(
        summary(&store.summaries(std::slice::from_ref(&b)).await.unwrap()[0].1),
        (0, 1, 0, 0, 0)
    );

    // A database whose severities changed: the summaries follow after a refresh.
    let v3 = import(
        store,
        &[
            advisory("A-1", "critical", &[("Debian:12", "openssl")]),
            advisory(
                "A-2",
                "medium",
                &[("Debian:12", "openssl"), ("Debian:12", "zlib")],
            ),
            advisory("A-3", "unknown", &[("PyPI", "requests")]),
            advisory("A-4", "medium", &[("Debian:12", "zlib")]),
        ],
    )
    .await;
    assert_eq!(store.refresh_all_summaries(v3).await.unwrap(), 2);
    let s = store.summaries(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(summary(&s[0].1), (1, 0, 3, 0, 1));
    assert_eq!(summary(&s[1].1), (1, 0, 1, 0, 0));
    assert_eq!(s[1].1.db_version, Some(v3));
    let stats = store.scan_stats().await.unwrap();
    assert_eq!(
        (stats.scanned, stats.failed, stats.worst, stats.clean),
        (2, 0, [2, 0, 0, 0, 0], 0),
        "both images' worst finding is critical"
    );

    // Advisories that left the database no longer show, before any re-match.
    import(
        store,
        &[advisory("A-4", "medium", &[("Debian:12", "zlib")])],
    )
    .await;
    let f = store.findings(&a).await.unwrap();
    assert_eq!(
        f.iter().map(|f| f.advisory_id.as_str()).collect::<Vec<_>>(),
        ["A-4"]
    );
}

pub async fn scan_policies_and_allowlist_round_trip(store: &dyn MetaStore) {
    assert!(store.scan_policy("").await.unwrap().is_none());
    let default = ScanPolicy {
        scan_on_push: true,
        block_severity: Some("critical".into()),
        unscanned: "allow".into(),
        attach_sbom: false,
    };
    store.set_scan_policy("", &default).await.unwrap();
    let team = ScanPolicy {
        scan_on_push: false,
        block_severity: None,
        unscanned: "refuse".into(),
        attach_sbom: true,
    };
    store.set_scan_policy("team/app", &team).await.unwrap();
    let got = store.scan_policy("").await.unwrap().unwrap();
    assert_eq!((got.repository.as_str(), &got.policy), ("", &default));
    assert!(got.updated_at_ms > 0);
    assert_eq!(
        store.scan_policy("team/app").await.unwrap().unwrap().policy,
        team
    );
    assert!(store.scan_policy("team/other").await.unwrap().is_none());
    // Replaced, not added.
    let stricter = ScanPolicy {
        block_severity: Some("high".into()),
        ..default.clone()
    };
    store.set_scan_policy("", &stricter).await.unwrap();
    let all = store.scan_policies().await.unwrap();
    assert_eq!(
        all.iter()
            .map(|p| (p.repository.as_str(), p.policy.block_severity.as_deref()))
            .collect::<Vec<_>>(),
        [("", Some("high")), ("team/app", None)]
    );
    let bad = ScanPolicy {
        block_severity: Some("severe".into()),
        ..default.clone()
    };
    assert!(store.set_scan_policy("x", &bad).await.is_err());
    let bad = ScanPolicy {
        unscanned: "maybe".into(),
        ..default
    };
    assert!(store.set_scan_policy("x", &bad).await.is_err());
    assert!(store.delete_scan_policy("team/app").await.unwrap());
    assert!(!store.delete_scan_policy("team/app").await.unwrap());
    assert!(store.scan_policy("team/app").await.unwrap().is_none());

    let entry = |repository: &str, vuln: &str, expires: Option<i64>| AllowRow {
        repository: repository.into(),
        vuln_id: vuln.into(),
        expires_at_ms: expires,
        reason: format!("accepted {vuln}"),
        created_by: "alice".into(),
        created_at_ms: 0,
    };
    store.add_allow(&entry("", "CVE-1", None)).await.unwrap();
    store
        .add_allow(&entry("team/app", "CVE-2", Some(1_000)))
        .await
        .unwrap();
    store
        .add_allow(&entry("team/other", "CVE-3", None))
        .await
        .unwrap();
    // Replaced: the new expiry and reason.
    store
        .add_allow(&AllowRow {
            reason: "until the fix".into(),
            ..entry("team/app", "CVE-2", Some(2_000))
        })
        .await
        .unwrap();
    let list = store.allowlist("team/app").await.unwrap();
    assert_eq!(
        list.iter()
            .map(|e| (e.repository.as_str(), e.vuln_id.as_str(), e.expires_at_ms))
            .collect::<Vec<_>>(),
        [("", "CVE-1", None), ("team/app", "CVE-2", Some(2_000))]
    );
    assert_eq!(list[1].reason, "until the fix");
    assert_eq!(list[1].created_by, "alice");
    assert!(list[1].created_at_ms > 0);
    assert_eq!(store.allowlist("").await.unwrap().len(), 1);
    assert_eq!(store.allowlist("nobody/here").await.unwrap().len(), 1);
    assert!(store.remove_allow("team/app", "CVE-2").await.unwrap());
    assert!(!store.remove_allow("team/app", "CVE-2").await.unwrap());
    assert!(!store.remove_allow("team/app", "CVE-1").await.unwrap());
    assert_eq!(store.allowlist("team/app").await.unwrap().len(), 1);
}

pub async fn scan_gc_removes_orphan_inventories_and_packages(store: &dyn MetaStore) {
    let (r1, r2) = (repo("team/one"), repo("team/two"));
    let m = manifest("image-shared", vec![], vec![]);
    let kept = manifest("image-kept", vec![], vec![]);
    store.put_manifest(&r1, &m, Some(&tag("v1"))).await.unwrap();
    store.put_manifest(&r2, &m, Some(&tag("v1"))).await.unwrap();
    store.put_manifest(&r2, &kept, None).await.unwrap();
    let v = import(
        store,
        &[advisory("A-1", "high", &[("Debian:12", "only-here")])],
    )
    .await;
    let shared = store
        .store_inventory(
            &m.digest.to_string(),
            &scanned(vec![
                pkg("Debian:12", "common", "1", "/s"),
                pkg("Debian:12", "only-here", "1", "/s"),
            ]),
        )
        .await
        .unwrap();
    let only_here = shared
        .new_packages
        .iter()
        .find(|(_, p)| p.name == "only-here")
        .unwrap()
        .0;
    store
        .apply_matches(&MatchDiff {
            db_version: v,
            added: vec![new_match(only_here, "A-1", None)],
            removed: vec![],
            record_changes: true,
            refresh_summaries: true,
        })
        .await
        .unwrap();
    store
        .store_inventory(
            &kept.digest.to_string(),
            &scanned(vec![pkg("Debian:12", "common", "1", "/s")]),
        )
        .await
        .unwrap();
    // An inventory whose manifest was never stored (or is gone already).
    store
        .store_inventory(
            &digest_of("never-pushed"),
            &scanned(vec![pkg("Debian:12", "stray", "1", "/s")]),
        )
        .await
        .unwrap();

    let gc = store.delete_inventories_without_manifests().await.unwrap();
    assert_eq!((gc.inventories, gc.packages), (1, 1));
    assert!(store
        .inventory(&digest_of("never-pushed"))
        .await
        .unwrap()
        .is_none());

    // Still in one repository: kept.
    store.delete_manifest(&r1, &m.digest).await.unwrap();
    let gc = store.delete_inventories_without_manifests().await.unwrap();
    assert_eq!((gc.inventories, gc.packages), (0, 0));
    assert!(store
        .inventory(&m.digest.to_string())
        .await
        .unwrap()
        .is_some());

    // Gone from every repository: its inventory goes, with the packages only it had
    // (and their matches); the shared package stays.
    store.delete_manifest(&r2, &m.digest).await.unwrap();
    let gc = store.delete_inventories_without_manifests().await.unwrap();
    assert_eq!((gc.inventories, gc.packages), (1, 1));
    assert!(store
        .inventory(&m.digest.to_string())
        .await
        .unwrap()
        .is_none());
    assert!(store
        .package_vulns_for(&[only_here])
        .await
        .unwrap()
        .is_empty());
    let left: Vec<_> = store
        .packages_page(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, p)| p.name)
        .collect();
    assert_eq!(left, ["common"]);
    assert!(store
        .inventory(&kept.digest.to_string())
        .await
        .unwrap()
        .is_some());
}

/// Not part of the suite (a test that only prints times cannot fail): imports 100,000
/// small advisories in batches and stores 1,000 inventories of 300 packages, printing
/// the times, for the scanning benchmark's store side to build on.
pub async fn scan_scale(store: &dyn MetaStore) {
    use std::time::Instant;
    let ecosystems = ["Debian:12", "PyPI", "npm", "Alpine:v3.19"];
    let t = Instant::now();
    let v = store.begin_vulndb_import("file:scale").await.unwrap();
    let mut batch = Vec::with_capacity(5_000);
    for i in 0..100_000u32 {
        let eco = ecosystems[(i % 4) as usize];
        batch.push(AdvisoryRow {
            id: format!("TEST-{i:06}"),
            modified: "2024-01-01T00:00:00Z".into(),
            withdrawn: None,
            aliases: vec![format!("CVE-2024-{i}")],
            severity: crate::scan::SEVERITIES[(i % 5) as usize].into(),
            score: Some(5.0),
            summary: "a test advisory".into(),
            affected: vec![AffectedRow {
                ecosystem: eco.into(),
                name: format!("pkg{}", i % 20_000),
                affected_json: r#"{"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"2"}]}]}"#.into(),
            }],
        });
        if batch.len() == 5_000 {
            store.stage_advisories(v, &batch).await.unwrap();
            batch.clear();
        }
    }
    let staged = t.elapsed();
    let n = store.commit_vulndb_import(v, "{}", "{}").await.unwrap();
    assert_eq!(n, 100_000);
    eprintln!(
        "scale: 100,000 advisories staged in {staged:.2?}, swapped in {:.2?} (total {:.2?})",
        t.elapsed() - staged,
        t.elapsed()
    );
    let t = Instant::now();
    let all = store.all_affected().await.unwrap();
    assert_eq!(all.len(), 100_000);
    eprintln!("scale: all_affected loaded in {:.2?}", t.elapsed());

    let t = Instant::now();
    let mut new_total = 0;
    let mut lap = Instant::now();
    for image in 0..1_000u32 {
        // 200 OS packages from a shared base (a few versions), 100 of the image's own
        // language packages drawn from a larger set.
        let base = image % 10;
        let mut packages = Vec::with_capacity(300);
        for j in 0..200u32 {
            packages.push(pkg(
                "Debian:12",
                &format!("pkg{j}"),
                &format!("1.{base}"),
                "/var/lib/dpkg/status",
            ));
        }
        for j in 0..100u32 {
            let k = (image * 37 + j * 101) % 20_000;
            packages.push(pkg("PyPI", &format!("pkg{k}"), "1.0", "/app/site-packages"));
        }
        let stored = store
            .store_inventory(&digest_of(&format!("scale-{image}")), &scanned(packages))
            .await
            .unwrap();
        new_total += stored.new_packages.len();
        if image % 250 == 249 {
            eprintln!(
                "scale: inventories {}..={image}: {:.2?}",
                image - 249,
                lap.elapsed()
            );
            lap = Instant::now();
        }
    }
    eprintln!(
        "scale: 1,000 inventories of 300 packages stored in {:.2?} ({new_total} distinct packages)",
        t.elapsed()
    );
    let t = Instant::now();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let page = store.packages_page(after, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.0;
        pages += 1;
    }
    eprintln!(
        "scale: packages read in {pages} pages in {:.2?}",
        t.elapsed()
    );
    let t = Instant::now();
    store.refresh_all_summaries(v).await.unwrap();
    eprintln!("scale: 1,000 summaries refreshed in {:.2?}", t.elapsed());
}

/// A manifest that queues its scan, as the registry pushes it.
fn scanning(payload: &str, r: &RepoName, covers: Vec<Digest>) -> NewManifest {
    let mut m = manifest(payload, vec![], vec![]);
    let covers = if covers.is_empty() {
        vec![m.digest.clone()]
    } else {
        covers
    };
    m.scan = Some(crate::ScanOnPush {
        params: format!(r#"{{"digest":"{}","repository":"{r}"}}"#, m.digest),
        covers,
    });
    m
}

async fn scan_jobs(store: &dyn MetaStore) -> Vec<crate::jobs::Job> {
    store.jobs(Some("scan"), None, None, 1000).await.unwrap()
}

pub async fn scan_on_push_queues_one_job_per_image(store: &dyn MetaStore) {
    let (r1, r2) = (repo("push/one"), repo("push/two"));
    let m = scanning("scanned on push", &r1, vec![]);
    store.put_manifest(&r1, &m, Some(&tag("v1"))).await.unwrap();
    let jobs = scan_jobs(store).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, crate::jobs::JobStatus::Waiting);
    assert_eq!(jobs[0].params, m.scan.as_ref().unwrap().params);
    assert_eq!(jobs[0].max_attempts, crate::SCAN_ON_PUSH_ATTEMPTS);
    // Again, under another tag and in another repository: its job is waiting.
    store.put_manifest(&r1, &m, Some(&tag("v2"))).await.unwrap();
    let again = scanning("scanned on push", &r2, vec![]);
    store.put_manifest(&r2, &again, None).await.unwrap();
    assert_eq!(scan_jobs(store).await.len(), 1);

    // Running: still covered. Done without an inventory (an artifact after all, say):
    // a push queues it again; with an inventory, never.
    let job = store.claim("w", &["scan"]).await.unwrap().unwrap();
    store.put_manifest(&r2, &again, None).await.unwrap();
    assert_eq!(scan_jobs(store).await.len(), 1);
    store
        .finish_job(job.id, "w", &crate::jobs::Outcome::Done)
        .await
        .unwrap();
    store.put_manifest(&r2, &again, None).await.unwrap();
    assert_eq!(scan_jobs(store).await.len(), 2);
    let job = store.claim("w", &["scan"]).await.unwrap().unwrap();
    store
        .store_inventory(&m.digest.to_string(), &scanned(vec![]))
        .await
        .unwrap();
    store
        .finish_job(job.id, "w", &crate::jobs::Outcome::Done)
        .await
        .unwrap();
    store.put_manifest(&r1, &m, Some(&tag("v3"))).await.unwrap();
    assert_eq!(scan_jobs(store).await.len(), 2);

    // An index covers its platforms: one scanned, one with its job waiting, nothing
    // to queue; one platform neither, one job for the index.
    let waiting = scanning("a platform pushed first", &r1, vec![]);
    store.put_manifest(&r1, &waiting, None).await.unwrap();
    assert_eq!(scan_jobs(store).await.len(), 3);
    let covered = scanning(
        "an index",
        &r1,
        vec![m.digest.clone(), waiting.digest.clone()],
    );
    store
        .put_manifest(&r1, &covered, Some(&tag("multi")))
        .await
        .unwrap();
    assert_eq!(scan_jobs(store).await.len(), 3);
    let uncovered = scanning(
        "another index",
        &r1,
        vec![m.digest.clone(), Digest::sha256_of(b"never pushed")],
    );
    store.put_manifest(&r1, &uncovered, None).await.unwrap();
    let jobs = scan_jobs(store).await;
    assert_eq!(jobs.len(), 4);
    // Queued on its own ("rescan all"): the same dedupe, and it says what it did.
    assert!(!store
        .queue_scan(covered.scan.as_ref().unwrap())
        .await
        .unwrap());
    assert!(!store
        .queue_scan(uncovered.scan.as_ref().unwrap())
        .await
        .unwrap());
    let alone = scanning("queued without a push", &r1, vec![]);
    assert!(store
        .queue_scan(alone.scan.as_ref().unwrap())
        .await
        .unwrap());
    assert!(!store
        .queue_scan(alone.scan.as_ref().unwrap())
        .await
        .unwrap());
    assert_eq!(scan_jobs(store).await.len(), 5);
    assert!(jobs[0].params.contains(&uncovered.digest.to_string()));

    // Pushes of one new image into many repositories at once: one job.
    let pushes = (0..8).map(|i| async move {
        let r = repo(&format!("push/many{i}"));
        let m = scanning("pushed everywhere at once", &r, vec![]);
        store.put_manifest(&r, &m, None).await.unwrap();
    });
    futures_util::future::join_all(pushes).await;
    assert_eq!(scan_jobs(store).await.len(), 6);
}

pub async fn proxies_and_their_bookkeeping(store: &dyn MetaStore) {
    use crate::proxy::ProxyConfig;
    let p = ProxyConfig {
        prefix: "hub/".into(),
        upstreams: vec!["http://a.example".into(), "http://b.example".into()],
        username: Some("u".into()),
        password: Some("secret".into()),
        revalidate_secs: 60,
        max_bytes: Some(1 << 30),
        max_idle_days: None,
        created_at_ms: 1,
        updated_at_ms: 1,
    };
    store.create_proxy(&p).await.unwrap();
    assert!(matches!(
        store.create_proxy(&p).await,
        Err(MetaError::Conflict(_))
    ));
    assert!(!format!("{p:?}").contains("secret"));
    assert_eq!(store.proxies().await.unwrap(), vec![p.clone()]);
    let changed = ProxyConfig {
        upstreams: vec!["http://c.example".into()],
        password: None,
        max_idle_days: Some(7),
        updated_at_ms: 2,
        ..p.clone()
    };
    assert!(store.update_proxy(&changed).await.unwrap());
    assert_eq!(store.proxies().await.unwrap(), vec![changed]);

    let (r, t) = (repo("hub/library/alpine"), tag("3"));
    let (d1, d2) = (Digest::sha256_of(b"one"), Digest::sha256_of(b"two"));
    assert_eq!(store.proxy_tag(&r, &t).await.unwrap(), None);
    store.set_proxy_tag(&r, &t, &d1, 10).await.unwrap();
    store.set_proxy_tag(&r, &t, &d2, 20).await.unwrap();
    assert_eq!(
        store.proxy_tag(&r, &t).await.unwrap(),
        Some((d2.clone(), 20))
    );

    store
        .touch_proxied_manifest("hub/", &r, &d1, 100, 50)
        .await
        .unwrap();
    store
        .touch_proxied_manifest("hub/", &r, &d2, 200, 40)
        .await
        .unwrap();
    // The last use never moves back.
    store
        .touch_proxied_manifest("hub/", &r, &d1, 100, 30)
        .await
        .unwrap();
    let held = store.proxied_manifests("hub/").await.unwrap();
    let order: Vec<_> = held
        .iter()
        .map(|m| (m.digest.clone(), m.bytes, m.last_used_at_ms))
        .collect();
    assert_eq!(order, vec![(d2.clone(), 200, 40), (d1.clone(), 100, 50)]);
    assert!(store.proxied_manifests("other/").await.unwrap().is_empty());

    store.forget_proxied_manifest(&r, &d2).await.unwrap();
    assert_eq!(store.proxied_manifests("hub/").await.unwrap().len(), 1);
    assert_eq!(
        store.proxy_tag(&r, &t).await.unwrap(),
        None,
        "the tag pointed at the evicted manifest"
    );

    assert!(store.delete_proxy("hub/").await.unwrap());
    assert!(!store.delete_proxy("hub/").await.unwrap());
    assert!(store.proxies().await.unwrap().is_empty());
    assert!(store.proxied_manifests("hub/").await.unwrap().is_empty());
}

pub async fn proxied_manifests_need_no_references(store: &dyn MetaStore) {
    let r = repo("hub/x");
    let missing = Digest::sha256_of(b"layer not fetched yet");
    let mut m = manifest(r#"{"proxied":1}"#, vec![missing.clone()], vec![]);
    assert!(matches!(
        store.put_manifest(&r, &m, Some(&tag("t"))).await,
        Err(MetaError::MissingReference(_))
    ));
    m.references_on_demand = true;
    store.put_manifest(&r, &m, Some(&tag("t"))).await.unwrap();
    let got = store
        .get_manifest(&r, &Reference::Tag(tag("t")), false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.digest, m.digest);
}

// ---------------------------------------------------------------- manifest summaries

pub async fn manifest_summaries_are_stored_with_pushes_and_filled_in_later(store: &dyn MetaStore) {
    use wharf_oci::ManifestSummary;
    let r = repo("summaries/app");
    let summary = |size, platforms: Option<&str>| ManifestSummary {
        size,
        platforms: platforms.map(str::to_string),
    };
    // Pushed by this release: stored with its summary.
    let mut new = manifest(r#"{"summary":"new"}"#, vec![], vec![]);
    new.summary = Some(summary(1234, Some("linux/arm64")));
    store
        .put_manifest(&r, &new, Some(&tag("new")))
        .await
        .unwrap();
    // Stored as an older release stores them: no summary.
    let mut old = Vec::new();
    for i in 0..5 {
        let m = manifest(&format!(r#"{{"summary":"old {i}"}}"#), vec![], vec![]);
        store
            .put_manifest(&r, &m, Some(&tag(&format!("old{i}"))))
            .await
            .unwrap();
        old.push(m.digest.to_string());
    }
    old.sort();
    assert_eq!(store.count_manifests_without_summary().await.unwrap(), 5);

    let page = store
        .tag_details(r.as_str(), None, 10)
        .await
        .unwrap()
        .unwrap();
    let by_tag = |name: &str| {
        page.iter()
            .find(|t| t.name == name)
            .unwrap()
            .summary
            .clone()
    };
    assert_eq!(by_tag("new"), Some(summary(1234, Some("linux/arm64"))));
    assert_eq!(by_tag("old0"), None);

    // Keyset pages of what is left, in key order.
    let first = store.manifests_without_summary(None, 2).await.unwrap();
    assert_eq!(
        first.iter().map(|m| m.digest.clone()).collect::<Vec<_>>(),
        old[..2]
    );
    let last = first.last().unwrap();
    let rest = store
        .manifests_without_summary(Some((last.repository_id, last.digest.clone())), 10)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|m| m.digest.clone()).collect::<Vec<_>>(),
        old[2..]
    );
    assert!(rest[0].payload.starts_with(b"{\"summary\":\"old"));

    // Filled in: once each; a manifest deleted meanwhile is skipped, not an error.
    let gone: Digest = old[4].parse().unwrap();
    assert!(store.delete_manifest(&r, &gone).await.unwrap());
    let batch: Vec<_> = first
        .iter()
        .chain(rest.iter())
        .map(|m| (m.repository_id, m.digest.clone(), summary(7, None)))
        .collect();
    assert_eq!(store.record_manifest_summaries(&batch).await.unwrap(), 4);
    assert_eq!(store.record_manifest_summaries(&batch).await.unwrap(), 0);
    assert_eq!(store.count_manifests_without_summary().await.unwrap(), 0);
    let page = store
        .tag_details(r.as_str(), None, 10)
        .await
        .unwrap()
        .unwrap();
    let filled = page.iter().find(|t| t.digest == old[0]).unwrap();
    assert_eq!(filled.summary, Some(summary(7, None)));

    assert_eq!(store.delete_orphan_summaries().await.unwrap(), 0);
    // A deleted manifest takes its summary with it: pushed again, it gets the new one.
    let newd = new.digest.clone();
    assert!(store.delete_manifest(&r, &newd).await.unwrap());
    new.summary = Some(summary(99, Some("linux/amd64")));
    store
        .put_manifest(&r, &new, Some(&tag("new")))
        .await
        .unwrap();
    let page = store
        .tag_details(r.as_str(), None, 10)
        .await
        .unwrap()
        .unwrap();
    let again = page.iter().find(|t| t.name == "new").unwrap();
    assert_eq!(again.summary, Some(summary(99, Some("linux/amd64"))));
}
