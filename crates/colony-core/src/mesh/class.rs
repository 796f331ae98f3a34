//! Traffic classes of the mesh and the fault-tolerance policies that say
//! which of them are replicated (seed 001 §III-B.2, §IV: FT_ALL, FT_EVENT,
//! FT_EVENT+VIDEO, NO_FT).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::pipe::TrafficClass;

/// A kind of traffic on the mesh, each on its own channel with its own
/// priority. On the wire a class is one byte, its [`StreamClass::code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum StreamClass {
    /// Mesh maintenance: joins, binds, acknowledgements. Always reliable.
    Mesh,
    /// Events (alarms, failures): small, urgent.
    Event,
    /// Audio frames.
    Audio,
    /// Video frames.
    Video,
}

/// Why a name or code is not a traffic class or a policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClassError {
    /// The name is not one of `mesh`, `event`, `audio`, `video`.
    #[error("unknown traffic class {found:?}: use mesh, event, audio or video")]
    UnknownClass {
        /// What was given (at most 40 characters).
        found: String,
    },
    /// The wire code is not a known class.
    #[error("unknown traffic class code {code}: known codes are 0 (mesh) to 3 (video)")]
    UnknownCode {
        /// The code.
        code: u8,
    },
    /// The name is not one of the fault-tolerance policies.
    #[error(
        "unknown fault-tolerance policy {found:?}: use no_ft, ft_event, ft_event_video or ft_all"
    )]
    UnknownPolicy {
        /// What was given (at most 40 characters).
        found: String,
    },
}

impl StreamClass {
    /// Every class, most urgent first.
    pub const ALL: [StreamClass; 4] = [
        StreamClass::Mesh,
        StreamClass::Event,
        StreamClass::Audio,
        StreamClass::Video,
    ];

    /// The classes sensors stream (all but mesh).
    pub const DATA: [StreamClass; 3] = [StreamClass::Event, StreamClass::Audio, StreamClass::Video];

    /// Its priority (higher is more urgent): the seed's mesh 10, events 3,
    /// audio and video 1.
    pub fn priority(self) -> u8 {
        match self {
            StreamClass::Mesh => 10,
            StreamClass::Event => 3,
            StreamClass::Audio | StreamClass::Video => 1,
        }
    }

    /// The pipe class (priority) its frames travel with.
    pub fn traffic_class(self) -> TrafficClass {
        TrafficClass(self.priority())
    }

    /// Its one-byte code on the wire.
    pub fn code(self) -> u8 {
        match self {
            StreamClass::Mesh => 0,
            StreamClass::Event => 1,
            StreamClass::Audio => 2,
            StreamClass::Video => 3,
        }
    }

    /// The class of a wire code, if known.
    pub fn from_code(code: u8) -> Option<StreamClass> {
        StreamClass::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Its name, as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            StreamClass::Mesh => "mesh",
            StreamClass::Event => "event",
            StreamClass::Audio => "audio",
            StreamClass::Video => "video",
        }
    }
}

impl TryFrom<u8> for StreamClass {
    type Error = ClassError;

    fn try_from(code: u8) -> Result<StreamClass, ClassError> {
        StreamClass::from_code(code).ok_or(ClassError::UnknownCode { code })
    }
}

impl From<StreamClass> for u8 {
    fn from(class: StreamClass) -> u8 {
        class.code()
    }
}

impl fmt::Display for StreamClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Lowercase, with `-` and `+` read as `_`, so `FT_EVENT+VIDEO`,
/// `ft-event-video` and `ft_event_video` are one name.
fn normalised(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| match c {
            '-' | '+' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

impl FromStr for StreamClass {
    type Err = ClassError;

    /// Accepts the names and their plurals (`events`).
    fn from_str(s: &str) -> Result<StreamClass, ClassError> {
        match normalised(s).as_str() {
            "mesh" => Ok(StreamClass::Mesh),
            "event" | "events" => Ok(StreamClass::Event),
            "audio" => Ok(StreamClass::Audio),
            "video" => Ok(StreamClass::Video),
            _ => Err(ClassError::UnknownClass {
                found: s.chars().take(40).collect(),
            }),
        }
    }
}

/// Which classes are actively replicated in the cells (and buffered by
/// children until acknowledged): the seed's four scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FtPolicy {
    /// Only mesh traffic is reliable; a relay's death loses the frames it
    /// held.
    NoFt,
    /// Events too.
    FtEvent,
    /// Events and video.
    FtEventVideo,
    /// Every class.
    FtAll,
}

impl FtPolicy {
    /// Every policy, from least to most protection.
    pub const ALL: [FtPolicy; 4] = [
        FtPolicy::NoFt,
        FtPolicy::FtEvent,
        FtPolicy::FtEventVideo,
        FtPolicy::FtAll,
    ];

    /// Whether frames of `class` are replicated and kept until
    /// acknowledged. Mesh traffic always is.
    pub fn replicates(self, class: StreamClass) -> bool {
        match class {
            StreamClass::Mesh => true,
            StreamClass::Event => self != FtPolicy::NoFt,
            StreamClass::Video => matches!(self, FtPolicy::FtEventVideo | FtPolicy::FtAll),
            StreamClass::Audio => self == FtPolicy::FtAll,
        }
    }

    /// Its name, as the CLI and the bench's tables spell it.
    pub fn name(self) -> &'static str {
        match self {
            FtPolicy::NoFt => "no_ft",
            FtPolicy::FtEvent => "ft_event",
            FtPolicy::FtEventVideo => "ft_event_video",
            FtPolicy::FtAll => "ft_all",
        }
    }
}

impl fmt::Display for FtPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FtPolicy {
    type Err = ClassError;

    /// Accepts the seed's spellings too (`NO_FT`, `FT_EVENT+VIDEO`), and
    /// `none` / `all`.
    fn from_str(s: &str) -> Result<FtPolicy, ClassError> {
        match normalised(s).as_str() {
            "no_ft" | "none" => Ok(FtPolicy::NoFt),
            "ft_event" => Ok(FtPolicy::FtEvent),
            "ft_event_video" => Ok(FtPolicy::FtEventVideo),
            "ft_all" | "all" => Ok(FtPolicy::FtAll),
            _ => Err(ClassError::UnknownPolicy {
                found: s.chars().take(40).collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_the_seeds() {
        assert_eq!(StreamClass::Mesh.priority(), 10);
        assert_eq!(StreamClass::Event.priority(), 3);
        assert_eq!(StreamClass::Audio.priority(), 1);
        assert_eq!(StreamClass::Video.priority(), 1);
        assert_eq!(StreamClass::Mesh.traffic_class(), TrafficClass::MESH);
        assert_eq!(StreamClass::Event.traffic_class(), TrafficClass::EVENTS);
    }

    #[test]
    fn policies_replicate_the_seeds_classes() {
        use StreamClass::*;
        let table = [
            (FtPolicy::NoFt, [true, false, false, false]),
            (FtPolicy::FtEvent, [true, true, false, false]),
            (FtPolicy::FtEventVideo, [true, true, false, true]),
            (FtPolicy::FtAll, [true, true, true, true]),
        ];
        for (policy, expected) in table {
            let got = [Mesh, Event, Audio, Video].map(|c| policy.replicates(c));
            assert_eq!(got, expected, "{policy}");
        }
    }

    #[test]
    fn names_parse_and_print() {
        for class in StreamClass::ALL {
            assert_eq!(class.name().parse::<StreamClass>(), Ok(class));
            assert_eq!(StreamClass::from_code(class.code()), Some(class));
        }
        for policy in FtPolicy::ALL {
            assert_eq!(policy.to_string().parse::<FtPolicy>(), Ok(policy));
        }
        assert_eq!("FT_EVENT+VIDEO".parse(), Ok(FtPolicy::FtEventVideo));
        assert_eq!("NO_FT".parse(), Ok(FtPolicy::NoFt));
        assert_eq!("Events".parse(), Ok(StreamClass::Event));
    }

    #[test]
    fn unknown_names_and_codes_are_errors() {
        assert!(matches!(
            "smell".parse::<StreamClass>(),
            Err(ClassError::UnknownClass { .. })
        ));
        assert!(matches!(
            "ft_audio".parse::<FtPolicy>(),
            Err(ClassError::UnknownPolicy { .. })
        ));
        assert_eq!(StreamClass::from_code(4), None);
        assert_eq!(
            StreamClass::try_from(200),
            Err(ClassError::UnknownCode { code: 200 })
        );
        assert!(postcard::from_bytes::<StreamClass>(&[7]).is_err());
        let long = "x".repeat(1000);
        match long.parse::<StreamClass>() {
            Err(ClassError::UnknownClass { found }) => assert_eq!(found.len(), 40),
            other => panic!("{other:?}"),
        }
    }
}
