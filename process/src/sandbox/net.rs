//! Network grants as people write them (`443`, `host:port`, URLs) turned into the TCP ports
//! the kernel enforces.
//!
//! Landlock filters TCP by port, not by host, and the seccomp filter refuses every other IP
//! socket (UDP, raw, SCTP…) unless the network is `any`. A host named by a name needs name
//! resolution: such an entry also grants [`Policy::dns`](super::Policy::dns) (UDP sockets,
//! which the kernel cannot limit to the resolver, and TCP port 53). Forcing DNS over TCP
//! instead (`RES_OPTIONS=use-vc`) fails with resolvers that answer over UDP only, as this
//! project's own machines' do.

/// The port that name resolution over TCP needs.
pub const DNS_PORT: u16 = 53;

/// A network entry: the TCP port it grants, and whether its host is a name to resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetEntry {
    /// The TCP port.
    pub port: u16,
    /// Whether the host is a name the C library resolves through DNS (not an IP address,
    /// not `localhost`).
    pub resolves: bool,
}

/// What a network entry grants: `PORT`, `HOST:PORT` or a URL (80 for `http`, 443 for
/// `https` when it names none). `None` when it names no port.
pub fn parse_entry(entry: &str) -> Option<NetEntry> {
    let entry = entry.trim();
    if let Ok(port) = entry.parse::<u16>() {
        return Some(NetEntry {
            port,
            resolves: false,
        });
    }
    let (scheme, rest) = match entry.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, entry),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = match authority.rsplit_once(':') {
        // `[::1]` alone: the colon belongs to the address.
        Some((host, port)) if !host.is_empty() && !authority.ends_with(']') => {
            (host, Some(port.parse::<u16>().ok()?))
        }
        _ => (authority, None),
    };
    let port = port.or(match scheme.as_deref() {
        Some("http") | Some("ws") => Some(80),
        Some("https") | Some("wss") => Some(443),
        _ => None,
    })?;
    Some(NetEntry {
        port,
        resolves: needs_resolution(host),
    })
}

impl NetEntry {
    /// The grant this entry makes.
    pub fn policy(self) -> super::Policy {
        let mut policy = super::Policy::default().with_net(super::Net::Ports(vec![self.port]));
        policy.dns = self.resolves;
        policy
    }
}

/// Whether `host` is a name the C library resolves through DNS.
fn needs_resolution(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    !(bare.is_empty()
        || bare.parse::<std::net::IpAddr>().is_ok()
        || bare.eq_ignore_ascii_case("localhost")
        || bare.to_ascii_lowercase().ends_with(".localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_ports_host_port_and_urls_with_dns_for_names() {
        let entry = |port, resolves| Some(NetEntry { port, resolves });
        assert_eq!(parse_entry("8080"), entry(8080, false));
        assert_eq!(parse_entry("localhost:11434"), entry(11434, false));
        assert_eq!(parse_entry("127.0.0.1:8080"), entry(8080, false));
        assert_eq!(parse_entry("http://[::1]:8080/v1"), entry(8080, false));
        assert_eq!(parse_entry("https://api.anthropic.com"), entry(443, true));
        assert_eq!(
            parse_entry("https://user@models.example:8443/v1"),
            entry(8443, true)
        );
        assert_eq!(parse_entry("example.com"), None);
        assert_eq!(parse_entry("example.com:http"), None);
        assert_eq!(parse_entry(""), None);
    }
}
