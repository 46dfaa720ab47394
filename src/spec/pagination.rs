//! Pagination of tag and catalog listings: the `n` and `last` query parameters and the `Link` header pointing at the
//! next page.

use crate::error::{Error, ErrorCode, Result};

/// Most entries one page returns, whatever `n` asks for; the `Link` header leads on from there.
pub const MAX_PAGE: usize = 10_000;

/// A parsed page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// `n` as given (capped to [`MAX_PAGE`]); `None` when absent.
    pub n: Option<usize>,
    /// Entries strictly after this one.
    pub last: Option<String>,
}

impl Page {
    /// Read `n` and `last` from query pairs. A non-numeric or negative `n` is `PAGINATION_NUMBER_INVALID`.
    pub fn from_query(n: Option<&str>, last: Option<&str>) -> Result<Self> {
        let n = match n {
            None => None,
            Some(s) => {
                let v: usize = s
                    .parse()
                    .map_err(|_| Error::new(ErrorCode::PaginationNumberInvalid).with_detail(s.chars().take(40).collect::<String>()))?;
                Some(v.min(MAX_PAGE))
            }
        };
        let last = last.filter(|l| !l.is_empty()).map(str::to_string);
        Ok(Page { n, last })
    }

    /// How many entries to return.
    pub fn limit(&self) -> usize {
        self.n.unwrap_or(MAX_PAGE)
    }
}

/// The `Link` header for the next page: `<path?n=N&last=L>; rel="next"`.
pub fn next_link(path: &str, n: usize, last: &str) -> String {
    let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
    format!("<{path}?n={n}&last={last}>; rel=\"next\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(Page::from_query(Some("2"), Some("b")).unwrap(), Page { n: Some(2), last: Some("b".into()) });
        assert_eq!(Page::from_query(None, None).unwrap().limit(), MAX_PAGE);
        assert_eq!(Page::from_query(Some("0"), None).unwrap().limit(), 0);
        assert_eq!(Page::from_query(Some("99999999"), None).unwrap().limit(), MAX_PAGE);
        for bad in ["-1", "abc", "", "1.5"] {
            assert_eq!(Page::from_query(Some(bad), None).unwrap_err().code, ErrorCode::PaginationNumberInvalid);
        }
    }

    #[test]
    fn link() {
        assert_eq!(next_link("/v2/a/tags/list", 2, "b"), "</v2/a/tags/list?n=2&last=b>; rel=\"next\"");
        assert_eq!(next_link("/v2/_catalog", 1, "x/y"), "</v2/_catalog?n=1&last=x%2Fy>; rel=\"next\"");
    }
}
