//! What the operator grants a plugin beyond the always-granted imports
//! (`[plugins]`' `capabilities`): which capabilities, and the URL
//! allow-list of `http`. Checked when the section is read; the host imports
//! ask these checks before they touch the network or the disk. Pure, and
//! tested here without wasmtime, sockets or files.

/// The capabilities the operator granted one plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// URL prefixes `http-post` may reach; empty means the `http` capability is not granted.
    pub http_allow: Vec<AllowedUrl>,
    pub archive: bool,
    pub credentials: bool,
}

/// One allow-list entry: a scheme, host and port, and a path prefix that
/// matches only at a `/` boundary (`https://h/a` allows `/a` and `/a/b`, not `/ab`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedUrl {
    url: ParsedUrl,
    raw: String,
}

impl AllowedUrl {
    pub fn parse(raw: &str) -> Result<AllowedUrl, String> {
        let url = ParsedUrl::parse(raw)?;
        if url.has_query {
            return Err(format!("allow-list entry {raw:?} must not have a query"));
        }
        Ok(AllowedUrl {
            url,
            raw: raw.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    fn allows(&self, url: &ParsedUrl) -> bool {
        let prefix = self.url.path.trim_end_matches('/');
        self.url.scheme == url.scheme
            && self.url.host == url.host
            && self.url.port == url.port
            && (prefix.is_empty()
                || url.path == prefix
                || url
                    .path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/')))
    }
}

/// The parts of an `http(s)://` URL the allow-list compares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParsedUrl {
    scheme: &'static str,
    /// Lower-cased.
    host: String,
    port: u16,
    /// Always starts with `/`.
    path: String,
    has_query: bool,
}

impl ParsedUrl {
    fn parse(raw: &str) -> Result<ParsedUrl, String> {
        let bad = |why: &str| format!("{raw:?} is not an allowed URL: {why}");
        if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("it contains spaces or control characters"));
        }
        let (scheme, rest, default_port) = if let Some(rest) = strip_prefix_ci(raw, "http://") {
            ("http", rest, 80)
        } else if let Some(rest) = strip_prefix_ci(raw, "https://") {
            ("https", rest, 443)
        } else {
            return Err(bad("only http:// and https:// are allowed"));
        };
        let rest = rest.split('#').next().unwrap_or("");
        let (authority, path_and_query) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad("user names and passwords in URLs are not allowed"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("bad host or port"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let (path, has_query) = match path_and_query.split_once('?') {
            Some((path, _)) => (path, true),
            None => (path_and_query, false),
        };
        // `..` and percent-encoded dots could walk out of an allowed prefix
        // on the receiving server, so they never match.
        let lowered = path.to_ascii_lowercase();
        if path.split('/').any(|s| s == ".." || s == ".") || lowered.contains("%2e") {
            return Err(bad("dot segments are not allowed in the path"));
        }
        // Nor separators in disguise: a server that decodes `%2f` (or takes
        // `\` for `/`) would see segments the allow-list never compared.
        if lowered.contains("%2f") || lowered.contains("%5c") || path.contains('\\') {
            return Err(bad(
                "encoded slashes (%2f, %5c) and backslashes are not allowed in the path",
            ));
        }
        let path = if path.is_empty() { "/" } else { path };
        Ok(ParsedUrl {
            scheme,
            host: host.to_ascii_lowercase(),
            port: port.unwrap_or(default_port),
            path: path.to_owned(),
            has_query,
        })
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((authority, None)),
    }
}

impl Capabilities {
    /// `Ok(())` when `http-post` may send to `url`; otherwise the `denied: …` sentence.
    /// `scheme://host:port` of `url`, what a log line may say of it: the
    /// path and query of a webhook URL often carry its secret.
    pub fn origin_of(url: &str) -> String {
        ParsedUrl::parse(url).map_or_else(
            |_| "(not an allowed URL)".to_owned(),
            |p| format!("{}://{}:{}", p.scheme, p.host, p.port),
        )
    }

    pub fn check_http(&self, url: &str) -> Result<(), String> {
        if self.http_allow.is_empty() {
            return Err("denied: this plugin has not been granted the http capability".into());
        }
        let parsed = ParsedUrl::parse(url).map_err(|e| format!("denied: {e}"))?;
        if self.http_allow.iter().any(|a| a.allows(&parsed)) {
            Ok(())
        } else {
            Err(format!("denied: {url} is not on this plugin's allow-list"))
        }
    }

    pub fn check_archive(&self) -> Result<(), String> {
        if self.archive {
            Ok(())
        } else {
            Err("denied: this plugin has not been granted the archive capability".into())
        }
    }

    pub fn check_credentials(&self, in_before_clear: bool) -> Result<(), String> {
        if !self.credentials {
            Err("denied: this plugin has not been granted the credentials capability".into())
        } else if !in_before_clear {
            Err("denied: credentials can only be read in before-clear".into())
        } else {
            Ok(())
        }
    }

    /// Names of the granted capabilities, for `GET /api/plugins`.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if !self.http_allow.is_empty() {
            names.push("http".to_owned());
        }
        if self.archive {
            names.push("archive".to_owned());
        }
        if self.credentials {
            names.push("credentials".to_owned());
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(allow: &[&str]) -> Capabilities {
        Capabilities {
            http_allow: allow
                .iter()
                .map(|a| AllowedUrl::parse(a).unwrap())
                .collect(),
            ..Capabilities::default()
        }
    }

    fn check_url(allow: &[&str], url: &str, allowed: bool) {
        let result = caps(allow).check_http(url);
        assert_eq!(result.is_ok(), allowed, "{allow:?} vs {url}: {result:?}");
        if let Err(e) = result {
            assert!(e.starts_with("denied:"), "{e}");
        }
    }

    #[test]
    fn a_log_line_names_only_the_origin_of_a_webhook_url() {
        assert_eq!(
            Capabilities::origin_of("https://hooks.slack.com/services/T000/B000/SECRET?x=1"),
            "https://hooks.slack.com:443"
        );
        assert_eq!(Capabilities::origin_of("ftp://x"), "(not an allowed URL)");
    }

    #[test]
    fn urls_match_the_allow_list_by_origin_and_path_prefix() {
        let list = &["https://hooks.example.com/lila"];
        check_url(list, "https://hooks.example.com/lila", true);
        check_url(list, "https://HOOKS.example.com/lila/tenant?x=1", true);
        check_url(list, "https://hooks.example.com:443/lila", true);
        check_url(list, "https://hooks.example.com/lilac", false);
        check_url(list, "https://hooks.example.com/", false);
        check_url(list, "http://hooks.example.com/lila", false);
        check_url(list, "https://hooks.example.com:8443/lila", false);
        check_url(list, "https://hooks.example.com.evil.net/lila", false);
        check_url(list, "https://hooks.example.com@evil.net/lila", false);
        check_url(
            list,
            "https://evil.net/lila?https://hooks.example.com/lila",
            false,
        );
        check_url(list, "https://hooks.example.com/lila/../admin", false);
        check_url(list, "https://hooks.example.com/lila/%2e%2e/admin", false);
        check_url(list, "https://hooks.example.com/lila%2f..%2fadmin", false);
        check_url(list, "https://hooks.example.com/lila/x%2Fy", false);
        check_url(list, "https://hooks.example.com/lila/x%5cy", false);
        check_url(list, "https://hooks.example.com/lila\\..\\admin", false);
        check_url(list, "ftp://hooks.example.com/lila", false);
        check_url(list, "https://hooks.example.com/lila x", false);
        check_url(
            &["http://127.0.0.1:8080"],
            "http://127.0.0.1:8080/any/path",
            true,
        );
        check_url(&["http://127.0.0.1:8080"], "http://127.0.0.1:8081/", false);
        check_url(&["http://[::1]:9000/h"], "http://[::1]:9000/h", true);
        check_url(&[], "https://hooks.example.com/lila", false);
    }

    #[test]
    fn capabilities_not_granted_are_denied() {
        let none = Capabilities::default();
        assert!(none.check_archive().unwrap_err().starts_with("denied:"));
        assert!(
            none.check_credentials(true)
                .unwrap_err()
                .starts_with("denied:")
        );
        let creds = Capabilities {
            credentials: true,
            ..Capabilities::default()
        };
        assert!(creds.check_credentials(true).is_ok());
        assert!(
            creds
                .check_credentials(false)
                .unwrap_err()
                .starts_with("denied:")
        );
    }
}
