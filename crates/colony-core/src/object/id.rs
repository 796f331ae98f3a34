//! Names of objects and of calls: 128-bit GUIDs, `colony://<network>/<guid>`
//! URIs (G2:P2P's `g2p2p://network/guid`, seed 004 §2), typed references
//! and call identifiers (caller GUID + counter, seed 004 §4.3).

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The URI scheme of object addresses.
pub const SCHEME: &str = "colony";

/// Longest network name a URI may carry (the descriptor's `network`).
pub const MAX_NETWORK_CHARS: usize = 64;

/// A location-independent object identifier: 128 random bits, written as 32
/// lowercase hex digits. Where an object lives follows from it
/// ([`Guid::key`]), never the other way round. In human-readable formats
/// (JSON) it is those digits, a string: JSON numbers stop at 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Guid(pub u128);

impl Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_newtype_struct("Guid", &self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Guid, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            #[derive(Deserialize)]
            #[serde(rename = "Guid")]
            struct Bits(u128);
            Bits::deserialize(deserializer).map(|bits| Guid(bits.0))
        }
    }
}

impl Guid {
    /// A new identifier from 16 random bytes (the caller's generator, so
    /// cores stay deterministic under the simulator).
    pub fn from_random(bytes: [u8; 16]) -> Guid {
        Guid(u128::from_be_bytes(bytes))
    }

    /// The identifier's position in the overlay's key space: its home is
    /// the k live peers closest to it. Hashed, so that consecutive GUIDs
    /// spread over the ring like peers' keys do.
    pub fn key(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"colony-object-v1");
        hasher.update(&self.0.to_be_bytes());
        *hasher.finalize().as_bytes()
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for Guid {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Guid, UriError> {
        let digits = s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !digits {
            return Err(UriError::BadGuid {
                found: truncated(s),
            });
        }
        u128::from_str_radix(s, 16)
            .map(Guid)
            .map_err(|_| UriError::BadGuid {
                found: truncated(s),
            })
    }
}

/// Why a string is not an object URI.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// It does not start with `colony://`.
    #[error("an object URI starts with \"colony://\"; found {found:?}")]
    BadScheme {
        /// The start of what was given.
        found: String,
    },
    /// The network name is empty, too long or has characters other than
    /// letters, digits, `-`, `_` and `.`.
    #[error("the network name in an object URI is 1 to {MAX_NETWORK_CHARS} letters, digits, '-', '_' or '.'; found {found:?}")]
    BadNetwork {
        /// The network part given.
        found: String,
    },
    /// The GUID is not 32 hex digits.
    #[error("an object's GUID is 32 hex digits; found {found:?}")]
    BadGuid {
        /// The GUID part given.
        found: String,
    },
}

/// Quotes at most 80 characters of untrusted input in an error.
fn truncated(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Where an object is: `colony://<network>/<guid>`. Printed and parsed;
/// parsing accepts uppercase hex and prints lowercase. In human-readable
/// formats (JSON) it is that string; decoding checks the network name in
/// every format.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectUri {
    /// The Colony network the object belongs to.
    pub network: String,
    /// The object.
    pub guid: Guid,
}

/// [`ObjectUri`] in binary formats.
#[derive(Serialize, Deserialize)]
#[serde(rename = "ObjectUri")]
struct UriParts<N> {
    network: N,
    guid: Guid,
}

impl Serialize for ObjectUri {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            UriParts {
                network: self.network.as_str(),
                guid: self.guid,
            }
            .serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for ObjectUri {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ObjectUri, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            let parts = UriParts::<String>::deserialize(deserializer)?;
            ObjectUri::new(&parts.network, parts.guid).map_err(serde::de::Error::custom)
        }
    }
}

impl ObjectUri {
    /// The URI of `guid` in `network`, if the network name is valid.
    pub fn new(network: &str, guid: Guid) -> Result<ObjectUri, UriError> {
        valid_network(network)?;
        Ok(ObjectUri {
            network: network.to_string(),
            guid,
        })
    }
}

fn valid_network(network: &str) -> Result<(), UriError> {
    let ok = !network.is_empty()
        && network.chars().count() <= MAX_NETWORK_CHARS
        && network
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(UriError::BadNetwork {
            found: truncated(network),
        })
    }
}

impl fmt::Display for ObjectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}://{}/{}", self.network, self.guid)
    }
}

impl FromStr for ObjectUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<ObjectUri, UriError> {
        let rest = s
            .strip_prefix(SCHEME)
            .and_then(|r| r.strip_prefix("://"))
            .ok_or_else(|| UriError::BadScheme {
                found: truncated(s),
            })?;
        let (network, guid) = rest.split_once('/').ok_or_else(|| UriError::BadGuid {
            found: String::new(),
        })?;
        valid_network(network)?;
        Ok(ObjectUri {
            network: network.to_string(),
            guid: guid.parse()?,
        })
    }
}

/// A typed reference to an object of type `T`: what applications hold,
/// pass in calls and store in their state. It serialises as the URI alone,
/// so a reference received from another peer is as good as one created
/// here; the type is checked where the object lives (a call of the wrong
/// type is refused there, never misread).
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ref<T> {
    uri: ObjectUri,
    #[serde(skip)]
    object_type: PhantomData<fn() -> T>,
}

impl<T> Ref<T> {
    /// A reference to the object at `uri`, taken to be a `T`.
    pub fn new(uri: ObjectUri) -> Ref<T> {
        Ref {
            uri,
            object_type: PhantomData,
        }
    }

    /// Where the object is.
    pub fn uri(&self) -> &ObjectUri {
        &self.uri
    }

    /// The object's identifier.
    pub fn guid(&self) -> Guid {
        self.uri.guid
    }
}

// Derives would require `T: Clone` and the like of the object type itself.
impl<T> Clone for Ref<T> {
    fn clone(&self) -> Self {
        Ref::new(self.uri.clone())
    }
}

impl<T> PartialEq for Ref<T> {
    fn eq(&self, other: &Self) -> bool {
        self.uri == other.uri
    }
}

impl<T> Eq for Ref<T> {}

impl<T> std::hash::Hash for Ref<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.uri.hash(state);
    }
}

impl<T> fmt::Debug for Ref<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ref({})", self.uri)
    }
}

impl<T> fmt::Display for Ref<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.uri.fmt(f)
    }
}

/// Who made a call and which of its calls it is: the caller's GUID (an
/// object's, or a client session's) and its counter, increasing by one per
/// call the caller makes. Unique across the network and stable across a
/// replay, so a call executed once is never executed again: the callee
/// keeps the results of recent calls by this identifier and answers a
/// retransmission or a replay's repeated call from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CallId {
    /// The calling object or session.
    pub caller: Guid,
    /// The caller's counter: 1 for its first call.
    pub seq: u64,
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.caller, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// JSON numbers stop at 64 bits: in JSON a URI (and a reference holding
    /// one) is its string, so an API client can pass references in calls;
    /// the binary form on the wire is the two fields, and a network name
    /// that is not one is refused in both.
    #[test]
    fn a_uri_is_a_string_in_json_and_two_fields_on_the_wire() {
        let uri = ObjectUri::new("lab", Guid(u128::MAX - 1)).unwrap();
        let json = serde_json::to_value(Ref::<()>::new(uri.clone())).unwrap();
        assert_eq!(json, serde_json::json!(uri.to_string()));
        let back: Ref<()> = serde_json::from_value(json).unwrap();
        assert_eq!(back.uri(), &uri);
        let guid_json = serde_json::to_value(uri.guid).unwrap();
        assert_eq!(
            guid_json,
            serde_json::json!("fffffffffffffffffffffffffffffffe")
        );
        assert!(serde_json::from_value::<ObjectUri>(serde_json::json!("colony://a b/00")).is_err());

        let bytes = postcard::to_stdvec(&uri).unwrap();
        let fields = postcard::to_stdvec(&("lab", u128::MAX - 1)).unwrap();
        assert_eq!(bytes, fields);
        assert_eq!(postcard::from_bytes::<ObjectUri>(&bytes).unwrap(), uri);
        let bad = postcard::to_stdvec(&("a b", 7u128)).unwrap();
        assert!(postcard::from_bytes::<ObjectUri>(&bad).is_err());
    }

    #[test]
    fn a_uri_prints_and_parses_back() {
        let guid = Guid::from_random([0xab; 16]);
        let uri = ObjectUri::new("lab-1.example", guid).unwrap();
        let text = uri.to_string();
        assert_eq!(
            text,
            "colony://lab-1.example/abababababababababababababababab"
        );
        assert_eq!(text.parse::<ObjectUri>().unwrap(), uri);
        // Uppercase hex is read, lowercase printed.
        let upper = "colony://lab-1.example/ABABABABABABABABABABABABABABABAB";
        assert_eq!(upper.parse::<ObjectUri>().unwrap(), uri);
    }

    #[test]
    fn malformed_uris_are_refused_with_what_is_wrong() {
        let guid = "0123456789abcdef0123456789abcdef";
        let cases = [
            (format!("http://net/{guid}"), "starts with"),
            (format!("colony:/net/{guid}"), "starts with"),
            (format!("colony:///{guid}"), "network name"),
            (format!("colony://ne t/{guid}"), "network name"),
            (
                format!("colony://{}/{guid}", "n".repeat(65)),
                "network name",
            ),
            ("colony://net".to_string(), "32 hex digits"),
            ("colony://net/".to_string(), "32 hex digits"),
            ("colony://net/0123".to_string(), "32 hex digits"),
            (format!("colony://net/{guid}0"), "32 hex digits"),
            (
                "colony://net/0123456789abcdef0123456789abcdeg".to_string(),
                "32 hex digits",
            ),
            (format!("colony://net/+{}", &guid[1..]), "32 hex digits"),
            (format!("colony://net/{guid}/x"), "32 hex digits"),
        ];
        for (text, why) in cases {
            let error = text.parse::<ObjectUri>().unwrap_err().to_string();
            assert!(error.contains(why), "{text:?}: {error}");
        }
        assert!(ObjectUri::new("", Guid(1)).is_err());
    }

    #[test]
    fn an_error_quotes_little_of_a_huge_input() {
        let huge = format!("colony://net/{}", "z".repeat(100_000));
        let error = huge.parse::<ObjectUri>().unwrap_err().to_string();
        assert!(error.len() < 200, "{}", error.len());
    }

    #[test]
    fn a_reference_serialises_as_its_uri_whatever_its_type() {
        struct NotSerialisable;
        let uri = ObjectUri::new("n", Guid(7)).unwrap();
        let typed: Ref<NotSerialisable> = Ref::new(uri.clone());
        let bytes = postcard::to_stdvec(&typed).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&uri).unwrap());
        let back: Ref<NotSerialisable> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, typed.clone());
        assert_eq!(back.guid(), Guid(7));
    }

    #[test]
    fn keys_of_neighbouring_guids_are_far_apart() {
        assert_ne!(Guid(1).key()[0..4], Guid(2).key()[0..4]);
    }

    proptest! {
        #[test]
        fn any_uri_round_trips(guid: u128, network in "[a-zA-Z0-9._-]{1,64}") {
            let uri = ObjectUri::new(&network, Guid(guid)).unwrap();
            prop_assert_eq!(uri.to_string().parse::<ObjectUri>().unwrap(), uri);
        }

        #[test]
        fn no_string_makes_the_parser_panic(s in ".{0,200}") {
            let _ = s.parse::<ObjectUri>();
        }
    }
}
