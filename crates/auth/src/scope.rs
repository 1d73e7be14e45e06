//! Scopes of the Docker token protocol: `repository:NAME:pull,push`,
//! `registry:catalog:*`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scope {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Scope {
    pub fn repository(name: &str, actions: &[&str]) -> Scope {
        Scope {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Parses one scope. The name may itself contain ':' (a registry host with a
    /// port), so the type is up to the first ':' and the actions after the last.
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        let actions = actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        Some(Scope {
            kind: kind.into(),
            name: name.into(),
            actions,
        })
    }

    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.kind == kind
            && self.name == name
            && self.actions.iter().any(|a| a == action || a == "*")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_scopes() {
        let s = Scope::parse("repository:team/app:pull,push").unwrap();
        assert_eq!(s, Scope::repository("team/app", &["pull", "push"]));
        assert_eq!(s.to_string(), "repository:team/app:pull,push");
        let s = Scope::parse("repository:host:5000/app:pull").unwrap();
        assert_eq!(s.name, "host:5000/app");
        assert_eq!(Scope::parse("registry:catalog:*").unwrap().actions, ["*"]);
        assert!(Scope::parse("nonsense").is_none());
        assert!(Scope::parse(":x:pull").is_none());
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,80}") {
            let _ = Scope::parse(&s);
        }
    }
}
