//! Which remote ICE candidates a peer connection takes from its client, and how often the
//! client may restart ICE.
//!
//! Every remote candidate makes the server send connectivity checks (STUN binding requests,
//! several per candidate pair) from its media port to the address the candidate names:
//! whatever address that is. A client is free to name any address, so each connection
//! admits a bounded number of distinct addresses per ICE generation (trickled or in the
//! SDP), never the server's own media port, never addresses no peer can have (unspecified,
//! multicast, broadcast, port 0), and loopback only where loopback clients are expected.
//! An ICE restart starts a new generation, so restarts are rate-limited too.
//!
//! Candidates the server could never use are ignored without an error: TCP ones (webrtc-rs
//! 0.17 has no ICE-TCP) and mDNS hostnames (the server does not resolve `.local` names;
//! browsers also send a reflexive candidate, and peer-reflexive discovery covers the rest).
//!
//! Sans-IO: no webrtc-rs types, `now` passed in.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Why a candidate was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CandidateRefused {
    #[error("not an ICE candidate line (RFC 8839 `candidate:` attribute)")]
    Malformed,
    /// TCP: never paired (no ICE-TCP here). Ignored silently.
    #[error("TCP candidates are not used")]
    NotUdp,
    /// An mDNS or other host name. Ignored silently.
    #[error("host-name candidates are not resolved")]
    Hostname,
    #[error("candidate address {0} is not allowed")]
    Address(SocketAddr),
    #[error("more than {0} remote candidate addresses for one connection")]
    TooMany(usize),
}

impl CandidateRefused {
    /// Whether the client should hear about it: an ignored kind is not an error.
    pub fn is_reported(&self) -> bool {
        !matches!(self, CandidateRefused::NotUdp | CandidateRefused::Hostname)
    }
}

/// An ICE restart sooner than the configured interval after the last one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ICE restarts are limited to one every {0:?}")]
pub struct RestartTooSoon(pub Duration);

/// Limits on one connection's remote candidates.
#[derive(Debug, Clone)]
pub struct CandidateLimits {
    /// Distinct remote addresses per ICE generation.
    pub max_addresses: usize,
    /// Minimum time between two ICE restarts.
    pub restart_interval: Duration,
    /// Loopback addresses are admitted (clients on the server's own host).
    pub allow_loopback: bool,
    /// The server's own media addresses: a candidate naming one would have the server
    /// check itself.
    pub own_addresses: Vec<SocketAddr>,
}

/// One peer connection's remote candidates, per ICE generation.
#[derive(Debug)]
pub struct CandidatePolicy {
    limits: CandidateLimits,
    admitted: HashSet<SocketAddr>,
    /// The client's ICE username fragment of the current generation.
    ufrag: Option<String>,
    last_restart: Option<Instant>,
    /// The client was told once this generation that it is over the limit.
    over_limit_reported: bool,
}

impl CandidatePolicy {
    pub fn new(limits: CandidateLimits) -> Self {
        CandidatePolicy {
            limits,
            admitted: HashSet::new(),
            ufrag: None,
            last_restart: None,
            over_limit_reported: false,
        }
    }

    /// Addresses admitted in this generation.
    pub fn admitted(&self) -> usize {
        self.admitted.len()
    }

    /// A remote description with ICE username fragment `ufrag` is about to be applied: a
    /// new fragment is an ICE restart (a new generation, its candidates counted afresh),
    /// refused if it comes too soon after the last. Returns whether it is a restart.
    pub fn on_description(&mut self, ufrag: &str, now: Instant) -> Result<bool, RestartTooSoon> {
        self.check_description(ufrag, now)?;
        match &self.ufrag {
            Some(current) if current == ufrag => Ok(false),
            None => {
                self.ufrag = Some(ufrag.to_owned());
                Ok(false)
            }
            Some(_) => {
                self.last_restart = Some(now);
                self.ufrag = Some(ufrag.to_owned());
                self.admitted.clear();
                self.over_limit_reported = false;
                Ok(true)
            }
        }
    }

    /// What [`Self::on_description`] would say about `ufrag`, changing nothing: lets a
    /// description that has to wait be refused on arrival rather than when applied.
    pub fn check_description(&self, ufrag: &str, now: Instant) -> Result<(), RestartTooSoon> {
        let restart = self
            .ufrag
            .as_deref()
            .is_some_and(|current| current != ufrag);
        let interval = self.limits.restart_interval;
        if restart
            && self
                .last_restart
                .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            return Err(RestartTooSoon(interval));
        }
        Ok(())
    }

    /// Admits one candidate (`candidate:...`, with or without `a=`): `Ok(true)` to add it,
    /// `Ok(false)` for an address already admitted (adding it again gains nothing).
    pub fn admit(&mut self, candidate: &str) -> Result<bool, CandidateRefused> {
        let address = parse_candidate(candidate)?;
        if self.admitted.contains(&address) {
            return Ok(false);
        }
        self.check_address(address)?;
        if self.admitted.len() >= self.limits.max_addresses {
            return Err(CandidateRefused::TooMany(self.limits.max_addresses));
        }
        self.admitted.insert(address);
        Ok(true)
    }

    /// Whether to tell the client about `refused`: ignored kinds never, and being over the
    /// limit once per generation (a client that keeps trickling is not answered each time).
    pub fn should_report(&mut self, refused: &CandidateRefused) -> bool {
        match refused {
            CandidateRefused::TooMany(_) => !std::mem::replace(&mut self.over_limit_reported, true),
            other => other.is_reported(),
        }
    }

    fn check_address(&self, address: SocketAddr) -> Result<(), CandidateRefused> {
        let ip = address.ip();
        let unusable = address.port() == 0
            || ip.is_unspecified()
            || ip.is_multicast()
            || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
            || (ip.is_loopback() && !self.limits.allow_loopback)
            || self.limits.own_addresses.iter().any(|own| {
                own.port() == address.port()
                    && (own.ip() == ip || (own.ip().is_unspecified() && ip.is_loopback()))
            });
        if unusable {
            Err(CandidateRefused::Address(address))
        } else {
            Ok(())
        }
    }

    /// The description `sdp` with only the candidates this policy admits (the rest of its
    /// lines untouched), and the refusals to report.
    pub fn filter_sdp(&mut self, sdp: &str) -> (String, Vec<CandidateRefused>) {
        let mut kept = String::with_capacity(sdp.len());
        let mut refused = Vec::new();
        for line in sdp.split_inclusive('\n') {
            let attribute = line.trim_end();
            if attribute.starts_with("a=candidate:") {
                match self.admit(attribute) {
                    Ok(true) => kept.push_str(line),
                    Ok(false) => {}
                    Err(e) => {
                        if self.should_report(&e) {
                            refused.push(e);
                        }
                    }
                }
            } else {
                kept.push_str(line);
            }
        }
        (kept, refused)
    }
}

/// The ICE username fragment of a description (`a=ice-ufrag:`; with BUNDLE every section
/// has the same one).
pub fn sdp_ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
}

/// The transport address of a candidate line: `candidate:<foundation> <component>
/// <transport> <priority> <address> <port> typ <type> ...` (RFC 8839 5.1).
fn parse_candidate(line: &str) -> Result<SocketAddr, CandidateRefused> {
    let line = line.trim();
    let line = line.strip_prefix("a=").unwrap_or(line);
    let fields = line
        .strip_prefix("candidate:")
        .ok_or(CandidateRefused::Malformed)?;
    let mut fields = fields.split_ascii_whitespace();
    let (Some(_foundation), Some(_component), Some(transport), Some(_priority)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(CandidateRefused::Malformed);
    };
    let (Some(address), Some(port), Some("typ"), Some(_type)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(CandidateRefused::Malformed);
    };
    let port: u16 = port.parse().map_err(|_| CandidateRefused::Malformed)?;
    if !transport.eq_ignore_ascii_case("udp") {
        return Err(CandidateRefused::NotUdp);
    }
    match address.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, port)),
        Err(_) if address.contains('.') || address.contains(':') => Err(CandidateRefused::Hostname),
        Err(_) => Err(CandidateRefused::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> CandidateLimits {
        CandidateLimits {
            max_addresses: 3,
            restart_interval: Duration::from_secs(5),
            allow_loopback: true,
            own_addresses: vec!["0.0.0.0:7882".parse().unwrap()],
        }
    }

    fn host(address: &str, port: u16) -> String {
        format!("candidate:1 1 udp 2130706431 {address} {port} typ host")
    }

    #[test]
    fn parses_what_browsers_send() {
        let cases = [
            (
                "candidate:842163049 1 udp 1677729535 203.0.113.9 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag sE9n network-cost 999",
                Ok("203.0.113.9:46154".parse().unwrap()),
            ),
            (
                "a=candidate:1 1 UDP 2122252543 2001:db8::1 50000 typ host",
                Ok("[2001:db8::1]:50000".parse().unwrap()),
            ),
            (
                "candidate:3 1 udp 2122262783 1f4712db-ea17-4bcf-a596-105139dfd8bf.local 54400 typ host",
                Err(CandidateRefused::Hostname),
            ),
            (
                "candidate:4 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active",
                Err(CandidateRefused::NotUdp),
            ),
            ("candidate:1 1 udp 1 10.0.0.1 99999 typ host", Err(CandidateRefused::Malformed)),
            ("candidate:1 1 udp", Err(CandidateRefused::Malformed)),
            ("1 1 udp 1 10.0.0.1 9 typ host", Err(CandidateRefused::Malformed)),
            ("candidate:1 1 udp 1 nonsense 9 typ host", Err(CandidateRefused::Malformed)),
            ("candidate:1 1 udp 1 10.0.0.1 9 type host", Err(CandidateRefused::Malformed)),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_candidate(line), expected, "{line}");
        }
    }

    #[test]
    fn distinct_addresses_are_capped_per_generation() {
        let t0 = Instant::now();
        let mut p = CandidatePolicy::new(limits());
        assert_eq!(p.on_description("aaaa", t0), Ok(false));
        assert_eq!(p.admit(&host("10.0.0.1", 1000)), Ok(true));
        assert_eq!(p.admit(&host("10.0.0.1", 1000)), Ok(false), "a duplicate");
        assert_eq!(p.admit(&host("10.0.0.1", 1001)), Ok(true));
        assert_eq!(p.admit(&host("10.0.0.2", 1000)), Ok(true));
        let too_many = p.admit(&host("10.0.0.3", 1000)).unwrap_err();
        assert_eq!(too_many, CandidateRefused::TooMany(3));
        assert!(p.should_report(&too_many));
        assert!(!p.should_report(&too_many), "reported once");
        assert_eq!(p.admitted(), 3);
        // Same fragment: no restart, still full.
        assert_eq!(p.on_description("aaaa", t0), Ok(false));
        assert!(p.admit(&host("10.0.0.4", 1000)).is_err());
        // A restart is a new generation...
        assert_eq!(p.on_description("bbbb", t0), Ok(true));
        assert_eq!(p.admitted(), 0);
        assert_eq!(p.admit(&host("10.0.0.4", 1000)), Ok(true));
        // ... but not sooner than the interval after the last one.
        let soon = t0 + Duration::from_secs(4);
        assert_eq!(
            p.check_description("cccc", soon),
            Err(RestartTooSoon(Duration::from_secs(5))),
            "told before it is applied"
        );
        assert_eq!(p.check_description("bbbb", soon), Ok(()), "not a restart");
        assert_eq!(
            p.on_description("cccc", soon),
            Err(RestartTooSoon(Duration::from_secs(5)))
        );
        assert_eq!(p.admitted(), 1, "a refused restart changes nothing");
        assert_eq!(
            p.on_description("cccc", t0 + Duration::from_secs(5)),
            Ok(true)
        );
    }

    #[test]
    fn addresses_no_peer_can_have_are_refused() {
        let mut p = CandidatePolicy::new(limits());
        for (address, port) in [
            ("0.0.0.0", 5000),
            ("10.0.0.1", 0),
            ("224.0.0.251", 5353),
            ("255.255.255.255", 9),
            ("127.0.0.1", 7882), // the server's own media port
            ("::", 5000),
            ("ff02::1", 5000),
        ] {
            let refused = p.admit(&host(address, port)).unwrap_err();
            assert!(matches!(refused, CandidateRefused::Address(_)), "{address}");
            assert!(p.should_report(&refused));
        }
        assert_eq!(p.admit(&host("127.0.0.1", 40000)), Ok(true));
        let mut production = CandidatePolicy::new(CandidateLimits {
            allow_loopback: false,
            ..limits()
        });
        assert!(production.admit(&host("127.0.0.1", 6379)).is_err());
        assert!(production.admit(&host("::1", 6379)).is_err());
        assert_eq!(production.admit(&host("192.0.2.7", 6379)), Ok(true));
    }

    #[test]
    fn sdp_keeps_only_admitted_candidates() {
        let t0 = Instant::now();
        let mut p = CandidatePolicy::new(limits());
        let mut sdp =
            String::from("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:abcd\r\n");
        for port in 1000..1010 {
            sdp.push_str(&format!("a={}\r\n", host("10.0.0.1", port)));
        }
        sdp.push_str("a=candidate:9 1 tcp 1 10.0.0.1 9 typ host tcptype active\r\n");
        sdp.push_str("a=end-of-candidates\r\n");
        assert_eq!(sdp_ice_ufrag(&sdp), Some("abcd"));
        assert_eq!(p.on_description("abcd", t0), Ok(false));
        let (kept, refused) = p.filter_sdp(&sdp);
        assert_eq!(kept.matches("a=candidate:").count(), 3);
        assert!(kept.contains("a=end-of-candidates\r\n"));
        assert!(kept.starts_with("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:abcd\r\n"));
        assert_eq!(
            refused,
            vec![CandidateRefused::TooMany(3)],
            "once, TCP silently"
        );
    }
}
