//! Black-box security tests against a real `wharf serve` with authentication on, as it
//! ships: who may pull, push, delete, list and administer (a full role × action matrix,
//! with basic auth and with the Docker token protocol), how anonymous callers are
//! challenged, the Docker CLI and skopeo signing in with passwords and access tokens,
//! curl-style use of the management API, revocation and expiry taking effect at once,
//! bearer tokens shared by replicas, failed-login rate limits, the generated initial
//! password, the `wharf user` commands and the audit log.
//!
//! Every test starts its own registry; every process, container, image and temp dir
//! it creates is removed on drop, also when it fails.

mod support;

#[path = "support/secure.rs"]
mod secure;

#[path = "support/oci_layout.rs"]
mod oci_layout;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use secure::*;
use serde_json::{json, Value};
use support::TestServer;

const DOCKER_TIMEOUT: Duration = Duration::from_secs(180);
const SKOPEO_TIMEOUT: Duration = Duration::from_secs(180);
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// =================================================================================
// 1. the permission matrix

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Anonymous,
    Outsider,
    Reader,
    Writer,
    RepoAdmin,
    OrgAdmin,
    SystemAdmin,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Anonymous => "anonymous",
            Role::Outsider => "signed in, no grant",
            Role::Reader => "reader (read)",
            Role::Writer => "writer (write)",
            Role::RepoAdmin => "repo admin (admin)",
            Role::OrgAdmin => "org admin of acme",
            Role::SystemAdmin => "system admin",
        }
    }

    /// The account, for signed-in roles.
    fn user(self) -> Option<&'static str> {
        match self {
            Role::Anonymous => None,
            Role::Outsider => Some("outsider"),
            Role::Reader => Some("reader"),
            Role::Writer => Some("writer"),
            Role::RepoAdmin => Some("repoadmin"),
            Role::OrgAdmin => Some("orgadmin"),
            Role::SystemAdmin => Some("admin"),
        }
    }

    fn password(self) -> String {
        match self.user() {
            Some("admin") => support::ADMIN_PASSWORD.to_string(),
            Some(u) => matrix_password(u),
            None => String::new(),
        }
    }

    /// Password credentials (none for anonymous).
    fn basic(self) -> Cred {
        match self.user() {
            None => Cred::Anonymous,
            Some(u) => Cred::basic(u, &self.password()),
        }
    }
}

fn matrix_password(user: &str) -> String {
    format!("{user}-password-for-the-matrix")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Pull,
    Push,
    Delete,
    Catalog,
    ManageUsers,
    ReadAdminLogs,
}

impl Act {
    fn label(self) -> &'static str {
        match self {
            Act::Pull => "pull",
            Act::Push => "push",
            Act::Delete => "delete",
            Act::Catalog => "list catalog",
            Act::ManageUsers => "manage users",
            Act::ReadAdminLogs => "read admin logs (audit; job logs come with the job system)",
        }
    }

    /// How each action is tried: pull and push also through the token protocol.
    fn vias(self) -> &'static [Via] {
        match self {
            Act::Pull | Act::Push => &[Via::Basic, Via::Token],
            _ => &[Via::Basic],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Public,
    Private,
    /// Registry-wide actions (managing users, reading logs).
    Registry,
}

impl Target {
    fn repo(self) -> &'static str {
        match self {
            Target::Public => "acme/public",
            Target::Private => "acme/private",
            Target::Registry => "",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Target::Public => "public",
            Target::Private => "private",
            Target::Registry => "registry",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// HTTP basic auth with the password on every request (no credentials for anonymous).
    Basic,
    /// `GET /auth/token` with the scope, then `Authorization: Bearer`.
    Token,
}

/// The columns of the expected table, in order.
const COLUMNS: [(Act, Target); 10] = [
    (Act::Pull, Target::Public),
    (Act::Pull, Target::Private),
    (Act::Push, Target::Public),
    (Act::Push, Target::Private),
    (Act::Delete, Target::Public),
    (Act::Delete, Target::Private),
    (Act::Catalog, Target::Public),
    (Act::Catalog, Target::Private),
    (Act::ManageUsers, Target::Registry),
    (Act::ReadAdminLogs, Target::Registry),
];

const Y: bool = true;
const N: bool = false;

/// What each role may do (Y) or not (N), per column of [`COLUMNS`]. For the catalog,
/// Y means the repository is listed. Deleting needs `admin` (the default).
#[rustfmt::skip]
const EXPECTED: [(Role, [bool; 10]); 7] = [
    //                  pull    push    delete  catalog users logs
    //                  pub prv pub prv pub prv pub prv
    (Role::Anonymous,   [Y, N,  N, N,   N, N,   Y, N,   N,    N]),
    (Role::Outsider,    [Y, N,  N, N,   N, N,   Y, N,   N,    N]),
    (Role::Reader,      [Y, Y,  N, N,   N, N,   Y, Y,   N,    N]),
    (Role::Writer,      [Y, Y,  Y, Y,   N, N,   Y, Y,   N,    N]),
    (Role::RepoAdmin,   [Y, Y,  Y, Y,   Y, Y,   Y, Y,   N,    N]),
    (Role::OrgAdmin,    [Y, Y,  Y, Y,   Y, Y,   Y, Y,   N,    N]),
    (Role::SystemAdmin, [Y, Y,  Y, Y,   Y, Y,   Y, Y,   Y,    Y]),
];

/// One tried cell: what was expected, what happened, and whether that is right.
struct CellResult {
    role: Role,
    act: Act,
    target: Target,
    via: Via,
    expected: bool,
    actual: String,
    problem: Option<String>,
}

/// The scope a refused request's challenge must name.
fn scope_for(act: Act, repo: &str) -> String {
    match act {
        Act::Push => format!("repository:{repo}:pull,push"),
        Act::Delete => format!("repository:{repo}:delete"),
        _ => format!("repository:{repo}:pull"),
    }
}

/// Judges a response: allowed → one of `ok`; refused → 401 with a challenge (anonymous
/// callers and bearer tokens: `challenge` says which) or 403 DENIED (signed in with a
/// password).
fn judge(
    r: &Reply,
    expected: bool,
    ok: &[u16],
    role: Role,
    via: Via,
    challenge: &dyn Fn(&Reply) -> Result<(), String>,
) -> Option<String> {
    if expected {
        if ok.contains(&r.status.as_u16()) {
            return None;
        }
        return Some(format!("expected {ok:?}: {}", r.describe()));
    }
    if role == Role::Anonymous || via == Via::Token {
        challenge(r).err()
    } else if r.status == StatusCode::FORBIDDEN && r.error_code().as_deref() == Some("DENIED") {
        None
    } else {
        Some(format!("expected 403 DENIED: {}", r.describe()))
    }
}

/// The credentials a cell uses: the password, or a bearer token for `scope` fetched
/// with the password (anonymously for the anonymous role).
async fn cell_cred(server: &TestServer, role: Role, via: Via, scope: &str) -> Result<Cred, String> {
    match via {
        Via::Basic => Ok(role.basic()),
        Via::Token => {
            let r = token_reply_at(&server.base, &role.basic(), &[scope]).await;
            if r.status != StatusCode::OK {
                return Err(format!(
                    "the token endpoint must grant what it can (200), got {}",
                    r.describe()
                ));
            }
            match r.json()["token"].as_str() {
                Some(t) => Ok(Cred::Bearer(t.to_string())),
                None => Err(format!("no token: {}", r.describe())),
            }
        }
    }
}

fn render_table(results: &[CellResult]) -> String {
    let mut out = String::new();
    let mut header = format!("{:<20}", "role \\ action");
    for (act, target) in COLUMNS {
        let name = match act {
            Act::ReadAdminLogs => "read admin logs*".to_string(),
            _ => format!("{} {}", act.label(), target.short()),
        };
        header.push_str(&format!(" | {name:<19}"));
    }
    out.push_str(&header);
    out.push('\n');
    out.push_str(&"-".repeat(header.len()));
    out.push('\n');
    for (role, _) in EXPECTED {
        let mut line = format!("{:<20}", role.label());
        for (act, target) in COLUMNS {
            let cells: Vec<&CellResult> = results
                .iter()
                .filter(|c| c.role == role && c.act == act && c.target == target)
                .collect();
            let expected = cells.first().map(|c| c.expected);
            let want = match (act, expected) {
                (_, None) => "?",
                (Act::Catalog, Some(true)) => "listed",
                (Act::Catalog, Some(false)) => "hidden",
                (_, Some(true)) => "allow",
                (_, Some(false)) => "deny",
            };
            let got: Vec<String> = cells
                .iter()
                .map(|c| {
                    let mark = if c.problem.is_some() { "✗" } else { "" };
                    // The status alone; the list under the table has the details.
                    let status = c.actual.split(' ').next().unwrap_or_default();
                    format!("{mark}{status}")
                })
                .collect();
            let bad = cells.iter().any(|c| c.problem.is_some());
            let cell = format!("{}{want}: {}", if bad { "!! " } else { "" }, got.join("/"));
            line.push_str(&format!(" | {cell:<19}"));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(
        "(cells: expected: actual via basic auth / via the token protocol; * = GET /api/v0/audit, \
         job logs come with the job system)\n",
    );
    out
}

#[tokio::test]
async fn permission_matrix() {
    let server = TestServer::start_secure();
    let admin_cred = admin();

    // --- set-up, as the system administrator
    for u in ["reader", "writer", "repoadmin", "orgadmin", "outsider"] {
        create_user(&server, u, &matrix_password(u)).await;
    }
    let r = request(
        &server,
        Method::POST,
        "/api/v0/orgs",
        &admin_cred,
        Some(&json!({ "name": "acme" })),
    )
    .await;
    expect(&r, 201, None, "creating the organisation acme");
    let r = request(
        &server,
        Method::PUT,
        "/api/v0/orgs/acme/members/orgadmin",
        &admin_cred,
        Some(&json!({ "admin": true })),
    )
    .await;
    expect(&r, 204, None, "making orgadmin an admin of acme");
    for (repo, visibility) in [("acme/public", "public"), ("acme/private", "private")] {
        push(
            &server,
            &admin_cred,
            repo,
            "base",
            &format!("base of {repo}"),
        )
        .await;
        set_visibility(&server, &admin_cred, repo, visibility).await;
        for (user, level) in [
            ("reader", "read"),
            ("writer", "write"),
            ("repoadmin", "admin"),
        ] {
            grant_user(&server, &admin_cred, repo, user, level).await;
        }
    }

    // --- every cell
    let mut results = Vec::new();
    let challenge_for = |scope: Option<String>| {
        let base = server.base.clone();
        move |r: &Reply| check_bearer_challenge(r, &base, scope.as_deref())
    };
    for (role, row) in EXPECTED {
        // The catalog: one request per role, judged per repository.
        let r = get(&server, "/v2/_catalog", &role.basic()).await;
        let listed: Option<BTreeSet<String>> = (r.status == StatusCode::OK).then(|| {
            r.json()["repositories"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        });
        for (i, (act, target)) in COLUMNS.iter().copied().enumerate() {
            let expected = row[i];
            let repo = target.repo();
            for &via in act.vias() {
                let tag = format!(
                    "{}-{}-{}-{}",
                    act.label().split(' ').next().unwrap(),
                    role.user().unwrap_or("anonymous"),
                    target.short(),
                    match via {
                        Via::Basic => "basic",
                        Via::Token => "token",
                    }
                );
                let scope = scope_for(act, repo);
                let mut cell = CellResult {
                    role,
                    act,
                    target,
                    via,
                    expected,
                    actual: String::new(),
                    problem: None,
                };
                let cred = match act {
                    Act::Pull | Act::Push | Act::Delete => {
                        match cell_cred(&server, role, via, &scope).await {
                            Ok(c) => c,
                            Err(e) => {
                                cell.actual = "token?".into();
                                cell.problem = Some(e);
                                results.push(cell);
                                continue;
                            }
                        }
                    }
                    _ => role.basic(),
                };
                match act {
                    Act::Pull => {
                        let rb = cred
                            .apply(client().get(server.url(&format!("/v2/{repo}/manifests/base"))))
                            .header("accept", OCI_MANIFEST);
                        let r = send(rb).await;
                        cell.actual = r.short();
                        cell.problem =
                            judge(&r, expected, &[200], role, via, &challenge_for(Some(scope)));
                        if cell.problem.is_none() && expected && r.body.is_empty() {
                            cell.problem = Some("a pulled manifest with an empty body".into());
                        }
                    }
                    Act::Push => {
                        let seed = format!("matrix {tag}");
                        match try_push(&server, &cred, repo, &tag, &seed).await {
                            Ok(digest) => {
                                cell.actual = "201".into();
                                if !expected {
                                    cell.problem = Some(format!(
                                        "the push was accepted ({digest}) but must be refused"
                                    ));
                                }
                            }
                            Err(r) => {
                                cell.actual = r.short();
                                cell.problem = judge(
                                    &r,
                                    expected,
                                    &[201, 202],
                                    role,
                                    via,
                                    &challenge_for(Some(scope)),
                                );
                                if cell.problem.is_none() && !expected && r.method != Method::POST {
                                    cell.problem = Some(format!(
                                        "refused only at a later step: {}",
                                        r.describe()
                                    ));
                                }
                            }
                        }
                    }
                    Act::Delete => {
                        // A fresh tag for every attempt, so every cell is independent.
                        push(&server, &admin_cred, repo, &tag, &format!("victim {tag}")).await;
                        let path = format!("/v2/{repo}/manifests/{tag}");
                        let r = request(&server, Method::DELETE, &path, &cred, None).await;
                        cell.actual = r.short();
                        cell.problem =
                            judge(&r, expected, &[202], role, via, &challenge_for(Some(scope)));
                        // And the tag is gone exactly when the delete was allowed.
                        let after = get(&server, &path, &admin_cred).await;
                        let want = if expected { 404 } else { 200 };
                        if cell.problem.is_none() && after.status.as_u16() != want {
                            cell.problem = Some(format!(
                                "after the delete, GET as admin: expected {want}: {}",
                                after.describe()
                            ));
                        }
                    }
                    Act::Catalog => match &listed {
                        Some(set) => {
                            let shown = set.contains(repo);
                            cell.actual = if shown { "listed" } else { "hidden" }.into();
                            if shown != expected {
                                cell.problem = Some(format!(
                                    "GET /v2/_catalog listed {set:?}: {repo} must be {}",
                                    if expected { "listed" } else { "hidden" }
                                ));
                            }
                        }
                        None => {
                            cell.actual = r.short();
                            cell.problem = Some(format!("expected 200: {}", r.describe()));
                        }
                    },
                    Act::ManageUsers => {
                        let name = format!("made-by-{}", role.user().unwrap_or("anonymous"));
                        let body = json!({ "name": name, "password": "a-new-password" });
                        let r = request(&server, Method::POST, "/api/v0/users", &cred, Some(&body))
                            .await;
                        cell.actual = r.short();
                        cell.problem = judge(&r, expected, &[201], role, via, &basic_challenge);
                    }
                    Act::ReadAdminLogs => {
                        let r = get(&server, "/api/v0/audit", &cred).await;
                        cell.actual = r.short();
                        cell.problem = judge(&r, expected, &[200], role, via, &basic_challenge);
                        if cell.problem.is_none() && expected && !r.json().is_array() {
                            cell.problem = Some(format!("not a list: {}", r.describe()));
                        }
                    }
                }
                results.push(cell);
            }
        }
    }

    // Every cell was tried (pull and push twice), then all must be right.
    let expected_cells: usize =
        EXPECTED.len() * COLUMNS.iter().map(|(a, _)| a.vias().len()).sum::<usize>();
    assert_eq!(results.len(), expected_cells, "cells tried");
    let table = render_table(&results);
    let problems: Vec<String> = results
        .iter()
        .filter_map(|c| {
            c.problem.as_ref().map(|p| {
                format!(
                    "- {} / {} / {} / via {:?}: expected {}, {p}",
                    c.role.label(),
                    c.act.label(),
                    c.target.short(),
                    c.via,
                    if c.expected { "allow" } else { "deny" },
                )
            })
        })
        .collect();
    assert!(
        problems.is_empty(),
        "{} of {} cells of the permission matrix are wrong:\n\n{table}\n{}",
        problems.len(),
        results.len(),
        problems.join("\n")
    );
    eprintln!("{table}");
}

/// The management API challenges anonymous callers to sign in with basic auth.
fn basic_challenge(r: &Reply) -> Result<(), String> {
    if r.status != StatusCode::UNAUTHORIZED || r.error_code().as_deref() != Some("UNAUTHORIZED") {
        return Err(format!("expected 401 UNAUTHORIZED: {}", r.describe()));
    }
    match r.header("www-authenticate") {
        Some(c) if c.starts_with("Basic ") => Ok(()),
        other => Err(format!(
            "expected a Basic challenge, got {other:?}: {}",
            r.describe()
        )),
    }
}

// =================================================================================
// 2. anonymous callers

#[tokio::test]
async fn anonymous_push_is_refused_with_401_and_a_challenge() {
    let server = TestServer::start_secure();
    create_user(&server, "alice", "alice-password").await;
    let alice = Cred::basic("alice", "alice-password");
    push(&server, &alice, "alice/app", "v1", "alice's first image").await;
    // Even a public repository takes no anonymous pushes.
    set_visibility(&server, &alice, "alice/app", "public").await;

    // The base endpoint tells clients to sign in, and where.
    let r = get(&server, "/v2/", &Cred::Anonymous).await;
    assert_bearer_challenge(&r, &server, None, "anonymous GET /v2/");

    for repo in ["alice/app", "alice/new", "nobody/app"] {
        let scope = format!("repository:{repo}:pull,push");
        let r = request(
            &server,
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &Cred::Anonymous,
            None,
        )
        .await;
        assert_bearer_challenge(
            &r,
            &server,
            Some(&scope),
            &format!("anonymous POST upload to {repo}"),
        );

        let img = tiny_image("anonymous");
        let r = send(
            client()
                .put(server.url(&format!("/v2/{repo}/manifests/anon")))
                .header("content-type", OCI_MANIFEST)
                .body(img.manifest.clone()),
        )
        .await;
        assert_bearer_challenge(
            &r,
            &server,
            Some(&scope),
            &format!("anonymous PUT manifest to {repo}"),
        );

        // Answering the challenge anonymously yields a token without push: still 401.
        let (_, params) = parse_challenge(r.header("www-authenticate").unwrap());
        let realm = challenge_param(&params, "realm").unwrap().to_string();
        let service = challenge_param(&params, "service").unwrap().to_string();
        let t = send(
            client()
                .get(&realm)
                .query(&[("service", service.as_str()), ("scope", scope.as_str())]),
        )
        .await;
        expect(&t, 200, None, "anonymous token request");
        let token = t.json()["token"].as_str().expect("token").to_string();
        let r = try_push(&server, &Cred::Bearer(token), repo, "anon", "anonymous").await;
        match r {
            Ok(d) => panic!("an anonymous bearer token pushed {d} to {repo}"),
            Err(r) => assert_bearer_challenge(
                &r,
                &server,
                Some(&scope),
                &format!("anonymous bearer push to {repo}"),
            ),
        }
    }

    // Nothing changed.
    let tags = get(&server, "/v2/alice/app/tags/list", &alice).await;
    expect(&tags, 200, None, "tags of alice/app");
    assert_eq!(tags.json()["tags"], json!(["v1"]));
}

#[tokio::test]
async fn anonymous_pull_of_a_public_repository_works() {
    let server = TestServer::start_secure();
    let admin_cred = admin();
    let digest = push(&server, &admin_cred, "library/hello", "v1", "public hello").await;
    set_visibility(&server, &admin_cred, "library/hello", "public").await;
    push(
        &server,
        &admin_cred,
        "library/secret",
        "v1",
        "private secret",
    )
    .await;
    let img = tiny_image("public hello");

    // Directly, without credentials: manifest, blobs, tags.
    let m = send(
        client()
            .get(server.url("/v2/library/hello/manifests/v1"))
            .header("accept", OCI_MANIFEST),
    )
    .await;
    expect(&m, 200, None, "anonymous GET of a public manifest");
    assert_eq!(m.header("docker-content-digest"), Some(digest.as_str()));
    assert!(
        m.body.as_ref() == img.manifest,
        "the manifest served differs"
    );
    for blob in [&img.config, &img.layer] {
        let d = support::sha256(blob);
        let b = get(
            &server,
            &format!("/v2/library/hello/blobs/{d}"),
            &Cred::Anonymous,
        )
        .await;
        expect(&b, 200, None, "anonymous GET of a public blob");
        assert!(b.body.as_ref() == blob.as_slice(), "blob {d} differs");
    }
    let tags = get(&server, "/v2/library/hello/tags/list", &Cred::Anonymous).await;
    expect(
        &tags,
        200,
        None,
        "anonymous tags/list of a public repository",
    );
    assert_eq!(
        tags.json(),
        json!({ "name": "library/hello", "tags": ["v1"] })
    );
    let catalog = get(&server, "/v2/_catalog", &Cred::Anonymous).await;
    expect(&catalog, 200, None, "anonymous catalog");
    assert_eq!(
        catalog.json()["repositories"],
        json!(["library/hello"]),
        "only public repositories"
    );

    // A private one challenges for exactly what is missing.
    let r = get(&server, "/v2/library/secret/manifests/v1", &Cred::Anonymous).await;
    assert_bearer_challenge(
        &r,
        &server,
        Some("repository:library/secret:pull"),
        "anonymous GET of a private manifest",
    );

    // Through the token protocol, as Docker does: the challenge of /v2/, then an
    // anonymous token for the scope, then the pull with it.
    let base = get(&server, "/v2/", &Cred::Anonymous).await;
    let (scheme, params) = parse_challenge(base.header("www-authenticate").expect("challenge"));
    assert_eq!(scheme, "Bearer");
    let realm = challenge_param(&params, "realm")
        .expect("realm")
        .to_string();
    let service = challenge_param(&params, "service")
        .expect("service")
        .to_string();
    assert_eq!(realm, server.url("/auth/token"));
    let t = send(client().get(&realm).query(&[
        ("service", service.as_str()),
        ("scope", "repository:library/hello:pull"),
    ]))
    .await;
    expect(&t, 200, None, "anonymous GET /auth/token");
    let body = t.json();
    let token = body["token"].as_str().expect("token").to_string();
    assert!(
        body["expires_in"].as_i64().unwrap_or(0) > 0,
        "expires_in: {body}"
    );
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token for anonymous: {body}"
    );
    let m = send(
        client()
            .get(server.url("/v2/library/hello/manifests/v1"))
            .header("accept", OCI_MANIFEST)
            .bearer_auth(&token),
    )
    .await;
    expect(&m, 200, None, "GET manifest with an anonymous bearer token");
    assert_eq!(m.header("docker-content-digest"), Some(digest.as_str()));

    // The same anonymous token gets nothing of the private repository.
    let secret_token = bearer(
        &server,
        &Cred::Anonymous,
        &[
            "repository:library/secret:pull",
            "repository:library/hello:pull",
        ],
    )
    .await;
    let r = get(
        &server,
        "/v2/library/secret/manifests/v1",
        &Cred::Bearer(secret_token.clone()),
    )
    .await;
    assert_bearer_challenge(
        &r,
        &server,
        Some("repository:library/secret:pull"),
        "anonymous bearer GET of a private manifest",
    );
    let ok = get(
        &server,
        "/v2/library/hello/tags/list",
        &Cred::Bearer(secret_token),
    )
    .await;
    expect(&ok, 200, None, "the same token on the public repository");
}

// =================================================================================
// 3. the Docker CLI

fn docker_cmd(config: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("docker");
    // Never the host's ~/.docker/config.json.
    cmd.env("DOCKER_CONFIG", config).args(args);
    cmd
}

async fn docker(config: &Path, args: &[&str]) -> String {
    run_ok(docker_cmd(config, args), None, DOCKER_TIMEOUT).await
}

async fn docker_daemon_ready(config: &Path) -> bool {
    let out = run(
        docker_cmd(config, &["version", "--format", "{{.Server.Version}}"]),
        None,
        Duration::from_secs(60),
    )
    .await;
    if out.status.success() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("a running Docker daemon is required under CI=true");
    }
    eprintln!("SKIPPED: no running Docker daemon");
    false
}

async fn docker_login(config: &Path, addr: &str, user: &str, secret: &str) -> String {
    run_ok(
        docker_cmd(config, &["login", addr, "-u", user, "--password-stdin"]),
        Some(&format!("{secret}\n")),
        DOCKER_TIMEOUT,
    )
    .await
}

#[tokio::test]
async fn docker_login_push_pull_with_password_and_with_access_token() {
    if !support::require_tool("docker") {
        return;
    }
    let config_dir = tempfile::tempdir().expect("temp dir");
    let config = config_dir.path();
    if !docker_daemon_ready(config).await {
        return;
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("/bin/busybox (busybox-static) is required under CI=true");
        }
        eprintln!("SKIPPED: /bin/busybox is missing");
        return;
    }
    let server = TestServer::start_secure();
    let alice_pw = "alice-docker-password";
    create_user(&server, "alice", alice_pw).await;
    create_user(&server, "bob", "bob-docker-password").await;
    let alice = Cred::basic("alice", alice_pw);

    let id = oci_layout::Rng::seeded().hex(12);
    let local = format!("wharf-sec-build-{id}:latest");
    let v1 = format!("{}/alice/app:v1", server.addr);
    let v2 = format!("{}/alice/app:v2", server.addr);
    let bobs = format!("{}/bob/app:v1", server.addr);
    let containers = [format!("wharf-sec-{id}-1"), format!("wharf-sec-{id}-2")];
    let _cleanup = DockerCleanup {
        containers: containers.to_vec(),
        images: vec![local.clone(), v1.clone(), v2.clone(), bobs.clone()],
    };
    let message = format!("hello from a signed-in push {id}");

    let ctx = tempfile::tempdir().expect("temp dir");
    std::fs::copy(busybox, ctx.path().join("busybox")).expect("copy busybox");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM scratch\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\", \"echo\", \"{message}\"]\n"),
    )
    .unwrap();
    let mut build = docker_cmd(config, &["build", "--no-cache", "--force-rm", "-t", &local]);
    build.arg(ctx.path()).env("DOCKER_BUILDKIT", "0");
    run_ok(build, None, DOCKER_TIMEOUT).await;
    for t in [&v1, &v2, &bobs] {
        docker(config, &["tag", &local, t]).await;
    }

    // Without signing in, the push is refused.
    let out = run_fails(docker_cmd(config, &["push", &v1]), None, DOCKER_TIMEOUT).await;
    assert!(
        out.to_lowercase().contains("unauthorized") || out.to_lowercase().contains("denied"),
        "docker push without login failed, but not for want of credentials:\n{out}"
    );

    // --- with the password
    let out = docker_login(config, &server.addr, "alice", alice_pw).await;
    assert!(out.contains("Login Succeeded"), "docker login:\n{out}");
    let stored =
        std::fs::read_to_string(config.join("config.json")).expect("config.json in DOCKER_CONFIG");
    assert!(
        stored.contains(&server.addr),
        "docker login stored no credentials for {} in DOCKER_CONFIG: {stored}",
        server.addr
    );
    assert!(
        !stored.contains(alice_pw),
        "the password is stored in clear: {stored}"
    );

    let check_round_trip = |image: String, container: String| {
        let config = config.to_path_buf();
        let message = message.clone();
        async move {
            let out = docker(&config, &["push", &image]).await;
            assert!(
                out.contains("digest: sha256:"),
                "docker push {image}:\n{out}"
            );
            docker(&config, &["rmi", &image]).await;
            let out = docker(&config, &["pull", &image]).await;
            assert!(out.contains("sha256:"), "docker pull {image}:\n{out}");
            let out = docker(
                &config,
                &[
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "--name",
                    &container,
                    &image,
                ],
            )
            .await;
            assert_eq!(out.trim(), message, "output of the pulled {image}");
        }
    };
    check_round_trip(v1.clone(), containers[0].clone()).await;

    // Someone else's namespace: refused, saying so.
    // (Checked at the end, so that the access-token half runs whatever happens here.)
    let out = run_fails(docker_cmd(config, &["push", &bobs]), None, DOCKER_TIMEOUT).await;
    let r = get(&server, "/v2/bob/app/tags/list", &admin()).await;
    assert_ne!(
        r.status,
        StatusCode::OK,
        "bob/app exists after a refused push: {}",
        r.describe()
    );
    let denial_problem = (!out.to_lowercase().contains("denied")).then(|| {
        format!("docker push to bob/app as alice must fail with an access-denied message; docker said:\n{out}")
    });
    // What Docker reads: the registry's answer to alice's bearer token without push on
    // bob/app. RFC 6750 §3.1 marks it `error="insufficient_scope"`, which Docker reports
    // as `denied: requested access to the resource is denied`.
    let t = bearer(&server, &alice, &["repository:bob/app:pull,push"]).await;
    let r = request(
        &server,
        Method::POST,
        "/v2/bob/app/blobs/uploads/",
        &Cred::Bearer(t),
        None,
    )
    .await;
    let says_denied = r.error_code().as_deref() == Some("DENIED")
        || r.header("www-authenticate")
            .map(parse_challenge)
            .is_some_and(|(_, p)| challenge_param(&p, "error") == Some("insufficient_scope"));
    let denial_problem = denial_problem.map(|p| {
        format!(
            "{p}\nThe registry answered alice's bearer token without push on bob/app with:\n  {}\n{}",
            r.describe(),
            if says_denied {
                ""
            } else {
                "Neither error=\"insufficient_scope\" in the challenge (RFC 6750 §3.1) nor the code DENIED in the body: \
                 Docker can only report it as `unauthorized: authentication required`."
            }
        )
    });

    // --- with an access token instead of the password
    let out = docker(config, &["logout", &server.addr]).await;
    assert!(
        out.contains("Removing login credentials"),
        "docker logout:\n{out}"
    );
    let (_, token, _) = create_token(&server, &alice, "alice", "docker on the laptop", None).await;
    let out = docker_login(config, &server.addr, "alice", &token).await;
    assert!(
        out.contains("Login Succeeded"),
        "docker login with a token:\n{out}"
    );
    check_round_trip(v2.clone(), containers[1].clone()).await;

    let tags = get(&server, "/v2/alice/app/tags/list", &alice).await;
    expect(&tags, 200, None, "tags of alice/app");
    assert_eq!(tags.json()["tags"], json!(["v1", "v2"]));
    let _ = docker(config, &["logout", &server.addr]).await;
    if let Some(p) = denial_problem {
        panic!("{p}");
    }
}

// =================================================================================
// 4. skopeo

fn skopeo_cmd(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("skopeo");
    // The host's signature policy is not what these tests are about.
    cmd.arg("--insecure-policy").args(args);
    cmd
}

#[tokio::test]
async fn skopeo_with_creds() {
    if !support::require_tool("skopeo") {
        return;
    }
    let server = TestServer::start_secure();
    let alice_pw = "alice-skopeo-password";
    create_user(&server, "alice", alice_pw).await;
    let alice = Cred::basic("alice", alice_pw);
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut rng = oci_layout::Rng::seeded();
    let image = oci_layout::random_image(&mut rng, "amd64", &[200_000, 3_000]);
    let src = tmp.path().join("src");
    oci_layout::write_layout(&src, &image.content(), &[("v1", &image.manifest)]);
    let from = format!("oci:{}:v1", src.display());
    let remote = format!("docker://{}/alice/app:v1", server.addr);

    // The right password pushes.
    let creds = format!("alice:{alice_pw}");
    let cmd = skopeo_cmd(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &from,
        &remote,
    ]);
    run_ok(cmd, None, SKOPEO_TIMEOUT).await;
    let m = send(
        alice.apply(
            client()
                .get(server.url("/v2/alice/app/manifests/v1"))
                .header("accept", OCI_MANIFEST),
        ),
    )
    .await;
    expect(&m, 200, None, "the manifest skopeo pushed");
    assert_eq!(
        m.header("docker-content-digest"),
        Some(image.manifest.digest.as_str())
    );

    // A wrong one does not.
    let cmd = skopeo_cmd(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:not-the-password",
        &from,
        &format!("docker://{}/alice/app:wrong", server.addr),
    ]);
    let out = run_fails(cmd, None, SKOPEO_TIMEOUT).await;
    assert!(
        out.to_lowercase().contains("unauthorized") || out.contains("401"),
        "skopeo with a wrong password failed, but not as unauthorized:\n{out}"
    );
    let r = get(&server, "/v2/alice/app/manifests/wrong", &alice).await;
    expect(
        &r,
        404,
        Some("MANIFEST_UNKNOWN"),
        "the tag a refused copy named",
    );

    // Without credentials the private repository cannot be read.
    let back = tmp.path().join("back");
    let cmd = skopeo_cmd(&[
        "copy",
        "--src-tls-verify=false",
        &remote,
        &format!("oci:{}:v1", back.display()),
    ]);
    run_fails(cmd, None, SKOPEO_TIMEOUT).await;

    // An access token copies it back, byte for byte.
    let (_, token, _) = create_token(&server, &alice, "alice", "skopeo", None).await;
    let creds = format!("alice:{token}");
    let cmd = skopeo_cmd(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &remote,
        &format!("oci:{}:v1", back.display()),
    ]);
    run_ok(cmd, None, SKOPEO_TIMEOUT).await;
    let layout = oci_layout::Layout::open(&back);
    assert_eq!(
        layout.descriptor("v1")["digest"],
        image.manifest.digest.as_str()
    );
    for b in image.content() {
        assert!(
            layout.blob(&b.digest) == b.bytes,
            "blob {} differs",
            b.digest
        );
    }
}

// =================================================================================
// 5. curl-style use of the management API

#[tokio::test]
async fn curl_style_api_access_with_user_and_token() {
    let server = TestServer::start_secure();
    let alice_pw = "alice-curl-password";
    create_user(&server, "alice", alice_pw).await;
    let alice = Cred::basic("alice", alice_pw);
    push(&server, &alice, "alice/app", "v1", "curl").await;

    // `curl -u alice:wharf_…`
    let (id, token, view) = create_token(&server, &alice, "alice", "ci", None).await;
    assert!(view["revoked_at_ms"].is_null(), "{view}");
    let with_token = Cred::basic("alice", &token);
    let me = get(&server, "/api/v0/me", &with_token).await;
    expect(&me, 200, None, "GET /api/v0/me with an access token");
    assert_eq!(me.json()["name"], "alice");
    assert_eq!(me.json()["admin"], false);
    // The secret is shown once: listing shows no secrets.
    let list = get(&server, "/api/v0/users/alice/tokens", &alice).await;
    expect(&list, 200, None, "listing alice's tokens");
    assert!(
        !list.text().contains(&token),
        "a token list shows a secret: {}",
        list.text()
    );
    // `curl -H "Authorization: Bearer wharf_…"`, as other registries' APIs take tokens:
    // the same caller as basic auth with the token, on the API and on /v2.
    let token_as_bearer = Cred::Bearer(token.clone());
    let me = get(&server, "/api/v0/me", &token_as_bearer).await;
    expect(
        &me,
        200,
        None,
        "GET /api/v0/me with the access token as Bearer",
    );
    assert_eq!(me.json()["name"], "alice");
    let tags = get(&server, "/v2/alice/app/tags/list", &token_as_bearer).await;
    expect(
        &tags,
        200,
        None,
        "GET tags/list with the access token as Bearer",
    );
    let forged = Cred::Bearer(format!("wharf_{}", "0".repeat(64)));
    let r = get(&server, "/api/v0/me", &forged).await;
    expect(
        &r,
        401,
        Some("UNAUTHORIZED"),
        "an unknown access token as Bearer",
    );
    // Someone else's name with alice's token: refused.
    let r = get(&server, "/api/v0/me", &Cred::basic("admin", &token)).await;
    expect(
        &r,
        401,
        Some("UNAUTHORIZED"),
        "alice's token under the name admin",
    );

    // Revoked: the very next request is refused.
    revoke_token(&server, &alice, "alice", id).await;
    let r = get(&server, "/api/v0/me", &with_token).await;
    expect(
        &r,
        401,
        Some("UNAUTHORIZED"),
        "GET /api/v0/me with a revoked token",
    );
    let r = get(&server, "/v2/alice/app/tags/list", &with_token).await;
    expect(
        &r,
        401,
        Some("UNAUTHORIZED"),
        "GET tags/list with a revoked token",
    );
    let r = get(&server, "/api/v0/me", &token_as_bearer).await;
    expect(
        &r,
        401,
        Some("UNAUTHORIZED"),
        "a revoked access token as Bearer",
    );

    // A token that expires after 1 s: accepted, then refused once expired.
    let (_, short, view) = create_token(&server, &alice, "alice", "short-lived", Some(1)).await;
    let expires_at = view["expires_at_ms"].as_i64().expect("expires_at_ms");
    let short_cred = Cred::basic("alice", &short);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut accepted = 0;
    let (sent, answered) = loop {
        let sent_at = now_ms();
        let r = get(&server, "/api/v0/me", &short_cred).await;
        match r.status.as_u16() {
            200 => accepted += 1,
            401 => {
                expect(&r, 401, Some("UNAUTHORIZED"), "an expired token");
                break (sent_at, now_ms());
            }
            _ => panic!("a short-lived token: {}", r.describe()),
        }
        assert!(
            Instant::now() < deadline,
            "a token with a 1 s lifetime was still accepted after 5 s ({accepted} requests)"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(
        answered >= expires_at,
        "the token was refused before it expired (refused by {answered}, expires {expires_at}, sent {sent})"
    );
    assert!(
        accepted > 0 || sent >= expires_at,
        "the short-lived token was never accepted although the first request was sent before it expired"
    );
    let r = get(&server, "/api/v0/me", &short_cred).await;
    expect(&r, 401, Some("UNAUTHORIZED"), "an expired token, again");

    // A bearer token obtained with an access token dies with it.
    let (id2, token2, _) = create_token(&server, &alice, "alice", "bearer source", None).await;
    let via_token = bearer(
        &server,
        &Cred::basic("alice", &token2),
        &["repository:alice/app:pull"],
    )
    .await;
    let via_password = bearer(&server, &alice, &["repository:alice/app:pull"]).await;
    for (b, what) in [
        (&via_token, "from the token"),
        (&via_password, "from the password"),
    ] {
        let r = get(&server, "/v2/alice/app/tags/list", &Cred::Bearer(b.clone())).await;
        expect(&r, 200, None, &format!("bearer {what}"));
    }
    let me = get(&server, "/api/v0/me", &Cred::Bearer(via_token.clone())).await;
    expect(&me, 200, None, "GET /api/v0/me with a bearer token");
    revoke_token(&server, &alice, "alice", id2).await;
    let r = get(
        &server,
        "/v2/alice/app/tags/list",
        &Cred::Bearer(via_token.clone()),
    )
    .await;
    expect(
        &r,
        401,
        Some("UNAUTHORIZED"),
        "a bearer token whose access token was revoked",
    );
    let r = get(&server, "/api/v0/me", &Cred::Bearer(via_token)).await;
    expect(
        &r,
        401,
        Some("UNAUTHORIZED"),
        "GET /api/v0/me with a bearer token whose access token was revoked",
    );
    let r = get(
        &server,
        "/v2/alice/app/tags/list",
        &Cred::Bearer(via_password.clone()),
    )
    .await;
    expect(
        &r,
        200,
        None,
        "a bearer token from the password is not affected by revoking a token",
    );

    // A disabled user: password, tokens and bearer tokens refused at once.
    let (_, token3, _) = create_token(&server, &alice, "alice", "before disabling", None).await;
    let via_token3 = bearer(
        &server,
        &Cred::basic("alice", &token3),
        &["repository:alice/app:pull"],
    )
    .await;
    set_disabled(&server, "alice", true).await;
    let r = get(&server, "/api/v0/me", &alice).await;
    expect(&r, 401, Some("UNAUTHORIZED"), "a disabled user's password");
    let r = get(&server, "/api/v0/me", &Cred::basic("alice", &token3)).await;
    expect(
        &r,
        401,
        Some("UNAUTHORIZED"),
        "a disabled user's access token",
    );
    for (b, what) in [
        (&via_password, "from the password"),
        (&via_token3, "from a token"),
    ] {
        let r = get(&server, "/v2/alice/app/tags/list", &Cred::Bearer(b.clone())).await;
        expect(
            &r,
            401,
            Some("UNAUTHORIZED"),
            &format!("a disabled user's bearer token {what}"),
        );
    }
    let r = token_reply_at(&server.base, &alice, &["repository:alice/app:pull"]).await;
    expect(
        &r,
        401,
        Some("UNAUTHORIZED"),
        "/auth/token for a disabled user",
    );
    // Enabled again: the password works again (the tokens were never revoked).
    set_disabled(&server, "alice", false).await;
    let r = get(&server, "/api/v0/me", &alice).await;
    expect(&r, 200, None, "an enabled user's password");
}

// =================================================================================
// 6. replicas share signing keys

#[tokio::test]
async fn tokens_issued_by_one_process_are_accepted_by_another() {
    let a = TestServer::start_secure();
    let mut cmd = support::serve_command();
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(&a.data_dir);
    let b = TestServer::launch(cmd, &a.data_dir);
    assert_ne!(a.addr, b.addr);

    let alice_pw = "alice-replica-password";
    create_user(&a, "alice", alice_pw).await;
    let alice = Cred::basic("alice", alice_pw);
    push(&a, &alice, "alice/app", "v1", "replicas").await;

    let scope = ["repository:alice/app:pull"];
    let from_a = bearer(&a, &alice, &scope).await;
    let r = get(&b, "/v2/alice/app/tags/list", &Cred::Bearer(from_a.clone())).await;
    expect(&r, 200, None, "server B with a bearer token from server A");
    assert_eq!(r.json(), json!({ "name": "alice/app", "tags": ["v1"] }));
    let from_b = bearer(&b, &alice, &scope).await;
    let r = get(&a, "/v2/alice/app/tags/list", &Cred::Bearer(from_b)).await;
    expect(&r, 200, None, "server A with a bearer token from server B");

    // Its scope still binds it on B.
    let r = try_push_at(
        &b.base,
        &Cred::Bearer(from_a),
        "alice/app",
        "v2",
        "no push scope",
    )
    .await;
    match r {
        Ok(d) => panic!("a pull-only token from A pushed {d} on B"),
        Err(r) => {
            if let Err(e) =
                check_bearer_challenge(&r, &b.base, Some("repository:alice/app:pull,push"))
            {
                panic!("a pull-only token from A pushing on B: {e}");
            }
        }
    }

    // Revoking on A takes effect on B at once.
    let (id, token, _) = create_token(&a, &alice, "alice", "replicated", None).await;
    let via_token = bearer(&a, &Cred::basic("alice", &token), &scope).await;
    let r = get(
        &b,
        "/v2/alice/app/tags/list",
        &Cred::Bearer(via_token.clone()),
    )
    .await;
    expect(&r, 200, None, "B with a bearer token from A's access token");
    revoke_token(&a, &alice, "alice", id).await;
    let r = get(&b, "/v2/alice/app/tags/list", &Cred::Bearer(via_token)).await;
    expect(
        &r,
        401,
        Some("UNAUTHORIZED"),
        "B with a bearer token whose access token A revoked",
    );
    let r = get(&b, "/api/v0/me", &Cred::basic("alice", &token)).await;
    expect(
        &r,
        401,
        Some("UNAUTHORIZED"),
        "B with an access token A revoked",
    );
}

// =================================================================================
// 7. failed logins

#[tokio::test]
async fn failed_logins_are_rate_limited() {
    let server = TestServer::start_secure();
    create_user(&server, "alice", "alice-right-password").await;
    create_user(&server, "bob", "bob-right-password").await;

    for i in 1..=10 {
        let r = get(
            &server,
            "/api/v0/me",
            &Cred::basic("alice", &format!("wrong-{i}")),
        )
        .await;
        expect(
            &r,
            401,
            Some("UNAUTHORIZED"),
            &format!("wrong password #{i}"),
        );
    }
    let alice = Cred::basic("alice", "alice-right-password");
    let check_limited = |r: &Reply, what: &str| {
        expect(r, 429, Some("TOOMANYREQUESTS"), what);
        let after: u64 = r
            .header("retry-after")
            .unwrap_or_else(|| panic!("{what}: 429 without Retry-After: {}", r.describe()))
            .parse()
            .unwrap_or_else(|_| panic!("{what}: Retry-After is not seconds: {}", r.describe()));
        assert!((1..=300).contains(&after), "{what}: Retry-After {after}");
    };
    let r = get(&server, "/api/v0/me", &alice).await;
    check_limited(&r, "the right password after 10 wrong ones");
    // Everywhere credentials are checked.
    let r = get(&server, "/v2/", &alice).await;
    check_limited(&r, "GET /v2/ after 10 wrong passwords");
    let r = token_reply_at(&server.base, &alice, &["repository:alice/app:pull"]).await;
    check_limited(&r, "/auth/token after 10 wrong passwords");
    let r = send(client().post(server.url("/auth/token")).form(&[
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "alice-right-password"),
        ("service", "wharf"),
    ]))
    .await;
    check_limited(
        &r,
        "POST /auth/token (OAuth2 password grant) after 10 wrong passwords",
    );

    // Another user from the same address is fine (the per-address limit is 50).
    let r = get(
        &server,
        "/api/v0/me",
        &Cred::basic("bob", "bob-right-password"),
    )
    .await;
    expect(&r, 200, None, "bob from the same address");
    assert_eq!(r.json()["name"], "bob");
}

// =================================================================================
// 8. the generated initial password

#[tokio::test]
async fn initial_admin_password_is_generated_and_printed_once() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("data");
    let serve = || {
        let mut cmd = support::serve_command();
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            // As much logging as there is, to show none of it holds the password.
            .env("WHARF_LOG_LEVEL", "debug")
            .env_remove("WHARF_ADMIN_PASSWORD");
        ServeProcess::spawn(cmd)
    };

    let first = serve();
    let line = first
        .before_listening
        .iter()
        .find(|l| l.contains("Password:"))
        .unwrap_or_else(|| {
            panic!(
                "no Password: line before `listening on` on the first start: {:?}",
                first.before_listening
            )
        })
        .clone();
    assert!(line.contains("User: admin"), "{line}");
    let password = line
        .split("Password:")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .expect("a password after Password:")
        .to_string();
    assert!(
        password.len() >= 16,
        "a generated password of {} characters",
        password.len()
    );

    let admin_cred = Cred::basic("admin", &password);
    let me = request_at(&first.base, Method::GET, "/api/v0/me", &admin_cred, None).await;
    expect(&me, 200, None, "signing in with the generated password");
    assert_eq!(me.json()["name"], "admin");
    assert_eq!(me.json()["admin"], true);
    let r = request_at(
        &first.base,
        Method::POST,
        "/api/v0/users",
        &admin_cred,
        Some(&json!({ "name": "someone", "password": "someone-password" })),
    )
    .await;
    expect(&r, 201, None, "the generated admin creates a user");
    let wrong = request_at(
        &first.base,
        Method::GET,
        "/api/v0/me",
        &Cred::basic("admin", "admin-password-for-tests"),
        None,
    )
    .await;
    expect(
        &wrong,
        401,
        Some("UNAUTHORIZED"),
        "another password for admin",
    );
    let mut stderr = first.stop();

    // A restart over the same data: no new password, none printed, the old one works.
    let second = serve();
    assert!(
        !second
            .before_listening
            .iter()
            .any(|l| l.contains("Password") || l.contains(&password)),
        "the restart printed a password again: {:?}",
        second.before_listening
    );
    let me = request_at(&second.base, Method::GET, "/api/v0/me", &admin_cred, None).await;
    expect(&me, 200, None, "the generated password after a restart");
    stderr.extend(second.stop());

    let leaks: Vec<&String> = stderr.iter().filter(|l| l.contains(&password)).collect();
    assert!(leaks.is_empty(), "the password is in the log: {leaks:?}");
    assert!(
        !stderr.is_empty(),
        "no log lines at debug level: the check above proves nothing"
    );
}

// =================================================================================
// 9. `wharf user`

async fn wharf_user(data_dir: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut cmd = wharf_cmd(&["user"]);
    cmd.args(args).arg("--data-dir").arg(data_dir);
    run(cmd, stdin, CLI_TIMEOUT).await
}

async fn wharf_user_ok(data_dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = wharf_user(data_dir, args, stdin).await;
    assert!(
        out.status.success(),
        "wharf user {args:?} failed\n{}",
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn wharf_user_fails(data_dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = wharf_user(data_dir, args, stdin).await;
    assert!(
        !out.status.success(),
        "wharf user {args:?} succeeded but must fail\n{}",
        output_text(&out)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit code of wharf user {args:?}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn listed_user<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .expect("a JSON list")
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in {list}"))
}

#[tokio::test]
async fn wharf_user_cli() {
    let server = TestServer::start_secure();
    let d = server.data_dir.clone();
    let me = |pw: &str| {
        let cred = Cred::basic("bob", pw);
        let server = &server;
        async move { get(server, "/api/v0/me", &cred).await }
    };

    let out = wharf_user_ok(
        &d,
        &["create", "bob", "--password-stdin"],
        Some("bob-first-password\n"),
    )
    .await;
    assert!(out.contains("created user bob"), "{out}");
    let err = wharf_user_fails(
        &d,
        &["create", "bob", "--password-stdin"],
        Some("bob-other-password\n"),
    )
    .await;
    assert!(err.starts_with("wharf: error:"), "{err}");
    let err = wharf_user_fails(
        &d,
        &["create", "carol", "--password-stdin"],
        Some("short\n"),
    )
    .await;
    assert!(err.contains("at least 8"), "{err}");
    let err = wharf_user_fails(
        &d,
        &["create", "Not/A/Name", "--password-stdin"],
        Some("long-enough-password\n"),
    )
    .await;
    assert!(err.contains("not a valid user name"), "{err}");

    let list: Value = serde_json::from_str(&wharf_user_ok(&d, &["list", "--json"], None).await)
        .expect("JSON list");
    assert_eq!(listed_user(&list, "admin")["admin"], true);
    let bob = listed_user(&list, "bob");
    assert_eq!(bob["admin"], false);
    assert_eq!(bob["disabled"], false);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|u| u["name"] != "carol"),
        "{list}"
    );

    // The running server sees the new user at once.
    let r = me("bob-first-password").await;
    expect(
        &r,
        200,
        None,
        "bob signs in with the password set by the CLI",
    );
    assert_eq!(r.json()["name"], "bob");
    let (_, bob_token, _) = create_token(
        &server,
        &Cred::basic("bob", "bob-first-password"),
        "bob",
        "cli test",
        None,
    )
    .await;

    let out = wharf_user_ok(
        &d,
        &["set-password", "bob", "--password-stdin"],
        Some("bob-second-password\n"),
    )
    .await;
    assert!(out.contains("password of bob changed"), "{out}");
    expect(
        &me("bob-first-password").await,
        401,
        Some("UNAUTHORIZED"),
        "bob's old password",
    );
    expect(
        &me("bob-second-password").await,
        200,
        None,
        "bob's new password",
    );

    let out = wharf_user_ok(&d, &["disable", "bob"], None).await;
    assert!(out.contains("bob is disabled"), "{out}");
    expect(
        &me("bob-second-password").await,
        401,
        Some("UNAUTHORIZED"),
        "a disabled bob's password",
    );
    let r = get(&server, "/api/v0/me", &Cred::basic("bob", &bob_token)).await;
    expect(
        &r,
        401,
        Some("UNAUTHORIZED"),
        "a disabled bob's access token",
    );
    let list: Value = serde_json::from_str(&wharf_user_ok(&d, &["list", "--json"], None).await)
        .expect("JSON list");
    assert_eq!(listed_user(&list, "bob")["disabled"], true);

    let out = wharf_user_ok(&d, &["enable", "bob"], None).await;
    assert!(out.contains("bob is enabled"), "{out}");
    expect(
        &me("bob-second-password").await,
        200,
        None,
        "an enabled bob's password",
    );
    let r = get(&server, "/api/v0/me", &Cred::basic("bob", &bob_token)).await;
    expect(&r, 200, None, "an enabled bob's access token");

    for args in [
        &["disable", "nobody"][..],
        &["enable", "nobody"],
        &["set-password", "nobody", "--password-stdin"],
    ] {
        let err = wharf_user_fails(&d, args, Some("long-enough-password\n")).await;
        assert!(err.contains("no user nobody"), "wharf user {args:?}: {err}");
    }
    let empty = tempfile::tempdir().expect("temp dir");
    let err = wharf_user_fails(empty.path(), &["list"], None).await;
    assert!(err.contains("no registry data"), "{err}");

    // The CLI's changes are audited too.
    let audit = get(&server, "/api/v0/audit", &admin()).await;
    expect(&audit, 200, None, "the audit log");
    let entries = audit.json();
    let cli: Vec<&Value> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "cli" && e["target"] == "bob")
        .collect();
    assert_eq!(
        cli.len(),
        4,
        "create, set-password, disable, enable by the CLI: {entries}"
    );
}

// =================================================================================
// 10. the audit log

#[tokio::test]
async fn audit_log_records_administrative_actions() {
    let server = TestServer::start_secure();
    let admin_cred = admin();
    let carol_pw = "carol-audit-password";
    create_user(&server, "carol", carol_pw).await;
    let (token_id, token, _) =
        create_token(&server, &admin_cred, "carol", "deploy key", None).await;
    grant_user(&server, &admin_cred, "team/app", "carol", "write").await;

    let r = get(&server, "/api/v0/audit", &admin_cred).await;
    expect(&r, 200, None, "GET /api/v0/audit as admin");
    let entries = r.json();
    let list = entries
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {entries}"));
    let find = |action: &str, target: &str| -> &Value {
        list.iter()
            .find(|e| e["action"] == action && e["target"] == target)
            .unwrap_or_else(|| panic!("no {action} of {target} in the audit log: {entries}"))
    };
    let created = find("user.create", "carol");
    assert_eq!(created["actor"], "admin");
    let tok = find("token.create", "carol");
    assert_eq!(tok["actor"], "admin");
    let details = tok["details"].as_str().unwrap_or_default();
    assert!(
        details.contains("deploy key") && details.contains(&format!("id={token_id}")),
        "token.create details: {tok}"
    );
    let grant = find("repository.grant", "team/app");
    assert_eq!(grant["actor"], "admin");
    let details = grant["details"].as_str().unwrap_or_default();
    assert!(
        details.contains("carol") && details.contains("write"),
        "grant details: {grant}"
    );
    let initial = find("user.create", "admin");
    assert_eq!(
        initial["actor"], "wharf",
        "the initial administrator: {initial}"
    );
    // Newest first, each with a time.
    let ids: Vec<i64> = list.iter().map(|e| e["id"].as_i64().expect("id")).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {ids:?}"
    );
    assert!(
        grant["id"].as_i64() > tok["id"].as_i64() && tok["id"].as_i64() > created["id"].as_i64()
    );
    assert!(list
        .iter()
        .all(|e| e["at_ms"].as_i64().is_some_and(|t| t > 0)));
    // Secrets never reach the log.
    let text = r.text();
    assert!(!text.contains(&token), "the audit log holds a token secret");
    assert!(!text.contains(carol_pw), "the audit log holds a password");
    // `limit` pages it.
    let r = get(&server, "/api/v0/audit?limit=1", &admin_cred).await;
    expect(&r, 200, None, "GET /api/v0/audit?limit=1");
    assert_eq!(r.json().as_array().map(Vec::len), Some(1));
    assert_eq!(r.json()[0]["action"], "repository.grant");

    // Not for anyone else.
    for cred in [Cred::basic("carol", carol_pw), Cred::basic("carol", &token)] {
        let r = get(&server, "/api/v0/audit", &cred).await;
        expect(&r, 403, Some("DENIED"), "GET /api/v0/audit as carol");
    }
    let r = get(&server, "/api/v0/audit", &Cred::Anonymous).await;
    expect(
        &r,
        401,
        Some("UNAUTHORIZED"),
        "GET /api/v0/audit anonymously",
    );
}
