//! Just enough XML reading for S3 and Azure Blob responses: the text of named elements (`<Key>`, `<UploadId>`,
//! `<Code>`, `<NextMarker>`, …) and the elements of a repeated container (`<Contents>`, `<Blob>`). The services'
//! documents are flat, machine-written and small, so a scanner over the text does; no DTDs, namespaces are ignored,
//! and an element never contains another element of its own name in the documents read here.

/// The raw inner text of every `<name>…</name>` (or `<name/>`, as "") in `xml`, in document order.
pub fn elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = xml;
    let close = format!("</{name}>");
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let Some(tail) = rest.strip_prefix(name) else { continue };
        // The name must end here: `>`, `/>`, or whitespace before attributes.
        let Some(end) = tail.find('>') else { break };
        let tag_rest = &tail[..end];
        if !(tag_rest.is_empty() || tag_rest.starts_with(char::is_whitespace) || tag_rest.starts_with('/')) {
            continue;
        }
        let body = &tail[end + 1..];
        if tag_rest.ends_with('/') {
            out.push("");
            rest = body;
            continue;
        }
        match body.find(&close) {
            Some(j) => {
                out.push(&body[..j]);
                rest = &body[j + close.len()..];
            }
            None => break,
        }
    }
    out
}

/// The decoded text of the first `<name>` in `xml`.
pub fn text(xml: &str, name: &str) -> Option<String> {
    elements(xml, name).first().map(|s| unescape(s))
}

/// Decode the predefined entities, numeric character references and CDATA sections.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['&', '<']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(cdata) = rest.strip_prefix("<![CDATA[") {
            match cdata.find("]]>") {
                Some(j) => {
                    out.push_str(&cdata[..j]);
                    rest = &cdata[j + 3..];
                }
                None => {
                    out.push_str(cdata);
                    rest = "";
                }
            }
            continue;
        }
        if rest.starts_with('<') {
            out.push('<');
            rest = &rest[1..];
            continue;
        }
        let Some(semi) = rest.find(';').filter(|j| *j <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escape text for an element body.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_repeated_and_single_elements() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><KeyCount>2</KeyCount>
<Contents><Key>a&amp;b</Key><Size>3</Size></Contents><Contents><Key>c/d</Key><Size>4</Size></Contents>
<IsTruncated>true</IsTruncated><NextContinuationToken>tok/+=</NextContinuationToken><KeyMarker/></ListBucketResult>"#;
        let contents = elements(xml, "Contents");
        assert_eq!(contents.len(), 2);
        assert_eq!(text(contents[0], "Key").unwrap(), "a&b");
        assert_eq!(text(contents[1], "Key").unwrap(), "c/d");
        assert_eq!(text(xml, "IsTruncated").unwrap(), "true");
        assert_eq!(text(xml, "NextContinuationToken").unwrap(), "tok/+=");
        assert_eq!(text(xml, "KeyMarker").unwrap(), "");
        assert_eq!(text(xml, "Missing"), None);
        // `<Key>` does not match `<KeyCount>` nor `<KeyMarker/>`.
        assert_eq!(elements(xml, "Key").len(), 2);
    }

    #[test]
    fn attributes_entities_and_cdata() {
        assert_eq!(elements(r#"<Blob a="1"><Name>x</Name></Blob>"#, "Blob"), ["<Name>x</Name>"]);
        assert_eq!(unescape("&lt;&#65;&#x42;&quot;&apos;&gt;&bogus;&"), "<AB\"'>&bogus;&");
        assert_eq!(unescape("a<![CDATA[<b>&amp;]]>c"), "a<b>&amp;c");
        assert_eq!(escape("<a&'\">"), "&lt;a&amp;&apos;&quot;&gt;");
        assert_eq!(unescape(&escape("x<&>y")), "x<&>y");
    }
}
