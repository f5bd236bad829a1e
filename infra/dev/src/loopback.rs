//! What counts as this machine: the Host names the dev server answers and the app URLs it calls
//! without being told to.

use std::net::IpAddr;

/// `localhost` (and its subdomains, which browsers resolve to loopback themselves) or a loopback
/// address (`127.0.0.0/8`, `[::1]`): names no DNS answer can point elsewhere.
pub fn is_loopback_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The name and port of a Host header (`[::1]:8288` gives `[::1]` and 8288).
pub fn split_host(host: &str) -> (&str, Option<u16>) {
    match host.rfind(':') {
        Some(at) if !host[at..].contains(']') => (&host[..at], host[at + 1..].parse().ok()),
        _ => (host, None),
    }
}

/// An `http(s)` URL on a loopback name.
pub fn is_loopback_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(is_loopback_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_urls() {
        assert_eq!(split_host("[::1]:8288"), ("[::1]", Some(8288)));
        assert_eq!(split_host("[::1]"), ("[::1]", None));
        assert_eq!(split_host("localhost"), ("localhost", None));
        for name in ["localhost", "LOCALHOST", "app.localhost", "127.0.0.1", "127.1.2.3", "[::1]", "localhost."] {
            assert!(is_loopback_name(name), "{name}");
        }
        for name in ["evil.test", "localhost.evil.test", "127.0.0.1.nip.io", "0.0.0.0", "10.0.0.1", "[::]", ""] {
            assert!(!is_loopback_name(name), "{name}");
        }
        assert!(is_loopback_url("http://127.0.0.1:3000/api/inngest"));
        assert!(is_loopback_url("http://[::1]:3000/api/inngest"));
        assert!(!is_loopback_url("https://attacker.example/api/inngest"));
        assert!(!is_loopback_url("file:///etc/passwd"));
        assert!(!is_loopback_url(""));
    }
}
