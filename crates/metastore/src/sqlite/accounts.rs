//! [`AccountStore`] on SQLite.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::SqliteMetaStore;
use crate::accounts::*;
use crate::{now_ms, MetaError, Result};

fn user_from_row(r: &Row) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        is_admin: r.get(2)?,
        disabled: r.get(3)?,
        created_at_ms: r.get(4)?,
    })
}

const USER_COLS: &str = "u.id, u.name, u.is_admin, u.disabled, u.created_at";
const TOKEN_COLS: &str =
    "t.id, t.user_id, t.label, t.created_at, t.last_used_at, t.expires_at, t.revoked_at";

fn token_from_row(r: &Row) -> rusqlite::Result<AccessToken> {
    Ok(AccessToken {
        id: r.get(0)?,
        user_id: r.get(1)?,
        label: r.get(2)?,
        created_at_ms: r.get(3)?,
        last_used_at_ms: r.get(4)?,
        expires_at_ms: r.get(5)?,
        revoked_at_ms: r.get(6)?,
    })
}

/// One access token, found by `condition` on `t`, with its user.
fn token_with_user(
    c: &Connection,
    condition: &str,
    param: &dyn rusqlite::ToSql,
) -> Result<Option<(AccessToken, User)>> {
    let sql = format!(
        "SELECT {TOKEN_COLS}, {USER_COLS} FROM access_tokens t JOIN users u ON u.id = t.user_id WHERE {condition}"
    );
    Ok(c.prepare_cached(&sql)?
        .query_row([param], |r| {
            let user = User {
                id: r.get(7)?,
                name: r.get(8)?,
                is_admin: r.get(9)?,
                disabled: r.get(10)?,
                created_at_ms: r.get(11)?,
            };
            Ok((token_from_row(r)?, user))
        })
        .optional()?)
}

fn name_taken(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1) OR EXISTS (SELECT 1 FROM orgs WHERE name = ?1)",
        [name],
        |r| r.get(0),
    )
}

#[async_trait]
impl AccountStore for SqliteMetaStore {
    async fn create_user(&self, name: &str, password_hash: &str, is_admin: bool) -> Result<User> {
        let (name, hash) = (name.to_string(), password_hash.to_string());
        self.write(move |tx| {
            if name_taken(tx, &name)? {
                return Err(MetaError::Conflict(format!("the name {name:?} is already taken")));
            }
            let now = now_ms();
            tx.execute(
                "INSERT INTO users (name, password_hash, is_admin, disabled, created_at) VALUES (?, ?, ?, 0, ?)",
                params![name, hash, is_admin, now],
            )?;
            Ok(User { id: tx.last_insert_rowid(), name, is_admin, disabled: false, created_at_ms: now })
        })
        .await
    }

    async fn user_credentials(&self, name: &str) -> Result<Option<UserCredentials>> {
        let name = name.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {USER_COLS}, u.password_hash FROM users u WHERE u.name = ?"
            ))?
            .query_row([name], |r| {
                Ok(UserCredentials {
                    user: user_from_row(r)?,
                    password_hash: r.get(5)?,
                })
            })
            .optional()?)
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        self.read(|c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {USER_COLS} FROM users u ORDER BY u.name"))?;
            let rows = st.query_map([], user_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn count_users(&self) -> Result<u64> {
        self.read(|c| {
            Ok(c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get::<_, i64>(0))? as u64)
        })
        .await
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool> {
        let (name, hash) = (name.to_string(), password_hash.to_string());
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE users SET password_hash = ? WHERE name = ?",
                [hash, name],
            )? == 1)
        })
        .await
    }

    async fn set_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        let name = name.to_string();
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE users SET disabled = ? WHERE name = ?",
                params![disabled, name],
            )? == 1)
        })
        .await
    }

    async fn set_admin(&self, name: &str, is_admin: bool) -> Result<bool> {
        let name = name.to_string();
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE users SET is_admin = ? WHERE name = ?",
                params![is_admin, name],
            )? == 1)
        })
        .await
    }

    async fn create_token(
        &self,
        user_id: i64,
        label: &str,
        token_hash: &str,
        expires_at_ms: Option<i64>,
    ) -> Result<AccessToken> {
        let (label, hash) = (label.to_string(), token_hash.to_string());
        self.write(move |tx| {
            let now = now_ms();
            tx.execute(
                "INSERT INTO access_tokens (user_id, label, token_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                params![user_id, label, hash, now, expires_at_ms],
            )?;
            Ok(AccessToken {
                id: tx.last_insert_rowid(),
                user_id,
                label,
                created_at_ms: now,
                last_used_at_ms: None,
                expires_at_ms,
                revoked_at_ms: None,
            })
        })
        .await
    }

    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<(AccessToken, User)>> {
        let hash = token_hash.to_string();
        self.read(move |c| token_with_user(c, "t.token_hash = ?", &hash))
            .await
    }

    async fn token_by_id(&self, token_id: i64) -> Result<Option<(AccessToken, User)>> {
        self.read(move |c| token_with_user(c, "t.id = ?", &token_id))
            .await
    }

    async fn list_tokens(&self, user_id: i64) -> Result<Vec<AccessToken>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {TOKEN_COLS} FROM access_tokens t WHERE t.user_id = ? ORDER BY t.id"
            ))?;
            let rows = st.query_map([user_id], token_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn revoke_token(&self, user_id: i64, token_id: i64) -> Result<bool> {
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE access_tokens SET revoked_at = ? WHERE id = ? AND user_id = ? AND revoked_at IS NULL",
                params![now_ms(), token_id, user_id],
            )? == 1)
        })
        .await
    }

    async fn touch_token(&self, token_id: i64, at_ms: i64) -> Result<()> {
        self.write(move |tx| {
            tx.execute(
                "UPDATE access_tokens SET last_used_at = ? WHERE id = ?",
                params![at_ms, token_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn create_org(&self, name: &str) -> Result<Org> {
        let name = name.to_string();
        self.write(move |tx| {
            if name_taken(tx, &name)? {
                return Err(MetaError::Conflict(format!(
                    "the name {name:?} is already taken"
                )));
            }
            tx.execute(
                "INSERT INTO orgs (name, created_at) VALUES (?, ?)",
                params![name, now_ms()],
            )?;
            Ok(Org {
                id: tx.last_insert_rowid(),
                name,
            })
        })
        .await
    }

    async fn org_by_name(&self, name: &str) -> Result<Option<Org>> {
        let name = name.to_string();
        self.read(move |c| {
            Ok(
                c.query_row("SELECT id, name FROM orgs WHERE name = ?", [name], |r| {
                    Ok(Org {
                        id: r.get(0)?,
                        name: r.get(1)?,
                    })
                })
                .optional()?,
            )
        })
        .await
    }

    async fn set_org_member(&self, org_id: i64, user_id: i64, is_admin: bool) -> Result<()> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO org_members (org_id, user_id, is_admin) VALUES (?, ?, ?)
                 ON CONFLICT (org_id, user_id) DO UPDATE SET is_admin = excluded.is_admin",
                params![org_id, user_id, is_admin],
            )?;
            Ok(())
        })
        .await
    }

    async fn remove_org_member(&self, org_id: i64, user_id: i64) -> Result<bool> {
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM team_members WHERE user_id = ?2 AND team_id IN (SELECT id FROM teams WHERE org_id = ?1)",
                params![org_id, user_id],
            )?;
            Ok(tx.execute("DELETE FROM org_members WHERE org_id = ? AND user_id = ?", params![org_id, user_id])? == 1)
        })
        .await
    }

    async fn create_team(&self, org_id: i64, name: &str) -> Result<Team> {
        let name = name.to_string();
        self.write(move |tx| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM teams WHERE org_id = ? AND name = ?)",
                params![org_id, name],
                |r| r.get(0),
            )?;
            if exists {
                return Err(MetaError::Conflict(format!("team {name:?} already exists")));
            }
            tx.execute(
                "INSERT INTO teams (org_id, name) VALUES (?, ?)",
                params![org_id, name],
            )?;
            Ok(Team {
                id: tx.last_insert_rowid(),
                org_id,
                name,
            })
        })
        .await
    }

    async fn team_by_name(&self, org_id: i64, name: &str) -> Result<Option<Team>> {
        let name = name.to_string();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT id, org_id, name FROM teams WHERE org_id = ? AND name = ?",
                params![org_id, name],
                |r| {
                    Ok(Team {
                        id: r.get(0)?,
                        org_id: r.get(1)?,
                        name: r.get(2)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn add_team_member(&self, team_id: i64, user_id: i64) -> Result<()> {
        self.write(move |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO team_members (team_id, user_id) VALUES (?, ?)",
                params![team_id, user_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn remove_team_member(&self, team_id: i64, user_id: i64) -> Result<bool> {
        self.write(move |tx| {
            Ok(tx.execute(
                "DELETE FROM team_members WHERE team_id = ? AND user_id = ?",
                params![team_id, user_id],
            )? == 1)
        })
        .await
    }

    async fn namespace(&self, name: &str) -> Result<Option<Namespace>> {
        let name = name.to_string();
        self.read(move |c| {
            if let Some(id) = c
                .query_row("SELECT id FROM users WHERE name = ?", [&name], |r| r.get(0))
                .optional()?
            {
                return Ok(Some(Namespace::User(id)));
            }
            Ok(
                c.query_row("SELECT id FROM orgs WHERE name = ?", [&name], |r| r.get(0))
                    .optional()?
                    .map(Namespace::Org),
            )
        })
        .await
    }

    async fn set_visibility(&self, repo: &str, visibility: Visibility) -> Result<()> {
        let repo = repo.to_string();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO repository_settings (name, visibility, updated_at) VALUES (?, ?, ?)
                 ON CONFLICT (name) DO UPDATE SET visibility = excluded.visibility, updated_at = excluded.updated_at",
                params![repo, visibility.as_str(), now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    async fn grant(&self, repo: &str, subject: Subject, level: Level) -> Result<()> {
        let repo = repo.to_string();
        let (kind, id) = subject.parts();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO repository_grants (repository, subject_kind, subject_id, level) VALUES (?, ?, ?, ?)
                 ON CONFLICT (repository, subject_kind, subject_id) DO UPDATE SET level = excluded.level",
                params![repo, kind, id, level.as_str()],
            )?;
            Ok(())
        })
        .await
    }

    async fn revoke_grant(&self, repo: &str, subject: Subject) -> Result<bool> {
        let repo = repo.to_string();
        let (kind, id) = subject.parts();
        self.write(move |tx| {
            Ok(tx.execute(
                "DELETE FROM repository_grants WHERE repository = ? AND subject_kind = ? AND subject_id = ?",
                params![repo, kind, id],
            )? == 1)
        })
        .await
    }

    async fn repo_facts(&self, user_id: Option<i64>, repo: &str) -> Result<RepoFacts> {
        let repo = repo.to_string();
        self.read(move |c| {
            let visibility = c
                .prepare_cached("SELECT visibility FROM repository_settings WHERE name = ?")?
                .query_row([&repo], |r| r.get::<_, String>(0))
                .optional()?
                .and_then(|v| Visibility::parse(&v));
            let mut facts = RepoFacts { visibility, ..RepoFacts::default() };
            let Some(uid) = user_id else { return Ok(facts) };
            let namespace = repo.split('/').next().unwrap_or("");
            facts.granted = c
                .prepare_cached(
                    "SELECT MAX(CASE level WHEN 'admin' THEN 3 WHEN 'write' THEN 2 ELSE 1 END)
                     FROM repository_grants WHERE repository = ?1 AND (
                        (subject_kind = 'user' AND subject_id = ?2) OR
                        (subject_kind = 'team' AND subject_id IN (SELECT team_id FROM team_members WHERE user_id = ?2)))",
                )?
                .query_row(params![repo, uid], |r| r.get::<_, Option<i64>>(0))?
                .map(|rank| match rank {
                    3 => Level::Admin,
                    2 => Level::Write,
                    _ => Level::Read,
                });
            facts.own_namespace = c
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM users WHERE id = ? AND name = ?)")?
                .query_row(params![uid, namespace], |r| r.get(0))?;
            if let Some(admin) = c
                .prepare_cached(
                    "SELECT m.is_admin FROM orgs o JOIN org_members m ON m.org_id = o.id WHERE o.name = ? AND m.user_id = ?",
                )?
                .query_row(params![namespace, uid], |r| r.get::<_, bool>(0))
                .optional()?
            {
                facts.org_member = true;
                facts.org_admin = admin;
            }
            Ok(facts)
        })
        .await
    }

    async fn signing_keys(&self, candidate: SigningKey) -> Result<Vec<SigningKey>> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO signing_keys (id, secret, created_at)
                 SELECT ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
                params![candidate.id, candidate.secret, candidate.created_at_ms],
            )?;
            let mut st = tx.prepare(
                "SELECT id, secret, created_at FROM signing_keys ORDER BY created_at DESC, id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(SigningKey {
                    id: r.get(0)?,
                    secret: r.get(1)?,
                    created_at_ms: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        details: Option<&str>,
    ) -> Result<()> {
        let (actor, action, target, details) = (
            actor.to_string(),
            action.to_string(),
            target.to_string(),
            details.map(str::to_string),
        );
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO audit_log (at, actor, action, target, details) VALUES (?, ?, ?, ?, ?)",
                params![now_ms(), actor, action, target, details],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_audit(&self, before_id: Option<i64>, limit: usize) -> Result<Vec<AuditEntry>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, at, actor, action, target, details FROM audit_log
                 WHERE ?1 IS NULL OR id < ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![before_id, limit as i64], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    details: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}
