//! The web UI as a person uses it, in a real browser: headless Chromium (Debian's) driven
//! through chromedriver, against a real `wharf serve` with authentication on.
//!
//! - signing in with the keyboard alone, searching, opening an image, copying a pull
//!   command (flow 1); deleting a tag (2); access tokens (3); a job's live log (4);
//! - what non-administrators and anonymous visitors see (5);
//! - axe-core (WCAG 2 A/AA) on every main page in both colour schemes (6);
//! - screenshots of every main page at desktop and phone sizes, with no console error
//!   and the Content-Security-Policy on every page (7);
//! - forged cross-site and same-site form posts, session fixation, cookie flags (plain
//!   and TLS), markup in labels and job logs shown as text, sign-out (8);
//! - a session started on one replica used on another (PostgreSQL, 9);
//! - vulnerability scanning: the database uploaded through its page, "Scan now" and
//!   "Rescan all images", the tag list's counts, an image's findings and their
//!   severity filter (10).
//!
//! Every test starts its own registry and browser; chromedriver, Chromium, the
//! registries and the temp dirs are removed on drop, also when a test fails. Without
//! chromedriver or chromium the tests print SKIPPED, except under `CI=true`, where they
//! fail. Screenshots go to `target/ui-screenshots/` (or `$WHARF_UI_SCREENSHOTS`).

mod support;

#[path = "support/secure.rs"]
mod secure;

#[path = "support/oci_layout.rs"]
mod oci_layout;

#[path = "support/browser.rs"]
mod browser;

#[path = "support/scan_fixture.rs"]
mod scan_fixture;

use std::collections::BTreeSet;
use std::ops::Deref;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use browser::{wait_for, Browser, Options};
use oci_layout::{Blob, Image, TarEntry};
use reqwest::{Method, StatusCode};
use secure::{admin, create_user, request, run_ok, set_visibility};
use serde_json::{json, Value};
use support::{TestServer, ADMIN_PASSWORD};
use thirtyfour::prelude::*;

const SKOPEO_TIMEOUT: Duration = Duration::from_secs(180);
const CURL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a job may take to finish on a busy machine.
const JOB_DEADLINE: Duration = Duration::from_secs(90);
const SESSION_COOKIE: &str = "wharf_session";

// =================================================================================
// fixtures: a registry, images, sign-in

/// A `wharf serve` with authentication on (administrator `admin`), its temp dir
/// removed after the process is stopped.
struct Wharf {
    server: TestServer,
    _tmp: tempfile::TempDir,
}

impl Deref for Wharf {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl Wharf {
    /// Jobs heartbeat every second, so that a job's page moves quickly.
    fn start(extra: &[&str]) -> Wharf {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data = tmp.path().join("data");
        let mut cmd = support::serve_command();
        cmd.args(["--listen", "127.0.0.1:0", "--job-heartbeat-secs", "1"])
            .args(extra)
            .arg("--data-dir")
            .arg(&data)
            .env("WHARF_ADMIN_PASSWORD", ADMIN_PASSWORD);
        Wharf {
            server: TestServer::launch(cmd, &data),
            _tmp: tmp,
        }
    }
}

/// An image with one real tar+gzip layer per step of `steps` (its history says the
/// step), and `labels` in its configuration.
fn labelled_image(labels: Value, steps: &[&str]) -> Image {
    let mut rng = oci_layout::Rng::seeded();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, _) in steps.iter().enumerate() {
        let data = rng.bytes(2_000 + 1_000 * i);
        let path = format!("app/part-{i}.bin");
        let tarball = oci_layout::tar(&[
            TarEntry::Dir {
                path: "app/",
                mode: 0o755,
            },
            TarEntry::File {
                path: &path,
                mode: 0o644,
                data: &data,
            },
        ]);
        diff_ids.push(oci_layout::sha256(&tarball));
        layers.push(Blob::new(
            oci_layout::OCI_LAYER_GZIP,
            oci_layout::gzip(&tarball),
        ));
    }
    let history: Vec<Value> = steps
        .iter()
        .map(|s| json!({"created": "2026-01-02T03:04:05Z", "created_by": s}))
        .collect();
    let config = Blob::json(
        oci_layout::OCI_CONFIG,
        &json!({
            "created": "2026-01-02T03:04:05Z",
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/app/serve"], "Labels": labels, "Env": ["PATH=/usr/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        }),
    );
    let manifest = Blob::json(
        oci_layout::OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": oci_layout::OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        }),
    );
    Image {
        config,
        layers,
        diff_ids,
        manifest,
    }
}

/// Pushes `image` as `repo:tag` with skopeo, as the administrator.
async fn skopeo_push(server: &TestServer, repo: &str, tag: &str, image: &Image) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let layout = tmp.path().join("layout");
    oci_layout::write_layout(&layout, &image.content(), &[(tag, &image.manifest)]);
    let mut cmd = tokio::process::Command::new("skopeo");
    cmd.args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("admin:{ADMIN_PASSWORD}"),
    ])
    .arg(format!("oci:{}:{tag}", layout.display()))
    .arg(format!("docker://{}/{repo}:{tag}", server.addr));
    run_ok(cmd, None, SKOPEO_TIMEOUT).await;
}

/// A tiny image pushed over HTTP (where its content does not matter).
async fn push_tiny(server: &TestServer, repo: &str, tag: &str) -> String {
    secure::push(server, &admin(), repo, tag, &format!("{repo}:{tag}")).await
}

/// Signs in through the form (mouse and typing; flow 1 does it with the keyboard only)
/// and waits until the page says who is signed in.
async fn sign_in(b: &Browser, base: &str, user: &str, secret: &str) {
    b.goto(&format!("{base}/login")).await;
    b.find("#name")
        .await
        .send_keys(user)
        .await
        .expect("type the name");
    b.find("#secret")
        .await
        .send_keys(secret)
        .await
        .expect("type the secret");
    b.find("form[action='/login'] button[type=submit]")
        .await
        .click()
        .await
        .expect("submit");
    wait_signed_in_as(b, user).await;
}

/// Waits until the page header names `user` as signed in.
async fn wait_signed_in_as(b: &Browser, user: &str) {
    wait_for(
        &format!("the header to say {user} is signed in"),
        Duration::from_secs(60),
        || async {
            let who = b
                .driver()
                .find_all(By::Css(".who a[href='/account']"))
                .await
                .map_err(|e| e.to_string())?;
            match who.first() {
                Some(a) => {
                    let t = a.text().await.map_err(|e| e.to_string())?;
                    if t == user {
                        Ok(Some(()))
                    } else {
                        Err(format!("header names {t:?}"))
                    }
                }
                None => Err(format!(
                    "nobody signed in at {}: {:?}",
                    b.url().await,
                    b.text("main").await
                )),
            }
        },
    )
    .await
}

/// Clicks the header's Sign out button and waits for the anonymous header.
async fn sign_out(b: &Browser) {
    b.find("form[action='/logout'] button")
        .await
        .click()
        .await
        .expect("click Sign out");
    wait_for("the signed-out header", Duration::from_secs(60), || async {
        let n = b
            .driver()
            .find_all(By::Css(".who a[href='/login']"))
            .await
            .map_err(|e| e.to_string())?
            .len();
        Ok((n == 1).then_some(()))
    })
    .await
}

/// The browser's session cookie for the current site.
async fn session_cookie(b: &Browser, name: &str) -> Option<Cookie> {
    b.cookies().await.into_iter().find(|c| c.name == name)
}

/// `GET base+path` with `Cookie: NAME=VALUE` (as curl would replay it); no redirects.
async fn get_with_cookie(url: &str, cookie: Option<(&str, &str)>) -> secure::Reply {
    let mut rb = secure::client().get(url);
    if let Some((name, value)) = cookie {
        rb = rb.header("cookie", format!("{name}={value}"));
    }
    secure::send(rb).await
}

/// `curl -s -o /dev/null -w '%{http_code} %{redirect_url}' ARGS`.
async fn curl_status(args: &[&str]) -> (u16, String) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "30",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
    ])
    .args(args);
    let out = run_ok(cmd, None, CURL_TIMEOUT).await;
    let (code, redirect) = out.trim().split_once(' ').unwrap_or((out.trim(), ""));
    (code.parse().expect("an HTTP status"), redirect.to_string())
}

/// The rows of a table: each cell's text.
async fn table(b: &Browser, css: &str) -> Vec<Vec<String>> {
    try_table(b, css).await.expect("the table's cells")
}

/// The rows of a table, or why they could not be read: for polling a page that may be
/// replaced while it is read (a form's answer loading), which makes its elements stale.
async fn try_table(b: &Browser, css: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    for tr in b.find_all(&format!("{css} tbody tr")).await {
        let mut cells = Vec::new();
        for td in tr
            .find_all(By::Css("td"))
            .await
            .map_err(|e| e.to_string())?
        {
            cells.push(td.text().await.map_err(|e| e.to_string())?);
        }
        rows.push(cells);
    }
    Ok(rows)
}

/// Polls the job through the API until it is over; returns it.
async fn wait_job(server: &TestServer, id: i64) -> Value {
    wait_for(&format!("job {id} to finish"), JOB_DEADLINE, || async {
        let r = request(
            server,
            Method::GET,
            &format!("/api/v0/jobs/{id}"),
            &admin(),
            None,
        )
        .await;
        let job = r.json();
        let status = job["status"].as_str().unwrap_or_default().to_string();
        if ["done", "error", "cancelled", "worker_dead"].contains(&status.as_str()) {
            Ok(Some(job))
        } else {
            Err(format!("status {status}"))
        }
    })
    .await
}

/// Uploads the fixture advisory database through the API; the import job's id.
async fn upload_vulndb(server: &TestServer) -> i64 {
    let rb = secure::client()
        .post(server.url("/api/v0/vulndb?name=osv.zip"))
        .header("content-type", "application/zip")
        .body(scan_fixture::vulndb_zip());
    let r = secure::send(admin().apply(rb)).await;
    secure::expect(&r, 202, None, "uploading the advisory database");
    r.json()["id"].as_i64().expect("job id")
}

async fn start_job(server: &TestServer, body: Value) -> i64 {
    let r = request(server, Method::POST, "/api/v0/jobs", &admin(), Some(&body)).await;
    secure::expect(&r, 202, None, "starting a job");
    r.json()["id"].as_i64().expect("job id")
}

/// The policy every UI page must carry: no inline script or style, nothing foreign.
fn check_csp(url: &str, r: &secure::Reply) -> Result<(), String> {
    let Some(csp) = r.header("content-security-policy") else {
        return Err(format!("{url}: no Content-Security-Policy ({})", r.status));
    };
    let ok = csp.contains("default-src 'none'")
        && csp.contains("script-src 'self'")
        && csp.contains("style-src 'self'")
        && csp.contains("frame-ancestors 'none'")
        && !csp.contains("unsafe-inline")
        && !csp.contains("unsafe-eval");
    if ok {
        Ok(())
    } else {
        Err(format!("{url}: weak Content-Security-Policy {csp:?}"))
    }
}

/// A size as the pages show it: `512 B`, `2.1 KiB`.
fn human_size(bytes: usize) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// The repository names the list shows.
async fn listed(b: &Browser) -> Vec<String> {
    table(b, "#repositories")
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
}

/// No alert, no element made from data, no console error.
async fn no_markup(b: &Browser) {
    assert_eq!(b.alert_text().await, None, "an alert opened");
    let n = b
        .js(
            "return document.querySelectorAll('main img, main script, main b').length",
            vec![],
        )
        .await;
    assert_eq!(n, json!(0), "markup from data became elements");
    assert_eq!(
        b.severe_console().await,
        Vec::<String>::new(),
        "console errors"
    );
}

// =================================================================================
// 1. keyboard sign-in, search, image, copy

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_sign_in_then_search_open_an_image_and_copy_its_pull_command() {
    if !browser::available() || !support::require_tool("skopeo") {
        return;
    }
    let w = Wharf::start(&[]);
    let steps = ["COPY app /app", "RUN /app/setup --quick"];
    let image = labelled_image(
        json!({"org.opencontainers.image.title": "web shop"}),
        &steps,
    );
    skopeo_push(&w, "shop/web-app", "1.4.2", &image).await;
    push_tiny(&w, "shop/db", "15").await; // what the search must leave out
    let b = Browser::start().await;

    // --- sign in: the user name field has the focus, Tab moves on, Enter submits
    b.goto(&w.url("/login")).await;
    let f = b.focused().await;
    assert_eq!(f.id, "name", "the sign-in page focuses the user name: {f}");
    assert!(f.ring_visible(), "no focus ring on {f}");
    b.keys("admin").await;
    let stops = b.tab_to(1, |f| f.id == "secret").await;
    assert_eq!(stops.len(), 1);
    b.keys(ADMIN_PASSWORD).await;
    let stops = b.tab_to(1, |f| f.tag == "button").await;
    assert_eq!(
        stops[0].text, "Sign in",
        "Tab after the password: {}",
        stops[0]
    );
    b.keys(Key::Enter).await;
    wait_signed_in_as(&b, "admin").await;
    assert_eq!(
        b.url().await,
        w.url("/"),
        "signing in lands on the repositories"
    );

    // --- the skip link comes first and jumps to the content; then the search box
    let stops = b.tab_to(1, |f| f.tag == "a").await;
    assert_eq!(
        stops[0].text, "Skip to content",
        "first Tab stop: {}",
        stops[0]
    );
    b.keys(Key::Enter).await;
    let stops = b.tab_to(1, |f| f.id == "q").await;
    assert_eq!(
        stops.len(),
        1,
        "after the skip link, Tab reaches the search box"
    );
    b.keys("web").await;
    b.keys(Key::Enter).await;
    b.wait_url("the search's results", |u| u.contains("q=web"))
        .await;
    let rows = table(&b, "#repositories").await;
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["shop/web-app"], "the search for \"web\": {rows:?}");

    // --- open the repository, then the image, with Tab and Enter
    b.tab_to(60, |f| f.href == "/repos/shop/web-app").await;
    b.keys(Key::Enter).await;
    b.wait_url("the repository page", |u| {
        u.ends_with("/repos/shop/web-app")
    })
    .await;
    assert_eq!(b.text("h1").await, "shop/web-app");
    let tags = table(&b, "#tags").await;
    assert_eq!(tags.len(), 1, "{tags:?}");
    assert_eq!(tags[0][0], "1.4.2");
    let manifest_href = format!("/repos/shop/web-app/-/manifests/{}", image.manifest.digest);
    b.tab_to(60, |f| f.href == manifest_href).await;
    b.keys(Key::Enter).await;
    b.wait_url("the image page", |u| u.ends_with(&manifest_href))
        .await;
    assert_eq!(b.text("h1").await, image.manifest.digest);
    let layers = table(&b, "#layers").await;
    assert_eq!(layers.len(), 2, "two layers: {layers:?}");
    for (i, (row, layer)) in layers.iter().zip(&image.layers).enumerate() {
        assert_eq!(row[0], (i + 1).to_string(), "{row:?}");
        assert_eq!(
            row[1],
            &layer.digest[..7 + 12],
            "layer {i}'s digest: {row:?}"
        );
        assert_eq!(
            row[2],
            human_size(layer.size()),
            "layer {i}'s size: {row:?}"
        );
        assert_eq!(row[3], steps[i], "layer {i} comes from its step: {row:?}");
    }
    let labels = b.text("#labels").await;
    assert!(
        labels.contains("org.opencontainers.image.title") && labels.contains("web shop"),
        "{labels}"
    );

    // --- copy the pull command with the Copy button (Enter on it), read the clipboard
    b.driver().back().await.expect("back");
    b.wait_url("the repository page again", |u| {
        u.ends_with("/repos/shop/web-app")
    })
    .await;
    b.grant_clipboard(&w.base).await;
    let pull = b
        .find("#pull-1")
        .await
        .value()
        .await
        .expect("value")
        .unwrap_or_default();
    assert_eq!(pull, format!("docker pull {}/shop/web-app:1.4.2", w.addr));
    let copy = b.find("button.copy[data-copy='pull-1']").await;
    assert!(
        copy.is_displayed().await.unwrap(),
        "the script reveals the Copy button"
    );
    let stops = b
        .tab_to(60, |f| {
            f.data.get("copy").map(String::as_str) == Some("pull-1")
        })
        .await;
    let button = stops.last().unwrap();
    assert_eq!(
        (button.tag.as_str(), button.text.as_str()),
        ("button", "Copy")
    );
    b.keys(Key::Enter).await;
    b.wait_text(
        "button.copy[data-copy='pull-1']",
        "Copied",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        b.read_clipboard().await,
        pull,
        "the clipboard holds the command"
    );
    assert_eq!(
        b.severe_console().await,
        Vec::<String>::new(),
        "console errors"
    );
    b.quit().await;
}

// =================================================================================
// 2. deleting a tag

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tag_through_the_confirmation_page() {
    if !browser::available() {
        return;
    }
    let w = Wharf::start(&[]);
    push_tiny(&w, "team/api", "v1").await;
    push_tiny(&w, "team/api", "v2").await;
    let b = Browser::start().await;
    sign_in(&b, &w.base, "admin", ADMIN_PASSWORD).await;
    b.goto(&w.url("/repos/team/api")).await;
    let tag_names = |rows: Vec<Vec<String>>| {
        rows.into_iter()
            .map(|r| r[0].clone())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        tag_names(table(&b, "#tags").await),
        BTreeSet::from(["v1".into(), "v2".into()])
    );

    // Cancel leaves the tag alone.
    b.find("#tags a[href='/repos/team/api/-/tags/v2/delete']")
        .await
        .click()
        .await
        .unwrap();
    b.wait_url("the confirmation page", |u| {
        u.ends_with("/-/tags/v2/delete")
    })
    .await;
    b.find("main a[href='/repos/team/api']")
        .await
        .click()
        .await
        .unwrap();
    b.wait_url("back on the repository", |u| u.ends_with("/repos/team/api"))
        .await;

    // Delete v1: the confirmation page asks, the button deletes.
    b.find("#tags a[href='/repos/team/api/-/tags/v1/delete']")
        .await
        .click()
        .await
        .unwrap();
    b.wait_url("the confirmation page", |u| {
        u.ends_with("/-/tags/v1/delete")
    })
    .await;
    assert_eq!(b.text("h1").await, "Delete tag v1?");
    assert!(b
        .text("main")
        .await
        .contains("Pulls of team/api:v1 will fail"));
    let button = b.find("main form button[type=submit]").await;
    assert_eq!(button.text().await.unwrap(), "Delete the tag");
    button.click().await.unwrap();
    b.wait_url("the repository after deleting", |u| {
        u.contains("done=tag-deleted")
    })
    .await;
    assert_eq!(b.text("p.notice").await, "The tag was deleted.");
    assert_eq!(
        tag_names(table(&b, "#tags").await),
        BTreeSet::from(["v2".into()])
    );

    // What clients see.
    let r = secure::get(&w, "/v2/team/api/tags/list", &admin()).await;
    secure::expect(&r, 200, None, "the tag list");
    assert_eq!(r.json()["tags"], json!(["v2"]), "{}", r.describe());
    assert_eq!(
        b.severe_console().await,
        Vec::<String>::new(),
        "console errors"
    );
    b.quit().await;
}

// =================================================================================
// 3. access tokens

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_is_created_used_with_curl_and_revoked() {
    if !browser::available() || !support::require_tool("curl") {
        return;
    }
    let w = Wharf::start(&[]);
    let b = Browser::start().await;
    sign_in(&b, &w.base, "admin", ADMIN_PASSWORD).await;
    b.goto(&w.url("/account")).await;
    b.find("#label").await.send_keys("laptop").await.unwrap();
    b.find("#days").await.send_keys("30").await.unwrap();
    b.find("form[action='/account/tokens'] button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    let token = wait_for("the new token", Duration::from_secs(60), || async {
        let found = b
            .driver()
            .find_all(By::Css("#new-token"))
            .await
            .map_err(|e| e.to_string())?;
        match found.first() {
            Some(e) => Ok(e.value().await.map_err(|e| e.to_string())?),
            None => Err(format!("no #new-token at {}", b.url().await)),
        }
    })
    .await;
    assert!(token.starts_with("wharf_"), "a token: {token}");
    let row = |rows: &[Vec<String>]| rows.iter().find(|r| r[0] == "laptop").cloned();
    let laptop = row(&table(&b, "#tokens").await).expect("the token's row");
    assert_eq!(laptop[4], "active", "{laptop:?}");
    assert_ne!(laptop[3], "never", "it expires in 30 days: {laptop:?}");

    let creds = format!("admin:{token}");
    let me = w.url("/api/v0/me");
    let v2 = w.url("/v2/");
    assert_eq!(
        curl_status(&["-u", &creds, &me]).await.0,
        200,
        "the token works for /api/v0/me"
    );
    assert_eq!(
        curl_status(&["-u", &creds, &v2]).await.0,
        200,
        "and for /v2/"
    );

    // Shown once: a reload does not show it again.
    b.goto(&w.url("/account")).await;
    assert!(
        b.find_all("#new-token").await.is_empty(),
        "the token is shown only once"
    );

    // Revoke it: the confirmation dialog, then Yes.
    let mut revoke = None;
    for tr in b.find_all("#tokens tbody tr").await {
        let first = tr.find(By::Css("td")).await.unwrap().text().await.unwrap();
        if first == "laptop" {
            revoke = Some(tr.find(By::Css("button[type=submit]")).await.unwrap());
        }
    }
    revoke.expect("a Revoke button").click().await.unwrap();
    let dialog = b.find("dialog[open]").await;
    assert!(dialog
        .text()
        .await
        .unwrap()
        .contains("Revoke the token “laptop”?"));
    b.find("dialog[open] button.danger")
        .await
        .click()
        .await
        .unwrap();
    wait_for(
        "the token to show as revoked",
        Duration::from_secs(60),
        || async {
            let rows = try_table(&b, "#tokens").await?;
            match row(&rows) {
                Some(r) if r[4] == "revoked" => Ok(Some(())),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(
        curl_status(&["-u", &creds, &me]).await.0,
        401,
        "the revoked token is refused"
    );
    assert_eq!(
        curl_status(&["-u", &creds, &v2]).await.0,
        401,
        "also on /v2/"
    );
    assert_eq!(
        b.severe_console().await,
        Vec::<String>::new(),
        "console errors"
    );
    b.quit().await;
}

// =================================================================================
// 4. a job's live log

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gc_job_started_from_the_jobs_page_is_followed_until_done() {
    if !browser::available() {
        return;
    }
    let w = Wharf::start(&[]);
    push_tiny(&w, "team/api", "v1").await;
    let b = Browser::start().await;
    sign_in(&b, &w.base, "admin", ADMIN_PASSWORD).await;
    b.find("nav a[href='/jobs']").await.click().await.unwrap();
    b.wait_url("the jobs page", |u| u.ends_with("/jobs")).await;
    let select = thirtyfour::components::SelectElement::new(&b.find("#start-action").await)
        .await
        .unwrap();
    select.select_by_visible_text("gc").await.unwrap();
    let dry_run = b.find("#dry_run").await;
    dry_run.click().await.unwrap();
    assert!(dry_run.is_selected().await.unwrap());
    b.find("form[action='/jobs'][method=post] button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    let url = b
        .wait_url("the new job's page", |u| {
            u.rsplit_once("/jobs/")
                .is_some_and(|(_, id)| id.parse::<i64>().is_ok())
        })
        .await;
    let id: i64 = url.rsplit_once("/jobs/").unwrap().1.parse().unwrap();
    assert_eq!(b.text("h1").await, format!("Job {id}: gc"));

    // The tail follows the log until the job has finished.
    let states = b
        .wait_text("#tail-state", "The job has finished.", JOB_DEADLINE)
        .await;
    eprintln!("tail states seen: {states:?}");
    assert_eq!(b.text("#job-status").await, "done");
    let log = table(&b, "#job-log").await;
    let lines: Vec<&str> = log.iter().map(|r| r[2].as_str()).collect();
    assert!(lines.len() >= 3, "log rows: {lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("attempt 1 of")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("would remove")),
        "a dry run: {lines:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("done:")), "{lines:?}");
    assert_eq!(
        b.find("#job-log")
            .await
            .attr("data-finished")
            .await
            .unwrap(),
        Some(String::new()),
        "the tail stopped"
    );

    // The list shows it done.
    b.goto(&w.url("/jobs")).await;
    let jobs = table(&b, "#jobs").await;
    let row = jobs
        .iter()
        .find(|r| r[0] == id.to_string())
        .expect("the job in the list");
    assert_eq!(
        (row[1].as_str(), row[2].as_str()),
        ("gc", "done"),
        "{row:?}"
    );

    // The garbage-collection page reports what the dry run would have freed.
    b.goto(&w.url("/gc")).await;
    let runs = table(&b, "#gc-runs").await;
    let run = runs
        .iter()
        .find(|r| r[0] == id.to_string())
        .expect("the run on the GC page");
    assert_eq!(
        (
            run[1].as_str(),
            run[3].as_str(),
            run[4].as_str(),
            run[5].as_str()
        ),
        ("dry run (would free)", "0", "0", "0 B"),
        "{run:?}"
    );
    assert_eq!(
        b.severe_console().await,
        Vec::<String>::new(),
        "console errors"
    );
    b.quit().await;
}

// =================================================================================
// 5. what non-administrators and anonymous visitors see

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_administrators_and_anonymous_visitors_see_only_their_share() {
    if !browser::available() {
        return;
    }
    let w = Wharf::start(&[]);
    create_user(&w, "alice", "alice-password-1").await;
    push_tiny(&w, "pub/site", "v1").await;
    push_tiny(&w, "priv/vault", "v1").await;
    set_visibility(&w, &admin(), "pub/site", "public").await;
    let b = Browser::start().await;

    // --- alice: no Jobs link, a 403 page at /jobs, only the public repository
    sign_in(&b, &w.base, "alice", "alice-password-1").await;
    assert!(
        b.find_all("nav a[href='/jobs']").await.is_empty(),
        "no Jobs link for alice"
    );
    assert_eq!(listed(&b).await, ["pub/site"]);
    b.goto(&w.url("/jobs")).await;
    assert_eq!(b.text("h1").await, "Not allowed");
    assert!(b.text("main .error").await.contains("administrators"));
    assert!(b.text("main").await.contains("HTTP 403"));
    let cookie = session_cookie(&b, SESSION_COOKIE)
        .await
        .expect("alice's session");
    let r = get_with_cookie(&w.url("/jobs"), Some((SESSION_COOKIE, &cookie.value))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.describe());
    check_csp("/jobs (403)", &r).unwrap();
    b.goto(&w.url("/repos/priv/vault")).await;
    assert_eq!(
        b.text("h1").await,
        "Not found",
        "a private repository alice may not see"
    );
    b.console().await; // the 403 and 404 above are expected in the console

    // --- anonymous: only the public repository; pages needing a user send to sign-in
    b.goto(&w.url("/")).await;
    sign_out(&b).await;
    assert_eq!(listed(&b).await, ["pub/site"]);
    assert!(b.find_all("nav a[href='/jobs']").await.is_empty());
    for path in ["/repos/priv/vault", "/jobs", "/account", "/jobs/1"] {
        b.goto(&w.url(path)).await;
        b.wait_url(
            &format!("{path} to send anonymous visitors to sign in"),
            |u| u.ends_with("/login"),
        )
        .await;
        assert_eq!(b.text("h1").await, "Sign in");
    }
    b.goto(&w.url("/repos/pub/site")).await;
    assert_eq!(b.text("h1").await, "pub/site");
    assert!(
        b.find_all("#tags a.danger").await.is_empty(),
        "no Delete for anonymous"
    );

    // --- the administrator sees both, and the Jobs link
    sign_in(&b, &w.base, "admin", ADMIN_PASSWORD).await;
    b.goto(&w.url("/")).await;
    assert_eq!(listed(&b).await, ["priv/vault", "pub/site"]);
    assert_eq!(b.find_all("nav a[href='/jobs']").await.len(), 1);
    assert_eq!(
        b.severe_console().await,
        Vec::<String>::new(),
        "console errors"
    );
    b.quit().await;
}

// =================================================================================
// 6 and 7. every main page: accessibility, screenshots, console, CSP

/// A registry with something on every page: an image pushed with skopeo, another
/// repository, a finished job, an access token.
struct Tour {
    w: Wharf,
    pages: Vec<Page>,
}

struct Page {
    name: &'static str,
    path: String,
    /// Signed in as the administrator (else anonymous).
    signed_in: bool,
    /// The page is an error page with this status (its load is a console error).
    status: u16,
}

async fn tour() -> Tour {
    let w = Wharf::start(&[]);
    let image = labelled_image(
        json!({"org.opencontainers.image.source": "https://git.example/shop/web-app", "org.opencontainers.image.version": "1.4.2"}),
        &[
            "COPY app /app",
            "RUN /app/setup --quick",
            "COPY config /etc/web-app",
        ],
    );
    skopeo_push(&w, "shop/web-app", "1.4.2", &image).await;
    // A vulnerable image, scanned against the fixture database, for the scanning pages.
    let alpine = scan_fixture::alpine_image("0.6.20-r0");
    skopeo_push(&w, "base/alpine", "3.12", &alpine).await;
    let imported = upload_vulndb(&w).await;
    assert_eq!(wait_job(&w, imported).await["status"], "done");
    let scan = start_job(
        &w,
        json!({"action": "scan", "params": {"repository": "base/alpine", "digest": alpine.manifest.digest}}),
    )
    .await;
    assert_eq!(wait_job(&w, scan).await["status"], "done");
    push_tiny(&w, "shop/web-app", "latest").await;
    push_tiny(&w, "library/alpine", "3.20").await;
    set_visibility(&w, &admin(), "library/alpine", "public").await;
    secure::create_token(&w, &admin(), "admin", "CI on build-01", Some(86_400 * 30)).await;
    let job = start_job(&w, json!({"action": "gc", "params": {"dry_run": true}})).await;
    let done = wait_job(&w, job).await;
    assert_eq!(done["status"], "done", "{done}");
    let r = request(
        &w,
        Method::POST,
        "/api/v0/orgs",
        &admin(),
        Some(&json!({"name": "shop"})),
    )
    .await;
    secure::expect(&r, 201, None, "creating an organisation");
    let r = request(
        &w,
        Method::POST,
        "/api/v0/orgs/shop/teams",
        &admin(),
        Some(&json!({"name": "devs"})),
    )
    .await;
    secure::expect(&r, 201, None, "creating a team");
    let page = |name, path: String, signed_in, status| Page {
        name,
        path,
        signed_in,
        status,
    };
    let pages = vec![
        page("login", "/login".into(), false, 200),
        page("repositories", "/".into(), true, 200),
        page("repository", "/repos/shop/web-app".into(), true, 200),
        page(
            "image",
            format!("/repos/shop/web-app/-/manifests/{}", image.manifest.digest),
            true,
            200,
        ),
        page(
            "delete-tag",
            "/repos/shop/web-app/-/tags/latest/delete".into(),
            true,
            200,
        ),
        page("account", "/account".into(), true, 200),
        page("jobs", "/jobs".into(), true, 200),
        page("job", format!("/jobs/{job}"), true, 200),
        page(
            "settings",
            "/repos/shop/web-app/-/settings".into(),
            true,
            200,
        ),
        page("gc", "/gc".into(), true, 200),
        page("system", "/system".into(), true, 200),
        page("caches", "/admin/caches".into(), true, 200),
        page("users", "/admin/users".into(), true, 200),
        page("orgs", "/admin/orgs".into(), true, 200),
        page("org", "/admin/orgs/shop".into(), true, 200),
        page("audit", "/audit".into(), true, 200),
        page("repository-scanned", "/repos/base/alpine".into(), true, 200),
        page(
            "vulnerabilities",
            format!(
                "/repos/base/alpine/-/vulnerabilities/{}",
                alpine.manifest.digest
            ),
            true,
            200,
        ),
        page("vulndb", "/vulndb".into(), true, 200),
        page("not-found", "/no/such/page".into(), true, 404),
    ];
    Tour { w, pages }
}

fn screenshot_dir() -> PathBuf {
    match std::env::var_os("WHARF_UI_SCREENSHOTS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("the target dir")
            .join("ui-screenshots"),
    }
}

/// The width and height a PNG file says it has.
fn png_size(path: &std::path::Path) -> (u32, u32) {
    let bytes = std::fs::read(path).expect("screenshot file");
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is a PNG",
        path.display()
    );
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_main_page_passes_axe_in_light_and_dark() {
    if !browser::available() || !support::require_tool("skopeo") {
        return;
    }
    let t = tour().await;
    let b = Browser::start().await;
    b.viewport(1280, 900, false).await;
    let mut problems = Vec::new();
    let mut signed_in = false;
    for p in &t.pages {
        if p.signed_in && !signed_in {
            sign_in(&b, &t.w.base, "admin", ADMIN_PASSWORD).await;
            signed_in = true;
        }
        for dark in [false, true] {
            let scheme = if dark { "dark" } else { "light" };
            b.color_scheme(dark).await;
            b.goto(&t.w.url(&p.path)).await;
            let started = Instant::now();
            let violations = b.axe().await;
            eprintln!(
                "axe on {} ({scheme}): {} violations in {:?}",
                p.name,
                violations.len(),
                started.elapsed()
            );
            for v in violations {
                for n in &v.nodes {
                    problems.push(format!(
                        "{} ({scheme}) {}: {} [{}] at {}: {}",
                        p.name,
                        v.id,
                        v.help,
                        v.impact.as_deref().unwrap_or("?"),
                        n.target,
                        n.summary.replace('\n', " ")
                    ));
                }
            }
            for c in b.unlabelled_controls().await {
                problems.push(format!(
                    "{} ({scheme}): the control {c} has no label",
                    p.name
                ));
            }
        }
    }
    // The checks catch what they are for: a planted unlabelled field and pale grey text
    // (set through the CSSOM, which the policy allows) on the last page, light scheme.
    b.color_scheme(false).await;
    b.js(
        "const p = document.createElement('p'); p.textContent = 'pale text'; p.style.color = '#bbbbbb';
         const i = document.createElement('input'); i.id = 'planted-input';
         document.querySelector('main').append(p, i);",
        vec![],
    )
    .await;
    let planted: BTreeSet<String> = b.axe().await.into_iter().map(|v| v.id).collect();
    for rule in ["label", "color-contrast"] {
        assert!(
            planted.contains(rule),
            "axe missed the planted {rule} fault: {planted:?}"
        );
    }
    assert_eq!(b.unlabelled_controls().await, ["input#planted-input"]);
    b.quit().await;
    assert!(
        problems.is_empty(),
        "accessibility problems:\n{}",
        problems.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_main_page_at_desktop_and_phone_sizes_without_console_errors() {
    if !browser::available() || !support::require_tool("skopeo") {
        return;
    }
    let t = tour().await;
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let b = Browser::start().await;
    let mut problems = Vec::new();
    let mut cookie: Option<String> = None;
    b.console().await;
    for p in &t.pages {
        if p.signed_in && cookie.is_none() {
            sign_in(&b, &t.w.base, "admin", ADMIN_PASSWORD).await;
            cookie = Some(
                session_cookie(&b, SESSION_COOKIE)
                    .await
                    .expect("session")
                    .value,
            );
            b.console().await;
        }
        // The page as a script-less client gets it: status and headers.
        let url = t.w.url(&p.path);
        let r = get_with_cookie(
            &url,
            cookie
                .as_deref()
                .filter(|_| p.signed_in)
                .map(|c| (SESSION_COOKIE, c)),
        )
        .await;
        if r.status.as_u16() != p.status {
            problems.push(format!(
                "{}: HTTP {} (expected {})",
                p.name, r.status, p.status
            ));
        }
        if let Err(e) = check_csp(&url, &r) {
            problems.push(e);
        }
        for (device, w, h, mobile) in [("desktop", 1280, 900, false), ("phone", 390, 844, true)] {
            for dark in [false, true] {
                let scheme = if dark { "dark" } else { "light" };
                b.viewport(w, h, mobile).await;
                b.color_scheme(dark).await;
                b.goto(&url).await;
                let file = dir.join(format!("{}-{device}-{scheme}.png", p.name));
                b.screenshot(&file).await;
                let size = png_size(&file);
                if size != (w, h) {
                    problems.push(format!(
                        "{}: {device} screenshot is {size:?}",
                        file.display()
                    ));
                }
                // Nothing but the tables' own scroll boxes may be wider than the screen.
                let overflow = b
                    .js("return document.documentElement.scrollWidth - document.documentElement.clientWidth", vec![])
                    .await;
                if overflow.as_i64().unwrap_or(0) > 0 {
                    problems.push(format!(
                        "{} ({device}, {scheme}): the page is {overflow} px wider than the screen",
                        p.name
                    ));
                }
                for e in b.severe_console().await {
                    let expected =
                        p.status != 200 && e.contains(&format!("status of {}", p.status));
                    if !expected {
                        problems.push(format!("{} ({device}, {scheme}): console: {e}", p.name));
                    }
                }
                if let Some(a) = b.alert_text().await {
                    problems.push(format!("{}: an alert opened: {a}", p.name));
                }
            }
        }
    }
    // The console check sees what it is for: an inline script, which the policy blocks.
    b.js(
        "const s = document.createElement('script'); s.textContent = 'window.ran = 1';
         document.body.append(s);",
        vec![],
    )
    .await;
    let blocked = b.severe_console().await;
    assert!(
        blocked
            .iter()
            .any(|e| e.contains("Content Security Policy")),
        "the planted inline script was not reported as blocked: {blocked:?}"
    );
    assert_eq!(
        b.js("return window.ran === undefined", vec![]).await,
        json!(true)
    );
    b.quit().await;
    eprintln!("screenshots in {}", dir.display());
    assert!(problems.is_empty(), "problems:\n{}", problems.join("\n"));
}

// =================================================================================
// 8. security

/// A tiny web server for the attacker's pages, on 127.0.0.1 (reached as `localhost`
/// for a cross-site page, as `127.0.0.1` for a same-site one). Stops on drop.
struct Attacker {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Attacker {
    async fn start(pages: Vec<(String, &'static str, String)>) -> Attacker {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let pages = std::sync::Arc::new(pages);
        let task = tokio::spawn(async move {
            // Bounded: a test makes a handful of requests.
            for _ in 0..1_000 {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let pages = pages.clone();
                tokio::spawn(tokio::time::timeout(Duration::from_secs(30), async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65_536 {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf);
                    let path = head.split_whitespace().nth(1).unwrap_or("/");
                    let path = path.split('?').next().unwrap_or(path);
                    let (status, ctype, body) = match pages.iter().find(|(p, _, _)| p == path) {
                        Some((_, ctype, body)) => ("200 OK", *ctype, body.clone()),
                        None => ("404 Not Found", "text/plain", "no such page".to_string()),
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                    let _ = conn.shutdown().await;
                }));
            }
        });
        Attacker { port, task }
    }
}

/// A page that posts `fields` to `action` as soon as it loads (through its own script,
/// the way a real attack page would).
fn forging_page(action: &str, fields: &[(&str, &str)]) -> String {
    let inputs: String = fields
        .iter()
        .map(|(k, v)| format!(r#"<input type="hidden" name="{k}" value="{v}">"#))
        .collect();
    format!(
        r#"<!doctype html><html><head><title>Win a prize</title></head><body><form method="post" action="{action}">{inputs}</form><script src="/go.js"></script></body></html>"#
    )
}

async fn tokens_labelled(w: &TestServer, prefix: &str) -> Vec<String> {
    let r = secure::get(w, "/api/v0/users/admin/tokens", &admin()).await;
    secure::expect(&r, 200, None, "the administrator's tokens");
    let v = r.json();
    let list = v
        .as_array()
        .cloned()
        .or_else(|| v["tokens"].as_array().cloned())
        .unwrap_or_default();
    list.iter()
        .filter_map(|t| t["label"].as_str())
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_form_posts_from_other_sites_are_refused() {
    if !browser::available() {
        return;
    }
    let w = Wharf::start(&[]);
    create_user(&w, "mallory", "mallory-password-1").await;
    let b = Browser::start().await;
    sign_in(&b, &w.base, "admin", ADMIN_PASSWORD).await;
    b.goto(&w.url("/account")).await;
    // What a page of the same host could steal at worst: the real form token.
    let csrf = b
        .find("form[action='/account/tokens'] input[name=_csrf]")
        .await
        .value()
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(!csrf.is_empty());
    let tokens = w.url("/account/tokens");
    let attacker = Attacker::start(vec![
        (
            "/go.js".into(),
            "text/javascript",
            "document.forms[0].submit();".into(),
        ),
        (
            "/token.html".into(),
            "text/html",
            forging_page(&tokens, &[("label", "forged-plain"), ("days", "")]),
        ),
        (
            "/token-csrf.html".into(),
            "text/html",
            forging_page(
                &tokens,
                &[
                    ("label", "forged-with-csrf"),
                    ("days", ""),
                    ("_csrf", &csrf),
                ],
            ),
        ),
        (
            "/login.html".into(),
            "text/html",
            forging_page(
                &w.url("/login"),
                &[
                    ("name", "mallory"),
                    ("secret", "mallory-password-1"),
                    ("next", "/"),
                ],
            ),
        ),
    ])
    .await;
    let cases = [
        // (attacker host, page, what the registry must answer with)
        ("localhost", "/token.html", "cross-site, no form token"),
        (
            "localhost",
            "/token-csrf.html",
            "cross-site, with the stolen form token",
        ),
        (
            "127.0.0.1",
            "/token.html",
            "same-site (another port), no form token",
        ),
        (
            "127.0.0.1",
            "/token-csrf.html",
            "same-site (another port), with the stolen form token",
        ),
        ("localhost", "/login.html", "cross-site sign-in as mallory"),
        ("127.0.0.1", "/login.html", "same-site sign-in as mallory"),
    ];
    for (host, page, what) in cases {
        let url = format!("http://{host}:{}{page}", attacker.port);
        b.goto(&url).await;
        // The page's script submits the form: the browser ends up on the registry.
        let landed = b
            .wait_url(&format!("{what}: the forged form to be sent"), |u| {
                u.starts_with(&w.base)
            })
            .await;
        let h1 = b.text("h1").await;
        let main = b.text("main").await;
        eprintln!("{what}: landed on {landed}: {h1:?}");
        assert!(
            b.find_all("#new-token").await.is_empty(),
            "{what}: a token was created: {main}"
        );
        if host == "127.0.0.1" {
            // The session cookie went along (same site): the origin check refused it.
            assert_eq!(h1, "Not allowed", "{what}: {main}");
            assert!(main.contains("another site"), "{what}: {main}");
        } else {
            // SameSite=Strict kept the cookie at home, and the origin check refuses too.
            assert!(
                h1 == "Not allowed" || h1 == "Sign in",
                "{what}: {landed}: {main}"
            );
        }
    }
    b.console().await; // the refusals above are 403s
                       // Still the administrator, and no token was made.
    b.goto(&w.url("/account")).await;
    assert_eq!(
        b.text("h1").await,
        "admin",
        "the forged sign-in did not switch users"
    );
    assert_eq!(tokens_labelled(&w, "forged").await, Vec::<String>::new());

    // The same form from the registry's own page works (so the refusals were the checks).
    b.find("#label").await.send_keys("genuine").await.unwrap();
    b.find("form[action='/account/tokens'] button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_url("the account page", |u| u.ends_with("/account/tokens"))
        .await;
    assert!(
        !b.find_all("#new-token").await.is_empty(),
        "the genuine form creates a token"
    );
    assert_eq!(tokens_labelled(&w, "genuine").await, ["genuine"]);
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_starts_a_new_session_in_a_strict_http_only_cookie() {
    if !browser::available() {
        return;
    }
    let w = Wharf::start(&[]);
    create_user(&w, "mallory", "mallory-password-1").await;

    // The cookie as the registry sets it over plain HTTP.
    let form = [
        ("name", "mallory"),
        ("secret", "mallory-password-1"),
        ("next", "/"),
    ];
    let r = secure::send(secure::client().post(w.url("/login")).form(&form)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.describe());
    let set = r.header("set-cookie").expect("Set-Cookie").to_string();
    let attrs: Vec<&str> = set.split(';').map(str::trim).collect();
    let mallory = attrs[0]
        .strip_prefix("wharf_session=")
        .expect("the cookie's name")
        .to_string();
    assert!(mallory.len() >= 32, "a long random value: {set}");
    for a in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attrs.contains(&a), "{a} in {set}");
    }
    assert!(
        !attrs.iter().any(|a| a.starts_with("Domain")),
        "no Domain: {set}"
    );
    assert!(
        !attrs.contains(&"Secure"),
        "plain HTTP: no Secure (the browser would drop it): {set}"
    );

    let b = Browser::start().await;
    // An id the attacker chose is not a session, and signing in does not adopt it.
    b.goto(&w.url("/login")).await;
    b.add_cookie(SESSION_COOKIE, "attacker-chosen").await;
    b.goto(&w.url("/account")).await;
    b.wait_url("a made-up session id to be ignored", |u| {
        u.ends_with("/login")
    })
    .await;
    sign_in(&b, &w.base, "admin", ADMIN_PASSWORD).await;
    let jar: Vec<Cookie> = b
        .cookies()
        .await
        .into_iter()
        .filter(|c| c.name == SESSION_COOKIE)
        .collect();
    assert_eq!(jar.len(), 1, "one session cookie: {jar:?}");
    let first = jar[0].value.clone();
    assert_ne!(first, "attacker-chosen");
    assert_eq!(jar[0].http_only, Some(true), "{jar:?}");
    assert_eq!(jar[0].same_site, Some(SameSite::Strict), "{jar:?}");
    assert_eq!(jar[0].path.as_deref(), Some("/"), "{jar:?}");
    let seen_by_script = b.js("return document.cookie", vec![]).await;
    assert!(
        !seen_by_script
            .as_str()
            .unwrap_or_default()
            .contains(SESSION_COOKIE),
        "HttpOnly: {seen_by_script}"
    );
    sign_out(&b).await;

    // A real session of the attacker's, planted while the sign-in page is open: the
    // victim's sign-in gets a new id, and the attacker's id stays the attacker's.
    b.goto(&w.url("/login")).await;
    b.add_cookie(SESSION_COOKIE, &mallory).await;
    b.find("#name").await.send_keys("admin").await.unwrap();
    b.find("#secret")
        .await
        .send_keys(ADMIN_PASSWORD)
        .await
        .unwrap();
    b.find("form[action='/login'] button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    wait_signed_in_as(&b, "admin").await;
    let jar: Vec<Cookie> = b
        .cookies()
        .await
        .into_iter()
        .filter(|c| c.name == SESSION_COOKIE)
        .collect();
    assert_eq!(jar.len(), 1, "one session cookie: {jar:?}");
    let second = jar[0].value.clone();
    assert!(
        second != mallory && second != first,
        "a fresh session id at every sign-in"
    );
    let as_attacker = get_with_cookie(&w.url("/account"), Some((SESSION_COOKIE, &mallory))).await;
    assert!(
        as_attacker.text().contains("<h1>mallory</h1>"),
        "{}",
        as_attacker.describe()
    );
    let as_victim = get_with_cookie(&w.url("/account"), Some((SESSION_COOKIE, &second))).await;
    assert!(
        as_victim.text().contains("<h1>admin</h1>"),
        "{}",
        as_victim.describe()
    );
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_tls_the_session_cookie_is_secure_and_host_prefixed() {
    if !browser::available() || !support::require_tool("curl") {
        return;
    }
    let w = Wharf::start(&["--tls-self-signed"]);
    let base = format!("https://{}", w.addr);
    let port = w.addr.rsplit(':').next().unwrap();

    // The header, from curl (-k: the certificate is the registry's own self-signed one).
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sk", "--max-time", "30", "-o", "/dev/null", "-D", "-"])
        .args(["--data-urlencode", "name=admin", "--data-urlencode"])
        .arg(format!("secret={ADMIN_PASSWORD}"))
        .arg(format!("{base}/login"));
    let headers = run_ok(cmd, None, CURL_TIMEOUT).await;
    let set = headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no Set-Cookie in\n{headers}"));
    let attrs: Vec<&str> = set
        .split_once(':')
        .unwrap()
        .1
        .split(';')
        .map(str::trim)
        .collect();
    assert!(attrs[0].starts_with("__Host-wharf_session="), "{set}");
    for a in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(attrs.contains(&a), "{a} in {set}");
    }
    assert!(
        !attrs.iter().any(|a| a.starts_with("Domain")),
        "no Domain with __Host-: {set}"
    );

    // The browser keeps it so, and the UI works over TLS.
    let b = Browser::start_with(Options {
        accept_insecure_certs: true,
    })
    .await;
    sign_in(&b, &base, "admin", ADMIN_PASSWORD).await;
    let jar = b.cookies().await;
    let c = jar
        .iter()
        .find(|c| c.name == "__Host-wharf_session")
        .unwrap_or_else(|| panic!("no __Host-wharf_session in {jar:?}"));
    assert_eq!(
        (c.secure, c.http_only, c.same_site),
        (Some(true), Some(true), Some(SameSite::Strict)),
        "{c:?}"
    );
    assert!(
        !jar.iter().any(|c| c.name == SESSION_COOKIE),
        "no unprefixed cookie: {jar:?}"
    );
    b.goto(&format!("{base}/account")).await;
    assert_eq!(b.text("h1").await, "admin");
    // localhost is the same registry (the certificate names it), but another site.
    b.goto(&format!("https://localhost:{port}/account")).await;
    b.wait_url("localhost has no session", |u| u.ends_with("/login"))
        .await;
    assert_eq!(
        b.severe_console().await,
        Vec::<String>::new(),
        "console errors"
    );
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_in_labels_and_job_logs_is_shown_as_text() {
    if !browser::available() || !support::require_tool("skopeo") {
        return;
    }
    // A retry 10 s after the first failure: the job page is open while it waits, so
    // its second failure reaches the page through the live tail (the script's path).
    let w = Wharf::start(&["--job-retry-backoff-secs", "10"]);
    let img_payload = "<img src=x onerror=alert(1)>";
    let script_payload = "<script>alert(2)</script>";
    let step_payload = r#"/bin/sh -c echo "<b onmouseover=alert(3)>bold</b>""#;
    let image = labelled_image(
        json!({"org.example.note": img_payload, script_payload: "key with markup"}),
        &[step_payload],
    );
    skopeo_push(&w, "lab/markup", "v1", &image).await;
    let job_payload = "<img src=x onerror=alert(4)>";
    let job = start_job(
        &w,
        json!({"action": "purge_uploads", "params": {job_payload: 1}, "max_attempts": 2}),
    )
    .await;
    // Wait for the first failure (the job then waits for its retry).
    wait_for("the job's first attempt to fail", JOB_DEADLINE, || async {
        let r = request(
            &w,
            Method::GET,
            &format!("/api/v0/jobs/{job}"),
            &admin(),
            None,
        )
        .await;
        let j = r.json();
        if j["attempts"] == 1 && j["status"] == "waiting" && j["last_error"].is_string() {
            Ok(Some(()))
        } else {
            Err(j.to_string())
        }
    })
    .await;

    let b = Browser::start().await;
    sign_in(&b, &w.base, "admin", ADMIN_PASSWORD).await;
    b.console().await;

    // The image page: labels, the history step.
    b.goto(&w.url(&format!(
        "/repos/lab/markup/-/manifests/{}",
        image.manifest.digest
    )))
    .await;
    let labels = b.text("#labels").await;
    assert!(
        labels.contains(img_payload),
        "the label value, literally: {labels}"
    );
    assert!(
        labels.contains(script_payload),
        "the label key, literally: {labels}"
    );
    let layers = table(&b, "#layers").await;
    assert_eq!(layers[0][3], step_payload, "the history step, literally");
    assert!(b.text("main").await.contains(img_payload));
    no_markup(&b).await;

    // The job's page, open while the job waits for its retry; the tail brings the rest.
    b.goto(&w.url(&format!("/jobs/{job}"))).await;
    let live = b
        .find("#job-log")
        .await
        .attr("data-finished")
        .await
        .unwrap()
        .is_none();
    b.wait_text("#tail-state", "The job has finished.", JOB_DEADLINE)
        .await;
    assert_eq!(b.text("#job-status").await, "error");
    let log = table(&b, "#job-log").await;
    let failures: Vec<&Vec<String>> = log.iter().filter(|r| r[2].contains("failed:")).collect();
    assert_eq!(failures.len(), 2, "two failed attempts: {log:?}");
    for f in &failures {
        assert!(
            f[2].contains(&format!("unknown field `{job_payload}`")),
            "literally: {f:?}"
        );
    }
    eprintln!("the second failure came through the live tail: {live}");
    no_markup(&b).await;
    // The list's last-error column.
    b.goto(&w.url("/jobs")).await;
    assert!(b.text("#jobs").await.contains(job_payload));
    no_markup(&b).await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_ends_the_session_on_the_server() {
    if !browser::available() || !support::require_tool("curl") {
        return;
    }
    let w = Wharf::start(&[]);
    let b = Browser::start().await;
    sign_in(&b, &w.base, "admin", ADMIN_PASSWORD).await;
    let value = session_cookie(&b, SESSION_COOKIE)
        .await
        .expect("a session")
        .value;
    let header = format!("Cookie: {SESSION_COOKIE}={value}");
    let account = w.url("/account");
    assert_eq!(
        curl_status(&["-H", &header, &account]).await.0,
        200,
        "the cookie works with curl"
    );
    sign_out(&b).await;
    assert!(
        session_cookie(&b, SESSION_COOKIE).await.is_none(),
        "the browser dropped the cookie"
    );
    let (code, location) = curl_status(&["-H", &header, &account]).await;
    assert_eq!(
        (code, location.as_str()),
        (303, w.url("/login").as_str()),
        "the old cookie after sign-out"
    );
    // And it cannot sign out or post anything either.
    let (code, _) = curl_status(&[
        "-H",
        &header,
        "-X",
        "POST",
        "-d",
        "label=x",
        &w.url("/account/tokens"),
    ])
    .await;
    assert_eq!(code, 303, "a form post with the old cookie goes to sign-in");
    b.quit().await;
}

// =================================================================================
// 9. two replicas sharing PostgreSQL

/// Drops the test's database when the test ends, also when it fails.
struct DropDatabase {
    server_url: String,
    name: String,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .arg(&self.server_url)
            .args([
                "-qtAc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_started_on_one_replica_works_on_another() {
    if !browser::available() || !support::require_tool("psql") {
        return;
    }
    let Some(pg) = support::pg_database("web_ui") else {
        return;
    };
    let _drop = DropDatabase {
        server_url: std::env::var("WHARF_TEST_POSTGRES_URL").unwrap(),
        name: pg.rsplit('/').next().unwrap().to_string(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let blobs = tmp.path().join("blobs");
    let replica = |name: &str| {
        let data = tmp.path().join(name);
        let mut cmd = support::serve_command();
        cmd.args(["--listen", "127.0.0.1:0", "--metadata", &pg])
            .arg("--blobs")
            .arg(&blobs)
            .arg("--data-dir")
            .arg(&data)
            .env("WHARF_ADMIN_PASSWORD", ADMIN_PASSWORD);
        TestServer::launch(cmd, &data)
    };
    let a = replica("a");
    let bb = replica("b");
    secure::push(&a, &admin(), "shared/app", "v1", "replicas").await;

    let b = Browser::start().await;
    sign_in(&b, &a.base, "admin", ADMIN_PASSWORD).await;
    // Cookies ignore ports: the same browser session reaches replica B signed in.
    b.goto(&bb.url("/account")).await;
    assert_eq!(
        b.text("h1").await,
        "admin",
        "replica B knows the session from A"
    );
    wait_signed_in_as(&b, "admin").await;
    b.goto(&bb.url("/")).await;
    let repos = table(&b, "#repositories").await;
    assert_eq!(
        repos.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        ["shared/app"]
    );
    // A form on B with the session from A.
    b.goto(&bb.url("/account")).await;
    b.find("#label").await.send_keys("made-on-b").await.unwrap();
    b.find("form[action='/account/tokens'] button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_url("the token page on B", |u| u.ends_with("/account/tokens"))
        .await;
    assert!(
        !b.find_all("#new-token").await.is_empty(),
        "B created a token"
    );
    // Signing out on B ends the session on A too.
    sign_out(&b).await;
    b.goto(&a.url("/account")).await;
    b.wait_url("A to send the signed-out browser to sign in", |u| {
        u.ends_with("/login")
    })
    .await;
    let r = secure::get(&a, "/api/v0/users/admin/tokens", &admin()).await;
    assert!(
        r.text().contains("made-on-b"),
        "A sees the token made on B: {}",
        r.describe()
    );
    assert_eq!(
        b.severe_console().await,
        Vec::<String>::new(),
        "console errors"
    );
    b.quit().await;
    drop((a, bb));
}

// =================================================================================
// 10. vulnerability scanning

/// Reloads `path` until `css` holds `wanted` (a job behind it has finished).
async fn reload_until(b: &Browser, url: &str, css: &str, wanted: &str) {
    wait_for(
        &format!("{css} to say {wanted:?} at {url}"),
        JOB_DEADLINE,
        || async {
            b.goto(url).await;
            let found = b
                .driver()
                .find_all(By::Css(css))
                .await
                .map_err(|e| e.to_string())?;
            let mut texts = Vec::new();
            for e in found {
                texts.push(e.text().await.map_err(|e| e.to_string())?);
            }
            if texts.iter().any(|t| t.contains(wanted)) {
                Ok(Some(()))
            } else {
                Err(format!("{texts:?}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_uploaded_images_scanned_and_their_findings_shown() {
    if !browser::available() || !support::require_tool("skopeo") {
        return;
    }
    let w = Wharf::start(&[]);
    // Pushes are not scanned here: "Rescan all images" does it, from the page.
    let r = request(
        &w,
        Method::PUT,
        "/api/v0/scan_policy",
        &admin(),
        Some(&json!({
            "scan_on_push": false, "block_severity": null, "unscanned": "allow", "attach_sbom": false,
        })),
    )
    .await;
    secure::expect(&r, 204, None, "turning scan on push off");
    let vulnerable = scan_fixture::alpine_image("0.6.20-r0");
    let fixed = scan_fixture::alpine_image("0.6.21-r0");
    skopeo_push(&w, "base/alpine", "3.12", &vulnerable).await;
    skopeo_push(&w, "base/alpine", "3.12-fixed", &fixed).await;
    let archive_dir = tempfile::tempdir().expect("temp dir");
    let archive = archive_dir.path().join("osv.zip");
    std::fs::write(&archive, scan_fixture::vulndb_zip()).expect("write the archive");

    let b = Browser::start().await;
    b.viewport(1280, 900, false).await;
    sign_in(&b, &w.base, "admin", ADMIN_PASSWORD).await;

    // The database page, from the menu: nothing imported yet.
    b.find("nav a[href='/vulndb']").await.click().await.unwrap();
    b.wait_url("the database page", |u| u.ends_with("/vulndb"))
        .await;
    assert!(
        b.text("#current")
            .await
            .contains("No database imported yet"),
        "{}",
        b.text("#current").await
    );

    // Upload the archive through the form; the import job makes it version 1.
    b.find("#archive")
        .await
        .send_keys(archive.to_str().unwrap())
        .await
        .expect("choose the file");
    b.find("form[action='/vulndb/upload'] button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_url("back on the database page", |u| u.contains("done=uploaded"))
        .await;
    assert!(b.text("p.notice").await.contains("import queued"));
    reload_until(&b, &w.url("/vulndb"), "#current", "upload:osv.zip").await;
    let current = b.text("#current").await;
    assert!(
        current.contains("Version\n1") || current.contains("Version 1"),
        "{current}"
    );
    assert!(
        current.contains(&format!(
            "{} (osv {})",
            scan_fixture::VULNDB_RECORDS,
            scan_fixture::VULNDB_RECORDS
        )),
        "{current}"
    );
    let versions = table(&b, "#versions").await;
    assert_eq!(versions[0][0], "1", "{versions:?}");
    assert_eq!(versions[0][1], "current", "{versions:?}");

    // The tag list says neither image is scanned yet.
    b.goto(&w.url("/repos/base/alpine")).await;
    let tags = table(&b, "#tags").await;
    let column = |tags: &Vec<Vec<String>>, tag: &str| {
        tags.iter()
            .find(|r| r[0] == tag)
            .unwrap_or_else(|| panic!("{tag} in {tags:?}"))[6]
            .clone()
    };
    assert!(column(&tags, "3.12").starts_with("not scanned"), "{tags:?}");

    // Rescan all from the database page: both images get scanned.
    b.goto(&w.url("/vulndb")).await;
    b.find("form[action='/vulndb/rescan'] button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_url("back on the database page", |u| u.contains("done=rescan"))
        .await;
    reload_until(
        &b,
        &w.url("/repos/base/alpine"),
        "#tags td.vulns",
        "none known",
    )
    .await;
    reload_until(
        &b,
        &w.url("/repos/base/alpine"),
        "#tags td.vulns",
        "1 unknown",
    )
    .await;
    let tags = table(&b, "#tags").await;
    assert!(column(&tags, "3.12").starts_with("1 unknown"), "{tags:?}");
    assert!(
        column(&tags, "3.12-fixed").starts_with("none known"),
        "{tags:?}"
    );

    // The vulnerable image's page, through its badge: the advisory with its fix.
    b.find("#tags td.vulns a[href*='vulnerabilities']")
        .await
        .click()
        .await
        .unwrap();
    let page = b
        .wait_url("the vulnerabilities page", |u| {
            u.contains("/-/vulnerabilities/")
        })
        .await;
    assert_eq!(b.text("h1").await, "Vulnerabilities");
    let facts = b.text("dl.facts").await;
    for wanted in ["scanned", "Alpine Linux v3.12", "Database version\n1"] {
        assert!(
            facts.contains(wanted) || facts.contains(&wanted.replace('\n', " ")),
            "{wanted}: {facts}"
        );
    }
    let digest_shown = page.rsplit('/').next().unwrap().to_string();
    let rows = table(&b, "table.findings").await;
    let row = rows
        .iter()
        .find(|r| r[1] == "CVE-2012-2812")
        .unwrap_or_else(|| panic!("CVE-2012-2812 in {rows:?}"));
    assert_eq!(
        (row[3].as_str(), row[4].as_str(), row[5].as_str()),
        ("libexif (Alpine:v3.12)", "0.6.20-r0", "0.6.21-r0"),
        "{row:?}"
    );
    let link = b
        .find("table.findings a[href^='https://osv.dev/vulnerability/']")
        .await
        .attr("href")
        .await
        .unwrap();
    assert_eq!(
        link.as_deref(),
        Some("https://osv.dev/vulnerability/CVE-2012-2812")
    );
    let sbom = b
        .find("a[href*='/-/sbom/']")
        .await
        .attr("href")
        .await
        .unwrap()
        .expect("the SBOM link");
    let r = get_with_cookie(
        &w.url(&sbom),
        session_cookie(&b, SESSION_COOKIE)
            .await
            .as_ref()
            .map(|c| (SESSION_COOKIE, c.value.as_str())),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    assert_eq!(r.header("content-type"), Some("application/spdx+json"));
    assert_eq!(r.json()["spdxVersion"], "SPDX-2.3");

    // The severity filter: nothing critical; the finding under its own severity.
    b.find("nav[aria-label='Filter by severity'] a[href$='severity=critical']")
        .await
        .click()
        .await
        .unwrap();
    b.wait_url("the critical filter", |u| u.ends_with("severity=critical"))
        .await;
    assert!(b
        .text("section.image-vulns")
        .await
        .contains("No critical vulnerabilities known."));
    assert_eq!(b.find_all("table.findings").await.len(), 0);

    // Scan now: queued, said so, and the results are there again.
    b.goto(&w.url(&format!(
        "/repos/base/alpine/-/vulnerabilities/{digest_shown}"
    )))
    .await;
    b.find("form[action*='/-/scan/'] button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_url("back on the vulnerabilities page", |u| {
        u.contains("done=scan-queued")
    })
    .await;
    assert!(b.text("p.notice").await.contains("A scan is queued"));
    assert_eq!(digest_shown, vulnerable.manifest.digest);

    // The upload form is refused without the session's form token (a forged form), and
    // the page sends anonymous visitors to sign in; nothing was imported.
    let cookie = session_cookie(&b, SESSION_COOKIE)
        .await
        .expect("session")
        .value;
    let boundary = "wharf-test-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\nnot-the-token\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"osv.zip\"\r\n\
         Content-Type: application/zip\r\n\r\nPK\r\n--{boundary}--\r\n"
    );
    let r = secure::send(
        secure::client()
            .post(w.url("/vulndb/upload"))
            .header("cookie", format!("{SESSION_COOKIE}={cookie}"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.describe());
    assert!(r.text().contains("security token"), "{}", r.describe());
    let r = get_with_cookie(&w.url("/vulndb"), None).await;
    assert!(r.status.is_redirection(), "{}", r.describe());
    assert_eq!(r.header("location"), Some("/login"), "{}", r.describe());
    let db = request(&w, Method::GET, "/api/v0/vulndb", &admin(), None)
        .await
        .json();
    assert_eq!(db["versions"].as_array().map(Vec::len), Some(1), "{db}");

    // The pages pass axe.
    for url in [
        w.url("/vulndb"),
        w.url(&format!(
            "/repos/base/alpine/-/vulnerabilities/{digest_shown}"
        )),
        w.url("/repos/base/alpine"),
    ] {
        b.goto(&url).await;
        let violations: Vec<String> = b
            .axe()
            .await
            .into_iter()
            .map(|v| format!("{}: {}", v.id, v.help))
            .collect();
        assert!(violations.is_empty(), "{url}: {violations:?}");
    }
    assert_eq!(
        b.severe_console().await,
        Vec::<String>::new(),
        "console errors"
    );
    b.quit().await;
}

/// A user picks a content cache on their account page; the registry then redirects
/// their downloads there; administrators see the cache on the system page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_chooses_a_content_cache_and_the_system_page_lists_it() {
    if !browser::available() {
        return;
    }
    let w = Wharf::start(&[]);
    create_user(&w, "alice", "alice-password-1").await;
    let r = request(
        &w,
        Method::POST,
        "/api/v0/content_caches",
        &admin(),
        Some(&json!({"name": "eu", "url": "http://127.0.0.1:1", "region": "eu-west"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.describe());
    let token = r.json()["token"].as_str().unwrap().to_string();
    let cache_tmp = tempfile::tempdir().unwrap();
    let mut cmd = support::serve_command();
    cmd.args(["--listen", "127.0.0.1:0", "--heartbeat-interval-secs", "1"])
        .arg("--data-dir")
        .arg(cache_tmp.path())
        .arg("--cache-for")
        .arg(&w.base)
        .env("WHARF_CACHE_TOKEN", &token);
    let cache = TestServer::launch(cmd, cache_tmp.path());
    let r = request(
        &w,
        Method::PUT,
        "/api/v0/content_caches/eu",
        &admin(),
        Some(&json!({"url": cache.base, "region": "eu-west"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.describe());

    let b = Browser::start().await;
    sign_in(&b, &w.base, "alice", "alice-password-1").await;
    reload_until(
        &b,
        &w.url("/account"),
        "#cache option[value='eu']",
        "eu (eu-west)",
    )
    .await;
    b.find("#cache option[value='eu']")
        .await
        .click()
        .await
        .unwrap();
    b.find("#cache-form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    wait_for(
        "the choice to be saved",
        Duration::from_secs(30),
        || async {
            let r = secure::get(&w, "/api/v0/users/alice/content_cache", &admin()).await;
            match r.json()["cache"].as_str() {
                Some("eu") => Ok(Some(())),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // The page shows the choice as selected.
    b.goto(&w.url("/account")).await;
    let selected = b
        .js("return document.querySelector('#cache').value", vec![])
        .await;
    assert_eq!(selected, json!("eu"));
    assert!(b.axe().await.is_empty(), "the account page passes axe");
    sign_out(&b).await;

    sign_in(&b, &w.base, "admin", ADMIN_PASSWORD).await;
    reload_until(&b, &w.url("/system"), "#caches tbody tr", "serving").await;
    let rows = table(&b, "#caches").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0][0].as_str(), rows[0][1].as_str()),
        ("eu", "eu-west"),
        "{rows:?}"
    );
    assert_eq!(rows[0][7], cache.base, "{rows:?}");
    assert!(b.axe().await.is_empty(), "the system page passes axe");
    b.quit().await;
}

/// An administrator registers a content cache in the UI and gets its token once; a
/// cache started with that token serves a team the administrator chose it for; bad
/// input is refused with a message; a pull-through proxy is added, listed and removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_registers_a_cache_chooses_it_for_a_team_and_manages_proxies() {
    if !browser::available() {
        return;
    }
    let w = Wharf::start(&[]);
    create_user(&w, "bob", "bob-password-1").await;
    for (path, body, what) in [
        ("/api/v0/orgs", json!({"name": "shop"}), "an organisation"),
        ("/api/v0/orgs/shop/teams", json!({"name": "devs"}), "a team"),
    ] {
        let r = request(&w, Method::POST, path, &admin(), Some(&body)).await;
        secure::expect(&r, 201, None, what);
    }
    let r = request(
        &w,
        Method::PUT,
        "/api/v0/orgs/shop/teams/devs/members/bob",
        &admin(),
        None,
    )
    .await;
    assert!(
        r.status.is_success(),
        "bob into shop/devs: {}",
        r.describe()
    );
    // The cache's address, known before it starts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache_url = format!("http://127.0.0.1:{port}");

    let b = Browser::start().await;
    sign_in(&b, &w.base, "admin", ADMIN_PASSWORD).await;
    b.goto(&w.url("/admin/caches")).await;
    assert_eq!(
        b.text("#caches-h + p + p.empty").await,
        "No content caches."
    );
    // A URL that is not http(s) is refused, saying why.
    let register = |url: String| {
        let b = &b;
        async move {
            b.find("#c-name").await.send_keys("eu").await.unwrap();
            b.js(
                "document.querySelector('#c-url').value = arguments[0]",
                vec![json!(url)],
            )
            .await;
            b.find("#c-region")
                .await
                .send_keys("eu-west")
                .await
                .unwrap();
            b.find("#new-cache-h + form button[type=submit]")
                .await
                .click()
                .await
                .unwrap();
        }
    };
    register("ftp://cache.example.com".into()).await;
    shows(&b, "p.error[role=alert]", "is not an http(s) URL").await;
    register(cache_url.clone()).await;
    let command = shows(&b, "#cache-token-command", "wharf serve").await;
    let token = command
        .split_whitespace()
        .last()
        .expect("the command ends with the token")
        .to_string();
    assert!(
        command.starts_with(&format!("wharf serve --cache-for {}", w.base))
            && token.starts_with("wharf_cache_"),
        "{command}"
    );
    // Shown once.
    b.goto(&w.url("/admin/caches")).await;
    shows(&b, "#caches tbody tr", "eu").await;
    assert!(b.find_all("#new-cache-token").await.is_empty());
    assert_eq!(
        table(&b, "#caches").await[0][..3],
        ["eu", "eu-west", "unseen"]
    );

    // The token from the page is the cache's: it registers and serves.
    let cache_tmp = tempfile::tempdir().unwrap();
    let mut cmd = support::serve_command();
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--heartbeat-interval-secs", "1"])
        .arg("--data-dir")
        .arg(cache_tmp.path())
        .arg("--cache-for")
        .arg(&w.base)
        .env("WHARF_CACHE_TOKEN", &token);
    let _cache = TestServer::launch(cmd, cache_tmp.path());
    reload_until(&b, &w.url("/admin/caches"), "#caches tbody tr", "serving").await;

    // Chosen for the team devs: its member bob is redirected to it.
    b.find("#ch-who")
        .await
        .send_keys("shop/nobody")
        .await
        .unwrap();
    b.find("#ch-cache option[value='eu']")
        .await
        .click()
        .await
        .unwrap();
    b.find("#choose-h ~ form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    shows(
        &b,
        "p.error[role=alert]",
        "there is no team \"shop/nobody\"",
    )
    .await;
    b.find("#ch-who")
        .await
        .send_keys("shop/devs")
        .await
        .unwrap();
    b.find("#ch-cache option[value='eu']")
        .await
        .click()
        .await
        .unwrap();
    b.find("#choose-h ~ form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    wait_for("bob's effective cache", Duration::from_secs(30), || async {
        let r = secure::get(&w, "/api/v0/users/bob/content_cache", &admin()).await;
        let v = r.json();
        match (v["cache"].as_str(), v["effective"].as_str()) {
            (None, Some("eu")) => Ok(Some(())),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    b.goto(&w.url("/admin/caches")).await;

    // A proxy: a bad upstream is refused, a good one listed, then removed.
    let add_proxy = |upstreams: &'static str| {
        let b = &b;
        async move {
            b.find("#p-prefix").await.send_keys("hub").await.unwrap();
            b.find("#p-upstreams")
                .await
                .send_keys(upstreams)
                .await
                .unwrap();
            b.find("#p-revalidate").await.send_keys("30").await.unwrap();
            b.find("#p-max-gib").await.send_keys("5").await.unwrap();
            b.find("#new-proxy-h + form button[type=submit]")
                .await
                .click()
                .await
                .unwrap();
        }
    };
    add_proxy("ftp://mirror.example.com").await;
    shows(
        &b,
        "p.error[role=alert]",
        "must be an http:// or https:// URL",
    )
    .await;
    add_proxy("http://127.0.0.1:1\nhttp://127.0.0.1:2/").await;
    shows(&b, "#proxies tbody tr", "hub/").await;
    let rows = table(&b, "#proxies").await;
    assert_eq!(
        rows[0][..5],
        [
            "hub/",
            "http://127.0.0.1:1, http://127.0.0.1:2",
            "—",
            "every 30 s",
            "up to 5.0 GiB"
        ],
        "{rows:?}"
    );
    let r = secure::get(&w, "/api/v0/proxies", &admin()).await;
    assert_eq!(
        r.json()[0]["max_bytes"],
        json!(5u64 << 30),
        "{}",
        r.describe()
    );
    assert!(b.axe().await.is_empty(), "the caches page passes axe");
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).unwrap();
    b.screenshot(&dir.join("caches-populated.png")).await;
    b.find("#proxies button.danger")
        .await
        .click()
        .await
        .unwrap();
    assert!(b
        .find("dialog[open]")
        .await
        .text()
        .await
        .unwrap()
        .contains("Stop proxying hub/?"));
    b.find("dialog[open] button.danger")
        .await
        .click()
        .await
        .unwrap();
    wait_for(
        "the proxy to be removed",
        Duration::from_secs(30),
        || async {
            let r = secure::get(&w, "/api/v0/proxies", &admin()).await;
            match r.json().as_array().map(Vec::len) {
                Some(0) => Ok(Some(())),
                other => Err(format!("{other:?} proxies")),
            }
        },
    )
    .await;
    // Each change is in the audit log, marked as made in the web UI.
    let r = secure::get(&w, "/api/v0/audit?limit=50", &admin()).await;
    let log = r.text();
    for action in [
        "content_cache.create",
        "content_cache.choose",
        "proxy.create",
        "proxy.delete",
    ] {
        assert!(log.contains(action), "{action} not audited: {log}");
    }
    // The console holds the three refusals (400) and nothing else.
    let console = b.severe_console().await;
    let refusals = console
        .iter()
        .filter(|l| l.contains("/admin/caches") && l.contains("status of 400"))
        .count();
    assert_eq!((refusals, console.len()), (3, 3), "{console:#?}");
    b.quit().await;
}

/// Waits until an element matching `css` contains `wanted` (the page a form was posted
/// to has loaded); returns its text.
async fn shows(b: &Browser, css: &str, wanted: &str) -> String {
    wait_for(
        &format!("{css} to say {wanted:?}"),
        Duration::from_secs(30),
        || async {
            for e in b
                .driver()
                .find_all(By::Css(css))
                .await
                .map_err(|e| e.to_string())?
            {
                let text = e.text().await.map_err(|e| e.to_string())?;
                if text.contains(wanted) {
                    return Ok(Some(text));
                }
            }
            Ok(None)
        },
    )
    .await
}

/// The system page plans an upgrade and runs the pre-flight checks, read-only, as the
/// CLI does: a downgrade is refused with its reason, this version needs nothing, and
/// every check is listed with its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_page_plans_an_upgrade_and_runs_the_checks() {
    if !browser::available() {
        return;
    }
    let w = Wharf::start(&[]);
    let b = Browser::start().await;
    sign_in(&b, &w.base, "admin", ADMIN_PASSWORD).await;
    b.goto(&w.url("/system")).await;
    let plan = |to: &'static str| {
        let b = &b;
        async move {
            b.js(
                "document.querySelector('#plan-to').value = arguments[0]",
                vec![json!(to)],
            )
            .await;
            b.find("#plan-form button[type=submit]")
                .await
                .click()
                .await
                .unwrap();
        }
    };
    plan("1.1.0").await;
    let verdict = shows(&b, "#plan-verdict", "1.1.0").await;
    assert!(verdict.contains("refused"), "{verdict}");
    let rows = table(&b, "#plan-checks").await;
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    let r = secure::get(&w, "/api/v0/upgrade/check?to=1.1.0", &admin()).await;
    let api: Vec<String> = r.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, api, "the page lists the API's checks");
    let path = rows.iter().find(|r| r[0] == "path").expect("a path check");
    assert_eq!(path[1], "fail", "a downgrade: {path:?}");
    let replicas = rows.iter().find(|r| r[0] == "replicas").unwrap();
    assert!(
        replicas[1] == "fail" && replicas[2].contains(&w.base),
        "this replica serves: {replicas:?}"
    );
    assert!(b.axe().await.is_empty(), "the planned upgrade passes axe");
    plan(env!("CARGO_PKG_VERSION")).await;
    shows(&b, "#plan-verdict", "nothing to do").await;
    plan("banana").await;
    shows(&b, "p.error[role=alert]", "is not a version").await;
    assert_eq!(b.severe_console().await, Vec::<String>::new());
    b.quit().await;
}
