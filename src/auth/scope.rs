//! Scopes of the Docker token protocol: `repository:<name>:<actions>` and `registry:catalog:*`, and the set of
//! actions a grant carries. Names may contain `:` in other registries' scopes (a host with a port), so the resource
//! type is what precedes the first `:` and the actions what follows the last one.

use crate::spec::RepositoryName;
use std::fmt;

/// A set of repository actions: pull, push, delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions(u8);

impl Actions {
    /// No action.
    pub const NONE: Actions = Actions(0);
    /// Read manifests, blobs, tags, referrers.
    pub const PULL: Actions = Actions(1);
    /// Upload blobs, put manifests.
    pub const PUSH: Actions = Actions(2);
    /// Delete manifests, tags, blobs.
    pub const DELETE: Actions = Actions(4);
    /// Every action (`*`).
    pub const ALL: Actions = Actions(7);

    /// Parse one action name (`pull`, `push`, `delete`, `*`); unknown names give `None`.
    pub fn parse_one(s: &str) -> Option<Actions> {
        match s.trim() {
            "pull" => Some(Actions::PULL),
            "push" => Some(Actions::PUSH),
            "delete" => Some(Actions::DELETE),
            "*" => Some(Actions::ALL),
            _ => None,
        }
    }

    /// Parse a comma-separated list, ignoring unknown names (the token protocol lets clients ask for actions a
    /// registry does not know; they are simply not granted).
    pub fn parse_lenient(s: &str) -> Actions {
        s.split(',').filter_map(Actions::parse_one).fold(Actions::NONE, |a, b| a | b)
    }

    /// Parse a comma-separated list; `Err` names the first unknown action.
    pub fn parse_strict(s: &str) -> Result<Actions, String> {
        let mut out = Actions::NONE;
        for part in s.split(',') {
            out = out | Actions::parse_one(part).ok_or_else(|| format!("unknown action {:?} (expected pull, push, delete or *)", part.trim()))?;
        }
        Ok(out)
    }

    /// Whether every action of `other` is in `self`.
    pub fn contains(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The actions in both sets.
    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    /// The action names, in the protocol's order (`pull`, `push`, `delete`).
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.contains(Actions::PULL) {
            v.push("pull");
        }
        if self.contains(Actions::PUSH) {
            v.push("push");
        }
        if self.contains(Actions::DELETE) {
            v.push("delete");
        }
        v
    }
}

impl std::ops::BitOr for Actions {
    type Output = Actions;
    fn bitor(self, o: Actions) -> Actions {
        Actions(self.0 | o.0)
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// One requested or needed scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `repository:<name>:<actions>`
    Repository { name: RepositoryName, actions: Actions },
    /// `registry:catalog:*`
    Catalog,
}

/// Why a scope string was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeError {
    /// Not `type:name:actions`.
    Malformed,
    /// A repository scope with an invalid name.
    InvalidName,
    /// A resource type Pier has no resources of (other registries' scopes are ignored, not refused).
    UnknownType,
}

impl Scope {
    /// Parse one scope string.
    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        let (kind, rest) = s.split_once(':').ok_or(ScopeError::Malformed)?;
        let (name, actions) = rest.rsplit_once(':').ok_or(ScopeError::Malformed)?;
        if name.is_empty() {
            return Err(ScopeError::Malformed);
        }
        // `repository(plugin)` is docker's class syntax; the class does not change what is granted.
        let kind = kind.split('(').next().unwrap_or(kind);
        match kind {
            "repository" => {
                let name = RepositoryName::parse(name).map_err(|_| ScopeError::InvalidName)?;
                Ok(Scope::Repository { name, actions: Actions::parse_lenient(actions) })
            }
            "registry" if name == "catalog" => Ok(Scope::Catalog),
            "registry" => Err(ScopeError::UnknownType),
            _ => Err(ScopeError::UnknownType),
        }
    }

    /// Parse a `scope` parameter: one or more scopes separated by spaces (OAuth2 form) — repeated parameters are
    /// handled by the caller.
    pub fn parse_list(s: &str) -> Result<Vec<Scope>, ScopeError> {
        let mut out = Vec::new();
        for part in s.split(' ').filter(|p| !p.is_empty()) {
            match Scope::parse(part) {
                Ok(scope) => out.push(scope),
                Err(ScopeError::UnknownType) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Repository { name, actions } => write!(f, "repository:{name}:{actions}"),
            Scope::Catalog => f.write_str("registry:catalog:*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> RepositoryName {
        RepositoryName::parse(s).unwrap()
    }

    #[test]
    fn parses_repository_scopes() {
        assert_eq!(
            Scope::parse("repository:team/app:pull,push").unwrap(),
            Scope::Repository { name: name("team/app"), actions: Actions::PULL | Actions::PUSH }
        );
        assert_eq!(Scope::parse("repository:a:*").unwrap(), Scope::Repository { name: name("a"), actions: Actions::ALL });
        assert_eq!(Scope::parse("repository(plugin):a:pull").unwrap(), Scope::Repository { name: name("a"), actions: Actions::PULL });
        // Unknown actions are not granted, not an error.
        assert_eq!(Scope::parse("repository:a:pull,fly").unwrap(), Scope::Repository { name: name("a"), actions: Actions::PULL });
        assert_eq!(Scope::parse("repository:a:").unwrap(), Scope::Repository { name: name("a"), actions: Actions::NONE });
        assert_eq!(Scope::parse("registry:catalog:*").unwrap(), Scope::Catalog);
    }

    #[test]
    fn refuses_bad_scopes() {
        assert_eq!(Scope::parse("repository"), Err(ScopeError::Malformed));
        assert_eq!(Scope::parse("repository:a"), Err(ScopeError::Malformed));
        assert_eq!(Scope::parse("repository::pull"), Err(ScopeError::Malformed));
        assert_eq!(Scope::parse("repository:A:pull"), Err(ScopeError::InvalidName));
        assert_eq!(Scope::parse("repository:../x:pull"), Err(ScopeError::InvalidName));
        assert_eq!(Scope::parse("repository:a%2Fb:pull"), Err(ScopeError::InvalidName));
        assert_eq!(Scope::parse("repository:host:5000/a:pull"), Err(ScopeError::InvalidName));
        assert_eq!(Scope::parse("registry:other:*"), Err(ScopeError::UnknownType));
        assert_eq!(Scope::parse("blob:a:pull"), Err(ScopeError::UnknownType));
    }

    #[test]
    fn lists_and_display() {
        let v = Scope::parse_list("repository:a:pull  repository:b:push registry:catalog:* plugin:x:y").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].to_string(), "repository:a:pull");
        assert_eq!(v[2].to_string(), "registry:catalog:*");
        assert!(Scope::parse_list("repository:B:pull").is_err());
        assert_eq!(Actions::ALL.to_string(), "pull,push,delete");
        assert!(Actions::parse_strict("pull,pish").is_err());
        assert_eq!(Actions::parse_strict("pull, push").unwrap(), Actions::PULL | Actions::PUSH);
    }
}
