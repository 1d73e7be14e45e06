//! The access policy: what a principal may do with a repository and with the registry.
//!
//! | who | repository access |
//! |---|---|
//! | system admin | everything, everywhere |
//! | the user owning the namespace (`alice/…` for alice) | admin |
//! | an admin of the organisation owning the namespace | admin |
//! | a user or team granted read / write / admin | that level |
//! | anyone, also anonymous, on a public repository | pull |
//!
//! Levels: read = pull; write = pull + push; admin = write + settings. Deleting
//! manifests, tags and blobs needs `delete_level` (admin unless configured to write).
//! Repositories are private unless made public. Creating a repository by pushing to it
//! therefore needs write access to its name: your own namespace, an organisation you
//! administer, or an explicit grant.

use wharf_metastore::accounts::{Level, RepoFacts, User, Visibility};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    /// The Docker token protocol's name for the action.
    pub fn scope_name(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RepoAccess {
    pub pull: bool,
    pub push: bool,
    pub delete: bool,
    pub admin: bool,
}

impl RepoAccess {
    pub fn allows(&self, action: Action) -> bool {
        match action {
            Action::Pull => self.pull,
            Action::Push => self.push,
            Action::Delete => self.delete,
        }
    }

    /// The token protocol's actions this access grants, in order.
    pub fn scope_actions(&self) -> Vec<&'static str> {
        [
            (self.pull, "pull"),
            (self.push, "push"),
            (self.delete, "delete"),
        ]
        .into_iter()
        .filter_map(|(ok, a)| ok.then_some(a))
        .collect()
    }
}

/// What `user` (or anonymous, `None`) may do with a repository described by `facts`.
pub fn repo_access(user: Option<&User>, facts: &RepoFacts, delete_level: Level) -> RepoAccess {
    let level = user.and_then(|u| {
        if u.disabled {
            None
        } else if u.is_admin || facts.own_namespace || facts.org_admin {
            Some(Level::Admin)
        } else {
            facts.granted
        }
    });
    let public = facts.visibility == Some(Visibility::Public);
    RepoAccess {
        pull: public || level.is_some(),
        push: level >= Some(Level::Write),
        delete: level >= Some(delete_level),
        admin: level == Some(Level::Admin),
    }
}

/// Registry-wide powers: managing users, organisations and jobs, reading the audit log
/// and job logs. Only system administrators have them.
pub fn is_system_admin(user: Option<&User>) -> bool {
    user.is_some_and(|u| u.is_admin && !u.disabled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(admin: bool) -> User {
        User {
            id: 1,
            name: "u".into(),
            is_admin: admin,
            disabled: false,
            created_at_ms: 0,
        }
    }

    #[test]
    fn levels_map_to_actions() {
        let facts = |granted| RepoFacts {
            granted,
            ..RepoFacts::default()
        };
        let u = user(false);
        let a = repo_access(Some(&u), &facts(Some(Level::Read)), Level::Admin);
        assert_eq!((a.pull, a.push, a.delete), (true, false, false));
        let a = repo_access(Some(&u), &facts(Some(Level::Write)), Level::Admin);
        assert_eq!((a.pull, a.push, a.delete), (true, true, false));
        let a = repo_access(Some(&u), &facts(Some(Level::Write)), Level::Write);
        assert!(a.delete, "deleting with write when so configured");
        let a = repo_access(Some(&u), &facts(None), Level::Admin);
        assert_eq!(a, RepoAccess::default(), "private by default");
        let a = repo_access(
            None,
            &RepoFacts {
                visibility: Some(Visibility::Public),
                ..RepoFacts::default()
            },
            Level::Admin,
        );
        assert_eq!((a.pull, a.push), (true, false));
        let mut disabled = user(true);
        disabled.disabled = true;
        assert_eq!(
            repo_access(Some(&disabled), &facts(Some(Level::Admin)), Level::Admin),
            RepoAccess::default()
        );
    }
}
