//! Which IP addresses are "private" in the sense of a grant's `allow_private`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The IPv4 address an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) stands for, else `ip`.
///
/// The kernel connects `::ffff:127.0.0.1` to 127.0.0.1, so every check must see the IPv4 form.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Whether a URL's host needs the explicit private approval by its text alone: a non-public
/// IP literal, or `localhost` (and names under it). A name that only resolves to a private
/// address is found out when it is resolved, not here.
pub fn is_private_url_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        url::Host::Ipv4(ip) => non_public_kind(IpAddr::V4(*ip)).is_some(),
        url::Host::Ipv6(ip) => non_public_kind(canonical_ip(IpAddr::V6(*ip))).is_some(),
    }
}

/// The kind of non-public address `ip` is (as used in error messages), or `None` if it is an
/// ordinary public unicast address. `ip` must already be canonical.
pub(crate) fn non_public_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_broadcast() => "broadcast",
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (100, 64..=127, _) => "shared (CGNAT)",
        (169, 254, _) => "link-local",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 0, 0) | (198, 18..=19, _) | (240..=255, _, _) => "reserved",
        (224..=239, _, _) => "multicast",
        _ => return None,
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses carry an IPv4 address that a
    // gateway will connect to, so they are as private as the address they embed.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = seg[6].to_be_bytes();
        let [c, d] = seg[7].to_be_bytes();
        return v4_kind(Ipv4Addr::new(a, b, c, d));
    }
    if seg[0] == 0x2002 {
        let [a, b] = seg[1].to_be_bytes();
        let [c, d] = seg[2].to_be_bytes();
        return v4_kind(Ipv4Addr::new(a, b, c, d));
    }
    Some(match seg[0] {
        // ::/96 (IPv4-compatible, deprecated) and the rest of ::/8 are not globally routable.
        0 => "reserved",
        s if s & 0xfe00 == 0xfc00 => "private",
        s if s & 0xffc0 == 0xfe80 => "link-local",
        // Site-local (fec0::/10) is deprecated but still means "inside this site".
        s if s & 0xffc0 == 0xfec0 => "private",
        s if s & 0xff00 == 0xff00 => "multicast",
        0x2001 if seg[1] == 0x0db8 => "documentation",
        0x3fff if seg[1] & 0xf000 == 0 => "documentation",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> Option<&'static str> {
        non_public_kind(canonical_ip(s.parse().unwrap()))
    }

    #[test]
    fn classifies_non_public_ranges() {
        for (addr, expected) in [
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("fc00::1", "private"),
            ("fd12:3456::1", "private"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("64:ff9b::7f00:1", "loopback"),
            ("2002:a00:1::", "private"),
        ] {
            assert_eq!(kind(addr), Some(expected), "{addr}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "8.8.8.8",
            "2606:4700::1111",
        ] {
            assert_eq!(kind(addr), None, "{addr}");
        }
    }
}
