//! Cell identifiers (seed 001 §III-B.4): the root cell is `0`, its children
//! `01`..`0k`, their children `011`..`01k`, and so on, for a tree of span
//! `k` (at most 9, one decimal digit per level). A CellId and a peer id
//! fully locate a super-peer in the mesh.

use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Largest span a tree may have: one decimal digit per level.
pub const MAX_SPAN: u8 = 9;

/// Most characters a CellId has, the leading `0` included (the seed's
/// 32-byte CellId string): the root's level is 0, the deepest level 31.
pub const MAX_CELL_ID_CHARS: usize = 32;

/// A cell's place in the tree. Ordered breadth-first: by level, then by
/// digits, so a sorted map of cells lists the root first and each level
/// left to right.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CellId {
    /// The digits after the leading `0`, each in `1..=MAX_SPAN`.
    digits: Vec<u8>,
}

/// Why a string (or a decoded value) is not a CellId.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CellIdError {
    /// Nothing was given.
    #[error("a CellId is not empty: it starts with the root cell \"0\"")]
    Empty,
    /// The first character is not `0` (the root).
    #[error("a CellId starts with the root cell \"0\"; found {found:?}")]
    NoLeadingZero {
        /// The start of what was given.
        found: String,
    },
    /// A character is not a decimal digit.
    #[error("a CellId has only decimal digits; found {found:?} at position {position}")]
    NotADigit {
        /// The offending character.
        found: char,
        /// Its position (0 is the leading `0`).
        position: usize,
    },
    /// A digit after the root is 0 or above the tree's span.
    #[error(
        "digit {digit} at position {position} of a CellId is outside 1..={span} (the tree's span)"
    )]
    DigitOutsideSpan {
        /// The digit.
        digit: u8,
        /// Its position (0 is the leading `0`).
        position: usize,
        /// The span it was checked against.
        span: u8,
    },
    /// The CellId is longer than [`MAX_CELL_ID_CHARS`].
    #[error("a CellId has at most {max} characters; found {found}")]
    TooDeep {
        /// Its length.
        found: usize,
        /// The limit.
        max: usize,
    },
    /// The span is outside `1..=MAX_SPAN`.
    #[error("a tree's span is 1..={MAX_SPAN}; found {span}")]
    BadSpan {
        /// The span given.
        span: u8,
    },
}

/// Quotes at most 40 characters of untrusted input in an error.
fn quoted(s: &str) -> String {
    s.chars().take(40).collect()
}

impl CellId {
    /// The root cell, `0`.
    pub fn root() -> CellId {
        CellId { digits: Vec::new() }
    }

    /// Parses `s` for a tree of span `span`: every digit after the leading
    /// `0` must be in `1..=span`.
    pub fn parse_with_span(s: &str, span: u8) -> Result<CellId, CellIdError> {
        if span == 0 || span > MAX_SPAN {
            return Err(CellIdError::BadSpan { span });
        }
        let mut chars = s.chars();
        match chars.next() {
            None => return Err(CellIdError::Empty),
            Some('0') => {}
            Some(_) => return Err(CellIdError::NoLeadingZero { found: quoted(s) }),
        }
        let count = s.chars().count();
        if count > MAX_CELL_ID_CHARS {
            return Err(CellIdError::TooDeep {
                found: count,
                max: MAX_CELL_ID_CHARS,
            });
        }
        let mut digits = Vec::with_capacity(count - 1);
        for (index, c) in chars.enumerate() {
            let position = index + 1;
            let Some(value) = c.to_digit(10) else {
                return Err(CellIdError::NotADigit { found: c, position });
            };
            // A decimal digit: at most 9.
            let digit = value as u8;
            if digit == 0 || digit > span {
                return Err(CellIdError::DigitOutsideSpan {
                    digit,
                    position,
                    span,
                });
            }
            digits.push(digit);
        }
        Ok(CellId { digits })
    }

    /// The cell's level: 0 for the root, 1 for its children, ...
    pub fn level(&self) -> usize {
        self.digits.len()
    }

    /// Whether this is the root cell.
    pub fn is_root(&self) -> bool {
        self.digits.is_empty()
    }

    /// The digits after the leading `0`, each in `1..=span`.
    pub fn digits(&self) -> &[u8] {
        &self.digits
    }

    /// The cell above, or `None` for the root.
    pub fn parent(&self) -> Option<CellId> {
        let (_, rest) = self.digits.split_last()?;
        Some(CellId {
            digits: rest.to_vec(),
        })
    }

    /// Child `index` (in `1..=span`), or `None` if the index is outside
    /// that range or the child would be deeper than [`MAX_CELL_ID_CHARS`].
    pub fn child(&self, index: u8, span: u8) -> Option<CellId> {
        let fits =
            (1..=span.min(MAX_SPAN)).contains(&index) && self.digits.len() + 1 < MAX_CELL_ID_CHARS;
        fits.then(|| {
            let mut digits = self.digits.clone();
            digits.push(index);
            CellId { digits }
        })
    }

    /// The children in a tree of span `span`, in order (none at the
    /// deepest level).
    pub fn children(&self, span: u8) -> Vec<CellId> {
        (1..=span.min(MAX_SPAN))
            .filter_map(|i| self.child(i, span))
            .collect()
    }

    /// Whether this cell is a strict ancestor of `other` (the root is an
    /// ancestor of every other cell; no cell is its own ancestor).
    pub fn is_ancestor_of(&self, other: &CellId) -> bool {
        self.digits.len() < other.digits.len() && other.digits.starts_with(&self.digits)
    }

    /// The cell's position in Colony's key space: the cell record lives on
    /// the home of this key. Hashed with its own domain, like object GUIDs.
    pub fn key(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"colony-cell-v1");
        hasher.update(self.to_string().as_bytes());
        *hasher.finalize().as_bytes()
    }
}

impl Ord for CellId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.digits
            .len()
            .cmp(&other.digits.len())
            .then_with(|| self.digits.cmp(&other.digits))
    }
}

impl PartialOrd for CellId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0")?;
        for digit in &self.digits {
            write!(f, "{digit}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CellId({self})")
    }
}

impl FromStr for CellId {
    type Err = CellIdError;

    /// Parses a CellId of any span up to [`MAX_SPAN`]; use
    /// [`CellId::parse_with_span`] to check a tree's span too.
    fn from_str(s: &str) -> Result<CellId, CellIdError> {
        CellId::parse_with_span(s, MAX_SPAN)
    }
}

impl TryFrom<String> for CellId {
    type Error = CellIdError;

    fn try_from(s: String) -> Result<CellId, CellIdError> {
        s.parse()
    }
}

impl From<CellId> for String {
    fn from(cell: CellId) -> String {
        cell.to_string()
    }
}

/// The cell a new super-peer binds to (the `GetCell` of `RequestCell`,
/// seed 001 Listing 2): breadth-first from the root, the first cell with
/// fewer than `peers_per_cell` super-peers in `occupancy` (a cell missing
/// from it is empty), so the top of the tree fills first and a level's
/// children are created in order once it is full. `None` if `span` or
/// `peers_per_cell` is 0, or every cell down to the deepest level is full.
/// Every peer holding the same occupancy computes the same cell.
pub fn place_super_peer(
    occupancy: &BTreeMap<CellId, usize>,
    peers_per_cell: usize,
    span: u8,
) -> Option<CellId> {
    if peers_per_cell == 0 || span == 0 || span > MAX_SPAN {
        return None;
    }
    let mut queue = VecDeque::from([CellId::root()]);
    // Only full cells are expanded, and they are in `occupancy`: the walk
    // visits at most `span` cells per entry, plus the root.
    while let Some(cell) = queue.pop_front() {
        let members = occupancy.get(&cell).copied().unwrap_or(0);
        if members < peers_per_cell {
            return Some(cell);
        }
        queue.extend(cell.children(span));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(s: &str) -> CellId {
        match s.parse() {
            Ok(cell) => cell,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn display_and_parse_round_trip() {
        for s in ["0", "01", "02", "011", "0129", "0999"] {
            assert_eq!(cell(s).to_string(), s);
        }
        assert_eq!(CellId::root().to_string(), "0");
        let deepest = format!("0{}", "1".repeat(MAX_CELL_ID_CHARS - 1));
        assert_eq!(cell(&deepest).level(), MAX_CELL_ID_CHARS - 1);
    }

    #[test]
    fn malformed_strings_name_what_is_wrong() {
        assert_eq!("".parse::<CellId>(), Err(CellIdError::Empty));
        assert!(matches!(
            "1".parse::<CellId>(),
            Err(CellIdError::NoLeadingZero { .. })
        ));
        assert!(matches!(
            "é0".parse::<CellId>(),
            Err(CellIdError::NoLeadingZero { .. })
        ));
        assert_eq!(
            "01x".parse::<CellId>(),
            Err(CellIdError::NotADigit {
                found: 'x',
                position: 2
            })
        );
        assert_eq!(
            "010".parse::<CellId>(),
            Err(CellIdError::DigitOutsideSpan {
                digit: 0,
                position: 2,
                span: 9
            })
        );
        assert_eq!(
            CellId::parse_with_span("013", 2),
            Err(CellIdError::DigitOutsideSpan {
                digit: 3,
                position: 2,
                span: 2
            })
        );
        assert_eq!(
            CellId::parse_with_span("01", 0),
            Err(CellIdError::BadSpan { span: 0 })
        );
        let too_deep = format!("0{}", "1".repeat(MAX_CELL_ID_CHARS));
        assert_eq!(
            too_deep.parse::<CellId>(),
            Err(CellIdError::TooDeep {
                found: MAX_CELL_ID_CHARS + 1,
                max: MAX_CELL_ID_CHARS
            })
        );
        // A non-ASCII digit is not a decimal digit here.
        assert!(matches!(
            "0١".parse::<CellId>(),
            Err(CellIdError::NotADigit { .. })
        ));
        // Errors print as a sentence.
        assert!(CellIdError::Empty.to_string().contains("\"0\""));
    }

    #[test]
    fn tree_relations() {
        let root = CellId::root();
        assert!(root.is_root());
        assert_eq!(root.level(), 0);
        assert_eq!(root.parent(), None);
        assert_eq!(root.children(2), vec![cell("01"), cell("02")]);
        assert_eq!(cell("012").parent(), Some(cell("01")));
        assert_eq!(cell("012").level(), 2);
        assert!(root.is_ancestor_of(&cell("012")));
        assert!(cell("01").is_ancestor_of(&cell("012")));
        assert!(!cell("01").is_ancestor_of(&cell("01")));
        assert!(!cell("02").is_ancestor_of(&cell("012")));
        assert!(!cell("012").is_ancestor_of(&cell("01")));
        assert_eq!(cell("01").child(3, 2), None);
        assert_eq!(cell("01").child(0, 2), None);
        let deepest = cell(&format!("0{}", "1".repeat(MAX_CELL_ID_CHARS - 1)));
        assert!(deepest.children(2).is_empty());
    }

    #[test]
    fn order_is_breadth_first() {
        let mut cells = [cell("011"), cell("02"), cell("0"), cell("01"), cell("021")];
        cells.sort();
        let printed: Vec<String> = cells.iter().map(ToString::to_string).collect();
        assert_eq!(printed, ["0", "01", "02", "011", "021"]);
    }

    #[test]
    fn serde_validates_on_decode() {
        let bytes = postcard::to_allocvec(&cell("0121")).unwrap_or_default();
        let back: Result<CellId, _> = postcard::from_bytes(&bytes);
        assert_eq!(back.ok(), Some(cell("0121")));
        for bad in ["", "1", "00", "01a", &"0".repeat(100)] {
            let bytes = postcard::to_allocvec(&bad.to_string()).unwrap_or_default();
            assert!(
                postcard::from_bytes::<CellId>(&bytes).is_err(),
                "{bad:?} decoded"
            );
        }
        // Truncated and garbage bytes are errors too, never a panic.
        assert!(postcard::from_bytes::<CellId>(&[]).is_err());
        assert!(postcard::from_bytes::<CellId>(&[0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(postcard::from_bytes::<CellId>(&[2, b'0', 0xc3]).is_err());
        assert!(serde_json::from_str::<CellId>("\"03x\"").is_err());
    }

    #[test]
    fn keys_differ_per_cell_and_are_stable() {
        assert_ne!(cell("01").key(), cell("02").key());
        assert_ne!(cell("0").key(), cell("01").key());
        assert_eq!(cell("012").key(), cell("012").key());
    }

    #[test]
    fn placement_fills_the_tree_breadth_first() {
        // Span 2, 2 per cell: 14 super-peers fill the 7 cells of 3 levels
        // in the order 0 0 01 01 02 02 011 011 012 012 021 021 022 022.
        let mut occupancy = BTreeMap::new();
        let mut placed = Vec::new();
        for _ in 0..14 {
            let Some(cell) = place_super_peer(&occupancy, 2, 2) else {
                panic!("no cell");
            };
            *occupancy.entry(cell.clone()).or_insert(0) += 1;
            placed.push(cell.to_string());
        }
        assert_eq!(
            placed,
            [
                "0", "0", "01", "01", "02", "02", "011", "011", "012", "012", "021", "021", "022",
                "022"
            ]
        );
        // A hole left by a departure is filled first.
        occupancy.insert(cell("02"), 1);
        assert_eq!(place_super_peer(&occupancy, 2, 2), Some(cell("02")));
        // The next free cell after a full tree of 3 levels is on level 3.
        occupancy.insert(cell("02"), 2);
        assert_eq!(place_super_peer(&occupancy, 2, 2), Some(cell("0111")));
        assert_eq!(place_super_peer(&occupancy, 0, 2), None);
        assert_eq!(place_super_peer(&occupancy, 2, 0), None);
        assert_eq!(place_super_peer(&occupancy, 2, 10), None);
    }
}
