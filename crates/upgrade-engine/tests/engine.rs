//! The engine driven as a library, its events collected the way the CLI's printers
//! and a UI consume them: data that release 1.0.0 created goes through every stop of
//! the plan with the local driver, and the events tell the whole story in order.

use std::time::Duration;

use semver::Version;
use wharf_upgrade::events::{Envelope, Event};
use wharf_upgrade_engine::{
    ApplyOptions, Collected, DriverKind, Engine, Images, Prepared, RollingOptions,
};

fn options() -> ApplyOptions {
    ApplyOptions {
        rolling: RollingOptions {
            driver: DriverKind::Local,
            images: Images::default(),
            label: "wharf.replica".into(),
            cache_label: "wharf.cache".into(),
            existing_replica_id: None,
            replica_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(1),
            settle: Duration::ZERO,
            url: None,
            creds: None,
        },
        backup_dir: None,
        skip_backup: None,
        migration_timeout: Duration::from_secs(60),
    }
}

/// Every event as the JSON stream carries it, read back as a consumer would.
fn wire(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .map(|e| {
            let line = serde_json::to_string(&Envelope::new(e.clone())).unwrap();
            let back: Envelope = serde_json::from_str(&line).unwrap();
            assert_eq!(back.v, 1, "{line}");
            back.event
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_from_1_0_0_goes_through_every_stop_and_the_events_say_so() {
    let dir = tempfile::tempdir().unwrap();
    wharf_metastore::SqliteMetaStore::create_at_level(dir.path().join("metadata.db"), 1, "1.0.0")
        .await
        .unwrap();
    let own = Version::parse(env!("CARGO_PKG_VERSION")).unwrap();
    let config = wharf_server::Config {
        data_dir: dir.path().to_path_buf(),
        ..wharf_server::Config::default()
    };
    let events = Collected::default();
    let engine = Engine::new(config.clone(), own.clone(), events.clone());

    let Prepared::Ready { hops, warnings } = engine.prepare(DriverKind::Local).await.unwrap()
    else {
        panic!("not ready: {:?}", events.0.lock().unwrap());
    };
    let path: Vec<(String, String, u32)> = hops
        .iter()
        .map(|h| (h.from.to_string(), h.to.to_string(), h.level))
        .collect();
    assert_eq!(
        path,
        vec![
            ("1.0.0".into(), "1.1.0".into(), 2),
            ("1.1.0".into(), own.to_string(), wharf_server::SCHEMA_LEVEL),
        ]
    );
    engine.apply(&hops, &warnings, &options()).await.unwrap();

    let seen = wire(&events.0.lock().unwrap());
    // The story, in order: the plan, each hop's start and its five steps, the end.
    let outline: Vec<String> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Plan { hops } => Some(format!("plan {}", hops.len())),
            Event::Start { from, to, .. } => Some(format!("start {from} {to}")),
            Event::Step { step, status, .. } => Some(format!("{step} {status}")),
            Event::Finished { version, .. } => Some(format!("finished {version}")),
            // Backup progress comes between the steps.
            Event::Progress { .. } => None,
            other => Some(format!("unexpected {other:?}")),
        })
        .collect();
    let hop = [
        "checks done",
        "backup done",
        "expand done",
        "finalise done",
        "background done",
    ];
    let mut expected = vec!["plan 2".to_string(), "start 1.0.0 1.1.0".into()];
    expected.extend(hop.iter().map(|s| s.to_string()));
    expected.push(format!("start 1.1.0 {own}"));
    expected.extend(hop.iter().map(|s| s.to_string()));
    expected.push(format!("finished {own}"));
    assert_eq!(outline, expected);
    // Every event reads as a line of text for the terminal, except the progress that
    // a terminal draws as bars.
    for e in &seen {
        assert_eq!(
            e.text().is_none(),
            matches!(e, Event::Progress { .. }),
            "{e:?}"
        );
    }
    // Each hop's backup exists, made before its changes.
    let backups: Vec<String> = std::fs::read_dir(dir.path().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(backups.len(), 2, "{backups:?}");
    assert!(backups
        .iter()
        .any(|b| b.starts_with("pre-upgrade-1.0.0-to-1.1.0-")));
    assert!(backups
        .iter()
        .any(|b| b.starts_with(&format!("pre-upgrade-1.1.0-to-{own}-"))));
    assert_eq!(
        wharf_upgrade_engine::data_version(&config).await.unwrap(),
        own
    );

    // Run again: nothing to do, and a `finished` event that says so.
    let again = Collected::default();
    let engine = Engine::new(config, own.clone(), again.clone());
    assert!(matches!(
        engine.prepare(DriverKind::Local).await.unwrap(),
        Prepared::UpToDate
    ));
    assert_eq!(
        wire(&again.0.lock().unwrap()),
        vec![Event::Finished {
            version: own.to_string(),
            changed: Some(false),
            rolled_back: false
        }]
    );
}

#[test]
fn each_stop_finds_its_image() {
    let own = Version::parse("1.2.0").unwrap();
    let mut images = Images::default();
    images.add("registry.example.com:5000/wharf:1.2.0").unwrap();
    images
        .add("1.1.0=registry.example.com:5000/wharf:1.1.0")
        .unwrap();
    let v = |s: &str| Version::parse(s).unwrap();
    assert_eq!(
        images.image_for(&own, &own).as_deref(),
        Some("registry.example.com:5000/wharf:1.2.0")
    );
    assert_eq!(
        images.image_for(&v("1.1.0"), &own).as_deref(),
        Some("registry.example.com:5000/wharf:1.1.0")
    );
    assert_eq!(images.image_for(&v("1.0.0"), &own), None);
    images.template = Some("mirror/wharf:{version}".into());
    assert_eq!(
        images.image_for(&v("1.0.0"), &own).as_deref(),
        Some("mirror/wharf:1.0.0")
    );
    // Named images win over the template.
    assert_eq!(
        images.image_for(&v("1.1.0"), &own).as_deref(),
        Some("registry.example.com:5000/wharf:1.1.0")
    );
    let err = images.add("wharf:other").unwrap_err().to_string();
    assert!(err.contains("given twice"), "{err}");
    let err = images.add("1.x=wharf:1").unwrap_err().to_string();
    assert!(err.contains("not a version"), "{err}");
}
