//! Access rules, globs, scopes and action lists: parsing never panics; what anonymous may do every user may do;
//! a scope and an action list print back to themselves.
#![no_main]

use libfuzzer_sys::{arbitrary, fuzz_target};
use pier::auth::rules::{glob_match, Principal, Rules};
use pier::auth::{Actions, Scope};
use pier::spec::RepositoryName;

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    rules: String,
    name: String,
    user: String,
    scope: String,
    pattern: String,
}

fuzz_target!(|input: Input| {
    let name = RepositoryName::parse(&input.name).ok();
    if let Ok(rules) = Rules::parse(&input.rules) {
        let user = Principal::User(&input.user);
        if let Some(name) = &name {
            let anonymous = rules.allowed(Principal::Anonymous, name);
            assert!(rules.allowed(user, name).contains(anonymous), "{:?} on {name}", input.rules);
        }
        if rules.catalog_allowed(Principal::Anonymous) {
            assert!(rules.catalog_allowed(user));
        }
    }
    let matched = glob_match(&input.pattern, &input.name);
    if !input.pattern.contains('*') {
        assert_eq!(matched, input.pattern == input.name);
    }
    assert!(glob_match("*", &input.name));
    if !input.name.contains('*') {
        assert!(glob_match(&input.name, &input.name));
    }
    if let Ok(scope) = Scope::parse(&input.scope) {
        assert_eq!(Scope::parse(&scope.to_string()).as_ref(), Ok(&scope), "{:?}", input.scope);
    }
    let _ = Scope::parse_list(&input.scope);
    if let Ok(actions) = Actions::parse_strict(&input.scope) {
        assert!(!actions.is_empty());
        assert_eq!(Actions::parse_strict(&actions.to_string()), Ok(actions));
        assert!(Actions::parse_lenient(&input.scope).contains(actions));
    }
});
