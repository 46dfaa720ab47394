//! Which storage backend to use, read under registry:2's setting names through a look-up function (environment,
//! Workers vars/secrets, Spin variables alike), and building the S3 or Azure store from it over any [`HttpClient`].
//!
//! | setting | meaning |
//! |---|---|
//! | `REGISTRY_STORAGE` | `filesystem` (default), `inmemory`, `s3`, `azure` |
//! | `REGISTRY_STORAGE_S3_ACCESSKEY`, `…_SECRETKEY` | credentials (required) |
//! | `REGISTRY_STORAGE_S3_REGION` | region (required unless `REGIONENDPOINT` is set; then `us-east-1`) |
//! | `REGISTRY_STORAGE_S3_REGIONENDPOINT` | custom endpoint URL (R2, MinIO, s3s-fs) |
//! | `REGISTRY_STORAGE_S3_BUCKET` | bucket (required) |
//! | `REGISTRY_STORAGE_S3_ROOTDIRECTORY` | key prefix |
//! | `REGISTRY_STORAGE_S3_FORCEPATHSTYLE` | path-style addressing (default false: virtual-hosted) |
//! | `REGISTRY_STORAGE_AZURE_ACCOUNTNAME`, `…_ACCOUNTKEY`, `…_CONTAINER` | account, base64 key, container (required) |
//! | `REGISTRY_STORAGE_AZURE_REALM` | endpoint suffix, default `core.windows.net` |
//! | `REGISTRY_STORAGE_AZURE_ROOTDIRECTORY` | blob name prefix |
//! | `PIER_STORAGE_AZURE_ENDPOINT` | explicit blob service URL, e.g. Azurite's `http://127.0.0.1:10000/devstoreaccount1` |
//! | `REGISTRY_STORAGE_AZURE_SERVICEURL` | the same under registry:2's (3.x) name; `PIER_STORAGE_AZURE_ENDPOINT` wins |
//!
//! Errors name the setting and never repeat a secret's value.

use super::azure::AzureObjectStore;
use super::http::HttpClient;
use super::s3::{Clock, S3ObjectStore};
use crate::config::{parse_bool, ConfigError};
use crate::sign::azure::{BlobEndpoint, SharedKeyCredential, DEFAULT_REALM};
use crate::sign::sigv4::{AddressingStyle, Credentials, S3Endpoint};
use std::fmt;
use std::rc::Rc;

/// The storage backend and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// Files under a root directory (`REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY`, `None` = the platform's default).
    Filesystem(Option<String>),
    /// Process memory.
    InMemory,
    /// An S3-compatible bucket.
    S3(S3Settings),
    /// An Azure Blob container.
    Azure(AzureSettings),
}

/// S3 settings.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    pub region_endpoint: Option<String>,
    pub bucket: String,
    pub root_directory: String,
    pub force_path_style: bool,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("region", &self.region)
            .field("region_endpoint", &self.region_endpoint)
            .field("bucket", &self.bucket)
            .field("root_directory", &self.root_directory)
            .field("force_path_style", &self.force_path_style)
            .finish()
    }
}

/// Azure Blob settings.
#[derive(Clone, PartialEq, Eq)]
pub struct AzureSettings {
    pub account_name: String,
    pub account_key: String,
    pub container: String,
    pub realm: String,
    pub endpoint: Option<String>,
    pub root_directory: String,
}

impl fmt::Debug for AzureSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureSettings")
            .field("account_name", &self.account_name)
            .field("account_key", &"<redacted>")
            .field("container", &self.container)
            .field("realm", &self.realm)
            .field("endpoint", &self.endpoint)
            .field("root_directory", &self.root_directory)
            .finish()
    }
}

fn bad(setting: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError { setting: setting.to_string(), problem: problem.into() }
}

impl StorageConfig {
    /// Read the backend's settings through `lookup`; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| lookup(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let need = |k: &str, what: &str| get(k).ok_or_else(|| bad(k, format!("required: {what}")));
        match get("REGISTRY_STORAGE").map(|s| s.to_ascii_lowercase()).as_deref() {
            None | Some("filesystem") => Ok(StorageConfig::Filesystem(get("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"))),
            Some("inmemory") | Some("memory") => Ok(StorageConfig::InMemory),
            Some("s3") => {
                let region_endpoint = get("REGISTRY_STORAGE_S3_REGIONENDPOINT");
                let region = match (get("REGISTRY_STORAGE_S3_REGION"), &region_endpoint) {
                    (Some(r), _) => r,
                    (None, Some(_)) => "us-east-1".to_string(),
                    (None, None) => {
                        return Err(bad("REGISTRY_STORAGE_S3_REGION", "required: the bucket's region (e.g. us-east-1)"))
                    }
                };
                let force_path_style = match get("REGISTRY_STORAGE_S3_FORCEPATHSTYLE") {
                    Some(v) => parse_bool("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", &v)?,
                    None => false,
                };
                let s = S3Settings {
                    access_key: need("REGISTRY_STORAGE_S3_ACCESSKEY", "the access key id")?,
                    secret_key: need("REGISTRY_STORAGE_S3_SECRETKEY", "the secret access key")?,
                    region,
                    region_endpoint,
                    bucket: need("REGISTRY_STORAGE_S3_BUCKET", "the bucket name")?,
                    root_directory: get("REGISTRY_STORAGE_S3_ROOTDIRECTORY").unwrap_or_default(),
                    force_path_style,
                };
                s.endpoint()?; // validate now, not on the first request
                Ok(StorageConfig::S3(s))
            }
            Some("azure") => {
                let service_url = get("REGISTRY_STORAGE_AZURE_SERVICEURL");
                let from_service_url = get("PIER_STORAGE_AZURE_ENDPOINT").is_none() && service_url.is_some();
                let s = AzureSettings {
                    account_name: need("REGISTRY_STORAGE_AZURE_ACCOUNTNAME", "the storage account name")?,
                    account_key: need("REGISTRY_STORAGE_AZURE_ACCOUNTKEY", "the storage account key")?,
                    container: need("REGISTRY_STORAGE_AZURE_CONTAINER", "the container name")?,
                    realm: get("REGISTRY_STORAGE_AZURE_REALM").unwrap_or_else(|| DEFAULT_REALM.to_string()),
                    endpoint: get("PIER_STORAGE_AZURE_ENDPOINT").or(service_url),
                    root_directory: get("REGISTRY_STORAGE_AZURE_ROOTDIRECTORY").unwrap_or_default(),
                };
                s.endpoint().map_err(|mut e| {
                    // Name the setting the URL came from.
                    if from_service_url && e.setting == "PIER_STORAGE_AZURE_ENDPOINT" {
                        e.setting = "REGISTRY_STORAGE_AZURE_SERVICEURL".into();
                    }
                    e
                })?;
                s.credential()?;
                Ok(StorageConfig::Azure(s))
            }
            Some(other) => Err(bad(
                "REGISTRY_STORAGE",
                format!("unknown storage {:?} (expected filesystem, inmemory, s3 or azure)", other.chars().take(40).collect::<String>()),
            )),
        }
    }
}

impl S3Settings {
    /// The endpoint: the custom one, or AWS's for the region.
    pub fn endpoint(&self) -> Result<S3Endpoint, ConfigError> {
        let style = if self.force_path_style { AddressingStyle::Path } else { AddressingStyle::VirtualHosted };
        match &self.region_endpoint {
            Some(url) => S3Endpoint::parse(url, &self.region, style)
                .map_err(|e| bad("REGISTRY_STORAGE_S3_REGIONENDPOINT", e.to_string())),
            None => Ok(S3Endpoint::aws(&self.region, style)),
        }
    }

    /// The store over `http`, with `clock` for signing and presigning.
    pub fn build(&self, http: Rc<dyn HttpClient>, clock: Clock) -> Result<S3ObjectStore, ConfigError> {
        let credentials = Credentials::new(self.access_key.clone(), self.secret_key.clone());
        Ok(S3ObjectStore::new(http, self.endpoint()?, &self.bucket, &self.root_directory, credentials, clock))
    }
}

impl AzureSettings {
    /// The blob service endpoint: `PIER_STORAGE_AZURE_ENDPOINT`, or `https://<account>.blob.<realm>`.
    pub fn endpoint(&self) -> Result<BlobEndpoint, ConfigError> {
        match &self.endpoint {
            Some(url) => BlobEndpoint::parse(url).map_err(|e| bad("PIER_STORAGE_AZURE_ENDPOINT", e.to_string())),
            None => BlobEndpoint::for_realm(&self.account_name, &self.realm).map_err(|e| {
                let setting = if e.to_string().contains("account") {
                    "REGISTRY_STORAGE_AZURE_ACCOUNTNAME"
                } else {
                    "REGISTRY_STORAGE_AZURE_REALM"
                };
                bad(setting, e.to_string())
            }),
        }
    }

    /// The SharedKey credential (the key must be base64).
    pub fn credential(&self) -> Result<SharedKeyCredential, ConfigError> {
        SharedKeyCredential::new(self.account_name.clone(), &self.account_key)
            .map_err(|_| bad("REGISTRY_STORAGE_AZURE_ACCOUNTKEY", "not valid base64 (copy the key as the portal shows it)"))
    }

    /// The store over `http`, with `clock` for signing and SAS expiry.
    pub fn build(&self, http: Rc<dyn HttpClient>, clock: Clock) -> Result<AzureObjectStore, ConfigError> {
        Ok(AzureObjectStore::new(http, self.endpoint()?, self.credential()?, &self.container, &self.root_directory, clock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<StorageConfig, ConfigError> {
        let env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        StorageConfig::from_lookup(|k| env.get(k).cloned())
    }

    #[test]
    fn defaults_to_the_filesystem() {
        assert_eq!(parse(&[]).unwrap(), StorageConfig::Filesystem(None));
        assert_eq!(parse(&[("REGISTRY_STORAGE", "inmemory")]).unwrap(), StorageConfig::InMemory);
        let e = parse(&[("REGISTRY_STORAGE", "gcs")]).unwrap_err();
        assert_eq!(e.setting, "REGISTRY_STORAGE");
    }

    #[test]
    fn s3_settings_under_registry_names() {
        let c = parse(&[
            ("REGISTRY_STORAGE", "s3"),
            ("REGISTRY_STORAGE_S3_ACCESSKEY", "AK"),
            ("REGISTRY_STORAGE_S3_SECRETKEY", "very-secret"),
            ("REGISTRY_STORAGE_S3_REGIONENDPOINT", "http://127.0.0.1:9014"),
            ("REGISTRY_STORAGE_S3_BUCKET", "b"),
            ("REGISTRY_STORAGE_S3_ROOTDIRECTORY", "/reg"),
            ("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true"),
        ])
        .unwrap();
        let StorageConfig::S3(s) = c else { panic!("not s3") };
        assert_eq!(s.region, "us-east-1");
        assert_eq!(s.endpoint().unwrap().host("b"), "127.0.0.1:9014");
        assert!(!format!("{s:?}").contains("very-secret"));
    }

    #[test]
    fn s3_errors_name_the_setting_without_secrets() {
        let base = [("REGISTRY_STORAGE", "s3"), ("REGISTRY_STORAGE_S3_ACCESSKEY", "AK"), ("REGISTRY_STORAGE_S3_REGION", "eu-west-1")];
        let e = parse(&base).unwrap_err();
        assert_eq!(e.setting, "REGISTRY_STORAGE_S3_SECRETKEY");
        let mut with_secret = base.to_vec();
        with_secret.push(("REGISTRY_STORAGE_S3_SECRETKEY", "very-secret"));
        let e = parse(&with_secret).unwrap_err();
        assert_eq!(e.setting, "REGISTRY_STORAGE_S3_BUCKET");
        assert!(!e.to_string().contains("very-secret"));
        with_secret.push(("REGISTRY_STORAGE_S3_BUCKET", "b"));
        with_secret.push(("REGISTRY_STORAGE_S3_REGIONENDPOINT", "ftp://x"));
        assert_eq!(parse(&with_secret).unwrap_err().setting, "REGISTRY_STORAGE_S3_REGIONENDPOINT");
        let e = parse(&[("REGISTRY_STORAGE", "s3"), ("REGISTRY_STORAGE_S3_REGION", "r"), ("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "perhaps")]).unwrap_err();
        assert_eq!(e.setting, "REGISTRY_STORAGE_S3_FORCEPATHSTYLE");
        let e = parse(&[("REGISTRY_STORAGE", "s3"), ("REGISTRY_STORAGE_S3_ACCESSKEY", "AK")]).unwrap_err();
        assert_eq!(e.setting, "REGISTRY_STORAGE_S3_REGION");
    }

    #[test]
    fn azure_settings_realm_endpoint_and_errors() {
        let base = [
            ("REGISTRY_STORAGE", "azure"),
            ("REGISTRY_STORAGE_AZURE_ACCOUNTNAME", "acct"),
            ("REGISTRY_STORAGE_AZURE_CONTAINER", "reg"),
            ("REGISTRY_STORAGE_AZURE_REALM", "core.chinacloudapi.cn"),
        ];
        assert_eq!(parse(&base).unwrap_err().setting, "REGISTRY_STORAGE_AZURE_ACCOUNTKEY");
        let mut v = base.to_vec();
        v.push(("REGISTRY_STORAGE_AZURE_ACCOUNTKEY", "not base64 !!secret"));
        let e = parse(&v).unwrap_err();
        assert_eq!(e.setting, "REGISTRY_STORAGE_AZURE_ACCOUNTKEY");
        assert!(!e.to_string().contains("secret"));
        v.pop();
        v.push(("REGISTRY_STORAGE_AZURE_ACCOUNTKEY", "a2V5"));
        let StorageConfig::Azure(s) = parse(&v).unwrap() else { panic!("not azure") };
        assert_eq!(s.endpoint().unwrap().host(), "acct.blob.core.chinacloudapi.cn");
        assert!(!format!("{s:?}").contains("a2V5"));
        v.push(("PIER_STORAGE_AZURE_ENDPOINT", "http://127.0.0.1:10000/devstoreaccount1"));
        let StorageConfig::Azure(s) = parse(&v).unwrap() else { panic!("not azure") };
        assert!(s.endpoint().unwrap().is_path_style());
        v.pop();
        v.push(("REGISTRY_STORAGE_AZURE_SERVICEURL", "https://acct.blob.core.chinacloudapi.cn"));
        let StorageConfig::Azure(s) = parse(&v).unwrap() else { panic!("not azure") };
        assert_eq!(s.endpoint().unwrap().host(), "acct.blob.core.chinacloudapi.cn");
        v.pop();
        v.push(("REGISTRY_STORAGE_AZURE_SERVICEURL", "ftp://nowhere"));
        assert_eq!(parse(&v).unwrap_err().setting, "REGISTRY_STORAGE_AZURE_SERVICEURL");
        v.pop();
        v.push(("PIER_STORAGE_AZURE_ENDPOINT", "http://127.0.0.1:10000/devstoreaccount1"));
        v[1] = ("REGISTRY_STORAGE_AZURE_ACCOUNTNAME", "Bad_Name");
        v.pop();
        assert_eq!(parse(&v).unwrap_err().setting, "REGISTRY_STORAGE_AZURE_ACCOUNTNAME");
    }
}
