//! The envelope of data-channel messages relayed by the server (docs/protocol.md, "Data
//! messages").
//!
//! A client sends on its publisher connection's `_reliable` or `_lossy` channel a
//! [`ClientData`] envelope: an optional topic and optional destination identities ahead of
//! its payload. The server relays the payload in a [`relayed`] envelope on each receiver's
//! subscriber connection, stamped with the sender's participant id and identity from the
//! session (never from the client). Both are binary, so a file chunk travels without
//! base64; a flag says whether the payload is UTF-8 text. Sans-IO: bytes in, bytes out.

use thiserror::Error;

/// The envelope version this server reads and writes.
pub const DATA_VERSION: u8 = 1;
/// Flag: the payload is UTF-8 text (the receiver's SDK hands it over as a string).
pub const FLAG_TEXT: u8 = 0x01;
/// Longest topic, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Most destination identities in one message.
pub const MAX_DESTINATIONS: usize = 64;

/// The channel labels a client opens on its publisher connection (and the server on each
/// subscriber connection).
pub const RELIABLE_LABEL: &str = "_reliable";
pub const LOSSY_LABEL: &str = "_lossy";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DataError {
    #[error("empty message: a data message starts with its envelope (version {DATA_VERSION})")]
    Empty,
    #[error("envelope version {0} is not supported (this server speaks {DATA_VERSION})")]
    Version(u8),
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
    #[error("the envelope ends inside its {0}")]
    Truncated(&'static str),
    #[error("the {0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("topic of {0} bytes; at most {MAX_TOPIC_BYTES}")]
    TopicTooLong(usize),
    #[error("{0} destinations; at most {MAX_DESTINATIONS}")]
    TooManyDestinations(usize),
    #[error("empty destination identity")]
    EmptyDestination,
}

/// A client's data message, borrowed from the bytes it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientData<'a> {
    pub text: bool,
    /// `None` when the client sent no topic.
    pub topic: Option<&'a str>,
    /// Who should receive it; empty means everyone else in the room.
    pub destinations: Destinations<'a>,
    pub payload: &'a [u8],
}

/// The destination identities of a [`ClientData`], validated at parse time and read
/// without allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinations<'a> {
    count: usize,
    bytes: &'a [u8],
}

impl<'a> Destinations<'a> {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        let mut rest = self.bytes;
        (0..self.count).map(move |_| {
            let (identity, tail) = take_str(rest, "destination").expect("validated at parse");
            rest = tail;
            identity
        })
    }

    pub fn contains(&self, identity: &str) -> bool {
        self.iter().any(|d| d == identity)
    }
}

fn take_u16<'a>(bytes: &'a [u8], what: &'static str) -> Result<(usize, &'a [u8]), DataError> {
    match bytes {
        [hi, lo, rest @ ..] => Ok((usize::from(u16::from_be_bytes([*hi, *lo])), rest)),
        _ => Err(DataError::Truncated(what)),
    }
}

fn take_str<'a>(bytes: &'a [u8], what: &'static str) -> Result<(&'a str, &'a [u8]), DataError> {
    let (len, rest) = take_u16(bytes, what)?;
    if rest.len() < len {
        return Err(DataError::Truncated(what));
    }
    let (text, rest) = rest.split_at(len);
    let text = std::str::from_utf8(text).map_err(|_| DataError::NotUtf8(what))?;
    Ok((text, rest))
}

impl<'a> ClientData<'a> {
    /// Reads a client's envelope:
    ///
    /// ```text
    /// u8 version (1) | u8 flags | u16 topic length | topic (UTF-8)
    /// | u16 destination count | per destination: u16 length | identity (UTF-8)
    /// | payload (to the end)
    /// ```
    /// All integers big-endian; an empty topic means none.
    pub fn parse(bytes: &'a [u8]) -> Result<ClientData<'a>, DataError> {
        let [version, flags, rest @ ..] = bytes else {
            return Err(match bytes.is_empty() {
                true => DataError::Empty,
                false => DataError::Truncated("header"),
            });
        };
        if *version != DATA_VERSION {
            return Err(DataError::Version(*version));
        }
        if flags & !FLAG_TEXT != 0 {
            return Err(DataError::Flags(*flags));
        }
        let (topic, rest) = take_str(rest, "topic")?;
        if topic.len() > MAX_TOPIC_BYTES {
            return Err(DataError::TopicTooLong(topic.len()));
        }
        let (count, rest) = take_u16(rest, "destination count")?;
        if count > MAX_DESTINATIONS {
            return Err(DataError::TooManyDestinations(count));
        }
        let start = rest;
        let mut rest = rest;
        for _ in 0..count {
            let (identity, tail) = take_str(rest, "destination")?;
            if identity.is_empty() {
                return Err(DataError::EmptyDestination);
            }
            rest = tail;
        }
        let destinations = Destinations {
            count,
            bytes: &start[..start.len() - rest.len()],
        };
        let text = flags & FLAG_TEXT != 0;
        if text && std::str::from_utf8(rest).is_err() {
            return Err(DataError::NotUtf8("text payload"));
        }
        Ok(ClientData {
            text,
            topic: (!topic.is_empty()).then_some(topic),
            destinations,
            payload: rest,
        })
    }
}

/// The size of the [`relayed`] envelope around a payload of `payload` bytes.
pub fn relayed_len(
    participant_id: &str,
    identity: &str,
    topic: Option<&str>,
    payload: usize,
) -> usize {
    2 + 2 + participant_id.len() + 2 + identity.len() + 2 + topic.map_or(0, str::len) + payload
}

/// The envelope a receiver gets, written once per message whatever the number of
/// receivers:
///
/// ```text
/// u8 version (1) | u8 flags | u16 length | sender's participant id
/// | u16 length | sender's identity | u16 length | topic | payload (to the end)
/// ```
pub fn relayed(
    participant_id: &str,
    identity: &str,
    topic: Option<&str>,
    text: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(relayed_len(participant_id, identity, topic, payload.len()));
    out.push(DATA_VERSION);
    out.push(if text { FLAG_TEXT } else { 0 });
    for field in [participant_id, identity, topic.unwrap_or("")] {
        // Ids, identities and topics are bounded far below 64 KiB where they are accepted.
        let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&field.as_bytes()[..usize::from(len)]);
    }
    out.extend_from_slice(payload);
    out
}

/// A relayed envelope read back (what a receiving SDK does; the tests use it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedData<'a> {
    pub participant_id: &'a str,
    pub identity: &'a str,
    pub topic: Option<&'a str>,
    pub text: bool,
    pub payload: &'a [u8],
}

impl<'a> RelayedData<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<RelayedData<'a>, DataError> {
        let [version, flags, rest @ ..] = bytes else {
            return Err(DataError::Truncated("header"));
        };
        if *version != DATA_VERSION {
            return Err(DataError::Version(*version));
        }
        let (participant_id, rest) = take_str(rest, "participant id")?;
        let (identity, rest) = take_str(rest, "identity")?;
        let (topic, payload) = take_str(rest, "topic")?;
        Ok(RelayedData {
            participant_id,
            identity,
            topic: (!topic.is_empty()).then_some(topic),
            text: flags & FLAG_TEXT != 0,
            payload,
        })
    }
}

/// A client envelope (what a sending SDK does; the tests use it).
pub fn client_envelope(
    text: bool,
    topic: Option<&str>,
    destinations: &[&str],
    payload: &[u8],
) -> Vec<u8> {
    let mut out = vec![DATA_VERSION, if text { FLAG_TEXT } else { 0 }];
    let topic = topic.unwrap_or("");
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(&(destinations.len() as u16).to_be_bytes());
    for d in destinations {
        out.extend_from_slice(&(d.len() as u16).to_be_bytes());
        out.extend_from_slice(d.as_bytes());
    }
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_envelope_reads_back_with_its_topic_destinations_and_payload() {
        let bytes = client_envelope(true, Some("chat"), &["ada", "grace"], "hello ✓".as_bytes());
        let m = ClientData::parse(&bytes).unwrap();
        assert!(m.text);
        assert_eq!(m.topic, Some("chat"));
        assert_eq!(m.destinations.iter().collect::<Vec<_>>(), ["ada", "grace"]);
        assert!(m.destinations.contains("grace") && !m.destinations.contains("gra"));
        assert_eq!(m.payload, "hello ✓".as_bytes());

        let bare = client_envelope(false, None, &[], &[0, 255, 7]);
        let m = ClientData::parse(&bare).unwrap();
        assert_eq!(
            (m.text, m.topic, m.destinations.is_empty()),
            (false, None, true)
        );
        assert_eq!(m.payload, [0, 255, 7]);
    }

    #[test]
    fn malformed_envelopes_are_refused_with_what_is_wrong() {
        let ok = client_envelope(false, Some("t"), &["ada"], b"x");
        assert_eq!(ClientData::parse(&[]), Err(DataError::Empty));
        assert_eq!(ClientData::parse(&[1]), Err(DataError::Truncated("header")));
        assert_eq!(
            ClientData::parse(&[2, 0, 0, 0, 0, 0]),
            Err(DataError::Version(2))
        );
        assert_eq!(
            ClientData::parse(&[1, 0x80, 0, 0, 0, 0]),
            Err(DataError::Flags(0x80))
        );
        // Every cut inside the header or a destination is noticed.
        for cut in 2..ok.len() - 1 {
            assert!(
                matches!(ClientData::parse(&ok[..cut]), Err(DataError::Truncated(_))),
                "cut at {cut}: {:?}",
                ClientData::parse(&ok[..cut])
            );
        }
        let long_topic = "t".repeat(MAX_TOPIC_BYTES + 1);
        assert_eq!(
            ClientData::parse(&client_envelope(false, Some(&long_topic), &[], b"")),
            Err(DataError::TopicTooLong(MAX_TOPIC_BYTES + 1))
        );
        let many: Vec<String> = (0..=MAX_DESTINATIONS).map(|i| format!("p{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            ClientData::parse(&client_envelope(false, None, &many, b"")),
            Err(DataError::TooManyDestinations(MAX_DESTINATIONS + 1))
        );
        assert_eq!(
            ClientData::parse(&client_envelope(false, None, &[""], b"")),
            Err(DataError::EmptyDestination)
        );
        assert_eq!(
            ClientData::parse(&client_envelope(true, None, &[], &[0xff, 0xfe])),
            Err(DataError::NotUtf8("text payload"))
        );
        assert_eq!(
            ClientData::parse(&[1, 0, 0, 2, 0xff, 0xfe, 0, 0]),
            Err(DataError::NotUtf8("topic"))
        );
    }

    #[test]
    fn the_relayed_envelope_carries_the_senders_names_and_the_payload_unchanged() {
        let bytes = relayed("PA_1", "ada", Some("file"), false, &[1, 2, 3]);
        assert_eq!(bytes.len(), relayed_len("PA_1", "ada", Some("file"), 3));
        let m = RelayedData::parse(&bytes).unwrap();
        assert_eq!(
            m,
            RelayedData {
                participant_id: "PA_1",
                identity: "ada",
                topic: Some("file"),
                text: false,
                payload: &[1, 2, 3],
            }
        );
        let text = relayed("PA_1", "ada", None, true, b"hi");
        let m = RelayedData::parse(&text).unwrap();
        assert_eq!((m.topic, m.text, m.payload), (None, true, &b"hi"[..]));
    }
}
