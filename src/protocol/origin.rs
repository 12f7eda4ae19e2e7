//! The `Origin` header as browsers serialize it, and the allow-list
//! entries it is matched against (`--allow-origin`). Imports nothing from the
//! crate: `config` checks the entries with it, `admission` matches requests.

/// An `Origin` value: scheme, host and port (the scheme's default when absent).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Reads a serialized origin (RFC 6454 section 6.2) strictly, as a browser
    /// sends it: `scheme://host[:port]`, the port 1 to 65535 in digits only
    /// (no sign, no leading zero), the host a DNS name (letters, digits, `-`,
    /// `_`, and `.` between non-empty labels) or a bracketed IPv6 address. Anything else (a `\`, a space, a
    /// path, user info) is not an origin. Case does not matter.
    pub(crate) fn parse(s: &str) -> Option<Origin> {
        let s = s.trim().to_ascii_lowercase();
        let (scheme, rest) = s.split_once("://")?;
        let default = match scheme {
            "http" | "ws" => 80,
            "https" | "wss" => 443,
            _ => return None,
        };
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (addr, after) = v6.split_once(']')?;
                if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
                    return None;
                }
                (&rest[..addr.len() + 2], after)
            }
            None => {
                let end = rest.find(':').unwrap_or(rest.len());
                let host = &rest[..end];
                let name = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
                // No empty label: `..example.org` is no name a browser sends.
                if !host.bytes().all(name) || host.split('.').any(str::is_empty) {
                    return None;
                }
                (host, &rest[end..])
            }
        };
        let port = match port.strip_prefix(':') {
            None if port.is_empty() => default,
            None => return None,
            Some(digits) => {
                let plain = !digits.is_empty() && digits.len() <= 5 && !digits.starts_with('0');
                if !plain || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                digits.parse().ok()?
            }
        };
        Some(Origin { scheme: scheme.to_owned(), host: host.to_owned(), port })
    }

    /// Reads an allow-list entry: an origin as [`parse`](Self::parse) reads
    /// it, a trailing `/` tolerated, and `*.` before the domain for any of
    /// its subdomains.
    pub(crate) fn parse_pattern(pattern: &str) -> Option<Origin> {
        Origin::parse(&pattern.trim_end_matches('/').replacen("*.", "wildcard-sub.", 1))
    }

    /// Matches `scheme://host[:port]` exactly, or `scheme://*.domain[:port]`
    /// for any subdomain of `domain` (not `domain` itself).
    pub(crate) fn matches(&self, pattern: &str) -> bool {
        let Some(p) = Origin::parse_pattern(pattern) else { return false };
        if p.scheme != self.scheme || p.port != self.port {
            return false;
        }
        match p.host.strip_prefix("wildcard-sub.") {
            Some(domain) if pattern.contains("*.") => {
                self.host.len() > domain.len() + 1 && self.host.ends_with(&format!(".{domain}"))
            }
            _ => p.host == self.host,
        }
    }
}
