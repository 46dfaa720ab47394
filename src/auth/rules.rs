//! Access rules: repository patterns → users → actions. One rule per line (or separated by `;`):
//!
//! ```text
//! # pattern         users          actions
//! public/*          anonymous      pull
//! team/*            alice,bob      pull,push
//! *                 admin          *
//! registry:catalog  admin          *
//! ```
//!
//! - pattern: a repository name where `*` matches any run of characters, `/` included (`team/*` covers
//!   `team/app` and `team/a/b`, not `team`); `*` alone is every repository; `registry:catalog` is the catalog.
//! - users: comma-separated user names; `*` is every authenticated user; `anonymous` is a request without
//!   credentials. What anonymous may do, every user may do too.
//! - actions: comma-separated `pull`, `push`, `delete`, or `*` for all three. `push` does not imply `pull`
//!   (clients read before they write, so give `pull,push`).
//!
//! Grants add up: a user may do what any matching rule gives them. Without rules (registry:2's behaviour) every
//! user of the htpasswd file may do everything and anonymous nothing.

use super::scope::Actions;
use crate::spec::RepositoryName;

/// Who a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Users {
    /// Any authenticated user (`*`).
    Authenticated,
    /// These names; `anonymous` among them means requests without credentials.
    Named(Vec<String>),
}

/// What a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Repositories matching a glob.
    Repositories(String),
    /// The catalog (`registry:catalog`).
    Catalog,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    target: Target,
    users: Users,
    actions: Actions,
}

/// Who is asking: a user of the htpasswd file, or nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal<'a> {
    /// No credentials.
    Anonymous,
    /// A verified user.
    User(&'a str),
}

/// A set of access rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Default for Rules {
    /// registry:2's htpasswd behaviour: every user may do everything, anonymous nothing.
    fn default() -> Self {
        Rules {
            rules: vec![
                Rule { target: Target::Repositories("*".into()), users: Users::Authenticated, actions: Actions::ALL },
                Rule { target: Target::Catalog, users: Users::Authenticated, actions: Actions::ALL },
            ],
        }
    }
}

impl Rules {
    /// Parse the rules text (see the module documentation). Errors name the line.
    pub fn parse(text: &str) -> Result<Rules, String> {
        let mut rules = Vec::new();
        for (i, line) in text.split(['\n', ';']).enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let n = i + 1;
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [pattern, users, actions] = fields[..] else {
                return Err(format!("rule {n} ({line:?}): expected three fields: pattern users actions"));
            };
            let target = if pattern == "registry:catalog" {
                Target::Catalog
            } else {
                validate_pattern(pattern).map_err(|e| format!("rule {n}: {e}"))?;
                Target::Repositories(pattern.to_string())
            };
            let users = if users == "*" {
                Users::Authenticated
            } else {
                let names: Vec<String> = users.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect();
                if names.is_empty() || names.iter().any(|u| u == "*") {
                    return Err(format!("rule {n}: users must be `*` or a comma-separated list of names"));
                }
                Users::Named(names)
            };
            let actions = Actions::parse_strict(actions).map_err(|e| format!("rule {n}: {e}"))?;
            rules.push(Rule { target, users, actions });
        }
        Ok(Rules { rules })
    }

    /// What `who` may do on repository `name`.
    pub fn allowed(&self, who: Principal<'_>, name: &RepositoryName) -> Actions {
        self.fold(who, |t| matches!(t, Target::Repositories(p) if glob_match(p, name.as_str())))
    }

    /// Whether `who` may list the catalog.
    pub fn catalog_allowed(&self, who: Principal<'_>) -> bool {
        !self.fold(who, |t| matches!(t, Target::Catalog)).is_empty()
    }

    fn fold(&self, who: Principal<'_>, target: impl Fn(&Target) -> bool) -> Actions {
        self.rules
            .iter()
            .filter(|r| target(&r.target) && applies(&r.users, who))
            .fold(Actions::NONE, |acc, r| acc | r.actions)
    }
}

fn applies(users: &Users, who: Principal<'_>) -> bool {
    match (users, who) {
        (Users::Authenticated, Principal::User(_)) => true,
        (Users::Authenticated, Principal::Anonymous) => false,
        (Users::Named(names), Principal::Anonymous) => names.iter().any(|n| n == "anonymous"),
        // What anonymous may do, a user may do too.
        (Users::Named(names), Principal::User(u)) => names.iter().any(|n| n == u || n == "anonymous"),
    }
}

/// Patterns use the characters of repository names plus `*`; upper case could never match, so it is refused.
fn validate_pattern(p: &str) -> Result<(), String> {
    if p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/*".contains(c)) {
        Ok(())
    } else {
        Err(format!("pattern {p:?} may hold only a-z, 0-9, '.', '_', '-', '/' and '*'"))
    }
}

/// Match `name` against `pattern`, where `*` matches any run of characters (including `/`).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            // Let the last star swallow one more character.
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use Principal::{Anonymous, User};

    fn n(s: &str) -> RepositoryName {
        RepositoryName::parse(s).unwrap()
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "a"));
        assert!(glob_match("*", "a/b/c"));
        assert!(glob_match("team/*", "team/app"));
        assert!(glob_match("team/*", "team/a/b"));
        assert!(!glob_match("team/*", "team"));
        assert!(!glob_match("team/*", "teams/app"));
        assert!(!glob_match("team/*", "other/team/app"));
        assert!(glob_match("*/app", "team/app"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXbY"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
        assert!(!glob_match("exact", "exac"));
    }

    #[test]
    fn default_is_registry2() {
        let r = Rules::default();
        assert_eq!(r.allowed(User("x"), &n("any/thing")), Actions::ALL);
        assert!(r.allowed(Anonymous, &n("any")).is_empty());
        assert!(r.catalog_allowed(User("x")));
        assert!(!r.catalog_allowed(Anonymous));
    }

    #[test]
    fn rules_add_up() {
        let r = Rules::parse(
            "# comment\n public/*  anonymous pull\n team/* alice,bob pull,push ; * admin * \n ro/* * pull\nregistry:catalog admin *\nteam/secret carol delete # trailing",
        )
        .unwrap();
        assert_eq!(r.allowed(Anonymous, &n("public/x")), Actions::PULL);
        assert!(r.allowed(Anonymous, &n("team/x")).is_empty());
        assert_eq!(r.allowed(User("alice"), &n("team/x")), Actions::PULL | Actions::PUSH);
        assert_eq!(r.allowed(User("alice"), &n("public/x")), Actions::PULL, "users may do what anonymous may");
        assert_eq!(r.allowed(User("carol"), &n("ro/x")), Actions::PULL);
        assert_eq!(r.allowed(User("carol"), &n("team/secret")), Actions::DELETE);
        assert_eq!(r.allowed(User("admin"), &n("team/x")), Actions::ALL);
        assert!(r.allowed(User("alice"), &n("other")).is_empty());
        assert!(r.catalog_allowed(User("admin")));
        assert!(!r.catalog_allowed(User("alice")));
        // "anonymous" as a name in a rule never matches a user called that (htpasswd refuses it).
        assert!(r.allowed(User("eve"), &n("team/x")).is_empty());
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(Rules::parse("team/* alice").unwrap_err().starts_with("rule 1"));
        assert!(Rules::parse("x y pull\nTeam/* alice pull").unwrap_err().starts_with("rule 2"));
        assert!(Rules::parse("team/* alice pul").unwrap_err().contains("pul"));
        assert!(Rules::parse("team/* alice,* pull").is_err());
        assert!(Rules::parse("team/* , pull").is_err());
        assert_eq!(Rules::parse("  \n# only comments\n").unwrap().rules.len(), 0);
    }
}
