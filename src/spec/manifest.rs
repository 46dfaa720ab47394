//! Manifest rules: what a pushed manifest must look like before it is stored, and what it refers to. Parsing keeps
//! the client's bytes untouched (they are stored and served exactly); this module only reads them to learn the media
//! type, the blobs and child manifests that must already exist, and the `subject` for the referrers API.

use super::digest::Digest;
use super::media_types::{self, essence};
use crate::error::{Error, ErrorCode, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest manifest accepted (distribution's default); bigger bodies are answered 413.
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

/// Content a manifest refers to: its digest, the size the manifest declares for it, and where it was declared.
#[derive(Debug, Clone, PartialEq)]
pub struct Referenced {
    pub digest: Digest,
    pub size: u64,
    /// The descriptor's place in the manifest (`config`, `layers[2]`, `manifests[0]`), for error details.
    pub field: String,
}

/// What the registry needs to know of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestInfo {
    /// The media type it is stored and served with.
    pub media_type: String,
    /// `artifactType`, or for an image manifest without one, its config's media type (the referrers API's rule).
    pub artifact_type: Option<String>,
    /// Blobs that must exist in the repository (config and layers; foreign layers with `urls` are exempt).
    pub blobs: Vec<Referenced>,
    /// Manifests that must exist in the repository (an index's children).
    pub manifests: Vec<Referenced>,
    /// The manifest this one refers to, which need not exist.
    pub subject: Option<Descriptor>,
    /// Top-level annotations, copied into referrers descriptors.
    pub annotations: Option<Map<String, Value>>,
}

fn invalid(detail: impl Into<String>) -> Error {
    Error::new(ErrorCode::ManifestInvalid).with_detail(detail.into())
}

/// Parse and check a manifest body sent with `content_type` (the request's Content-Type, if any).
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<ManifestInfo> {
    if body.len() > MAX_MANIFEST_SIZE {
        return Err(Error::new(ErrorCode::PayloadTooLarge).with_detail(format!("manifest larger than {MAX_MANIFEST_SIZE} bytes")));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let obj = value.as_object().ok_or_else(|| invalid("manifest is not a JSON object"))?;

    let field_type = match obj.get("mediaType") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("mediaType must be a string")),
    };
    let header_type = content_type.map(essence).filter(|t| !t.is_empty() && t != "application/json" && t != "application/octet-stream");

    let media_type = match (&header_type, &field_type) {
        (Some(h), Some(f)) if h != f => {
            return Err(invalid(format!("Content-Type {h} does not match mediaType {f}")));
        }
        (Some(h), _) => h.clone(),
        (None, Some(f)) => f.clone(),
        (None, None) => {
            if obj.contains_key("manifests") {
                media_types::OCI_INDEX.to_string()
            } else if obj.contains_key("config") {
                media_types::OCI_MANIFEST.to_string()
            } else {
                return Err(invalid("cannot tell the manifest's media type"));
            }
        }
    };

    if media_type == media_types::DOCKER_SCHEMA1 || media_type == media_types::DOCKER_SCHEMA1_SIGNED {
        return Err(invalid("Docker schema 1 manifests are not supported"));
    }
    match obj.get("schemaVersion").and_then(Value::as_u64) {
        Some(2) => {}
        _ => return Err(invalid("schemaVersion must be 2")),
    }

    let subject = match obj.get("subject") {
        None | Some(Value::Null) => None,
        Some(v) => Some(descriptor(v, "subject")?),
    };
    let annotations = match obj.get("annotations") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(invalid("annotations must be an object")),
    };
    let mut artifact_type = match obj.get("artifactType") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("artifactType must be a string")),
    };

    let mut info = ManifestInfo { media_type: media_type.clone(), artifact_type: None, blobs: vec![], manifests: vec![], subject, annotations };
    let known_index = media_types::is_index(&media_type);
    let known_image = media_type == media_types::OCI_MANIFEST || media_type == media_types::DOCKER_MANIFEST;

    if known_index || (!known_image && obj.contains_key("manifests")) {
        let list = obj.get("manifests").and_then(Value::as_array).ok_or_else(|| invalid("index needs a manifests array"))?;
        for (i, m) in list.iter().enumerate() {
            let field = format!("manifests[{i}]");
            let d = descriptor(m, &field)?;
            info.manifests.push(Referenced { digest: d.digest, size: d.size, field });
        }
    } else if known_image || obj.contains_key("config") {
        let config = descriptor(obj.get("config").ok_or_else(|| invalid("image manifest needs a config"))?, "config")?;
        if artifact_type.is_none() && media_type == media_types::OCI_MANIFEST {
            artifact_type = Some(config.media_type.clone());
        }
        info.blobs.push(Referenced { digest: config.digest, size: config.size, field: "config".into() });
        let layers = match obj.get("layers") {
            None | Some(Value::Null) if media_type != media_types::DOCKER_MANIFEST => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            _ => return Err(invalid("layers must be an array")),
        };
        for (i, l) in layers.iter().enumerate() {
            let field = format!("layers[{i}]");
            let d = descriptor(l, &field)?;
            if d.urls.as_ref().is_none_or(|u| u.is_empty()) {
                info.blobs.push(Referenced { digest: d.digest, size: d.size, field });
            }
        }
    } else {
        return Err(invalid(format!("unsupported manifest media type {media_type}")));
    }
    info.artifact_type = artifact_type;
    Ok(info)
}

fn descriptor(v: &Value, what: &str) -> Result<Descriptor> {
    let d: Descriptor = serde_json::from_value(v.clone()).map_err(|e| invalid(format!("{what}: {e}")))?;
    if d.media_type.is_empty() {
        return Err(invalid(format!("{what}: empty mediaType")));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    const L1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{CFG}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{L1}","size":5}}]{extra}}}"#,
            media_types::OCI_MANIFEST
        )
    }

    #[test]
    fn image_manifest() {
        let m = parse(image("").as_bytes(), Some(media_types::OCI_MANIFEST)).unwrap();
        assert_eq!(m.media_type, media_types::OCI_MANIFEST);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
        assert!(m.subject.is_none());
    }

    #[test]
    fn subject_and_artifact_type() {
        let extra = format!(r#","artifactType":"application/x.sig","subject":{{"mediaType":"{}","digest":"{L1}","size":9}},"annotations":{{"a":"b"}}"#, media_types::OCI_MANIFEST);
        let m = parse(image(&extra).as_bytes(), None).unwrap();
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sig"));
        assert_eq!(m.subject.unwrap().digest.to_string(), L1);
        assert_eq!(m.annotations.unwrap()["a"], "b");
    }

    #[test]
    fn index() {
        let body = format!(r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{L1}","size":7,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#, media_types::OCI_INDEX, media_types::OCI_MANIFEST);
        let m = parse(body.as_bytes(), Some(media_types::OCI_INDEX)).unwrap();
        assert_eq!(m.manifests.len(), 1);
        assert!(m.blobs.is_empty());
    }

    #[test]
    fn rejects() {
        let cases: Vec<(String, Option<&str>)> = vec![
            ("not json".into(), None),
            ("[]".into(), None),
            (r#"{"schemaVersion":1,"config":{}}"#.into(), None),
            (image("").replace("\"size\":5", "\"size\":-5"), None),
            (image("").replace(L1, "sha256:xyz"), None),
            (image(""), Some(media_types::OCI_INDEX)),
            (r#"{"schemaVersion":2}"#.into(), None),
            (r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#.into(), None),
        ];
        for (body, ct) in cases {
            assert_eq!(parse(body.as_bytes(), ct).unwrap_err().code, ErrorCode::ManifestInvalid, "{body}");
        }
        let big = vec![b' '; MAX_MANIFEST_SIZE + 1];
        assert_eq!(parse(&big, None).unwrap_err().code, ErrorCode::PayloadTooLarge);
    }

    #[test]
    fn content_type_parameters_and_json_are_tolerated() {
        assert!(parse(image("").as_bytes(), Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8")).is_ok());
        assert!(parse(image("").as_bytes(), Some("application/json")).is_ok());
    }
}
