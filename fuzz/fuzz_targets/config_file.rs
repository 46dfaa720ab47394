//! registry:2's config.yml: any text gives a set of settings or an error naming a YAML key (or the file), never a
//! panic; whatever settings it gives, the settings readers answer with a configuration or an error, and the message
//! for that error names a YAML key of the file (or one of Pier's own settings).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pier::config::Config;
use pier::config_file::{ConfigFile, FILE};
use pier::storage::config::StorageConfig;
use std::path::Path;

fuzz_target!(|text: &str| {
    let file = match ConfigFile::parse("config.yml", text, Path::new("/etc/pier")) {
        Ok(f) => f,
        Err(e) => {
            let key = e.setting.as_str();
            assert!(key == FILE || (!key.is_empty() && !key.contains('_')), "{e}");
            return;
        }
    };
    for (setting, _) in file.settings() {
        assert!(setting.starts_with("REGISTRY_"), "{setting}");
        assert!(file.key_of(setting).is_some(), "{setting}");
    }
    let lookup = |k: &str| file.get(k);
    let errors = [Config::from_lookup(lookup).err(), StorageConfig::from_lookup(lookup).err()];
    for e in errors.into_iter().flatten() {
        let message = file.describe(&e, false).unwrap_or_else(|| e.to_string());
        assert!(message.starts_with("config.yml: ") || message.starts_with("configuration setting PIER_"), "{message}");
    }
});
