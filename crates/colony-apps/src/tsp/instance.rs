//! TSPLIB instances: the parser for `TYPE: TSP`, `EDGE_WEIGHT_TYPE: EUC_2D`
//! files, the distance matrix and the nearest-neighbour lists the local
//! search works from.

use std::fmt::Write as _;
use std::iter::Peekable;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The most cities an instance may have. The distance matrix holds
/// `n² × 4` bytes: 400 MB at this bound.
pub const MAX_CITIES: usize = 10_000;

/// The fewest cities an instance may have: a tour needs three.
pub const MIN_CITIES: usize = 3;

/// The largest absolute value a coordinate may have, so that every
/// distance (at most `2·√2·10⁹`) fits a `u32`.
pub const MAX_COORDINATE: f64 = 1e9;

/// How many nearest cities each city's neighbour list holds (fewer when the
/// instance is smaller).
pub const NEIGHBOUR_COUNT: usize = 12;

/// The largest TSPLIB file [`Instance::load`] reads (a file of
/// [`MAX_CITIES`] lines of coordinates is well under it).
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Published optimal tour lengths of TSPLIB instances, by name and size.
const KNOWN_OPTIMA: &[(&str, usize, u64)] = &[
    ("eil51", 51, 426),
    ("berlin52", 52, 7542),
    ("st70", 70, 675),
    ("eil76", 76, 538),
    ("kroA100", 100, 21282),
    ("ch130", 130, 6110),
    ("a280", 280, 2579),
];

/// Why a TSPLIB text (or a list of coordinates) is not an instance. Line
/// numbers start at 1.
#[derive(Debug, Error)]
pub enum TspError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said (in the message, not as a source, so a
        /// chain of causes says it once).
        reason: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{path} has {bytes} bytes, more than the {max} a TSPLIB file may have here")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// [`MAX_FILE_BYTES`].
        max: u64,
    },
    /// `TYPE` is not `TSP` (ATSP, HCP, CVRP, TOUR… are not handled).
    #[error("line {line}: TYPE {found:?} is not supported (only TSP)")]
    UnsupportedType {
        /// The line of `TYPE`.
        line: usize,
        /// The type given.
        found: String,
    },
    /// `EDGE_WEIGHT_TYPE` is not `EUC_2D`.
    #[error("line {line}: EDGE_WEIGHT_TYPE {found:?} is not supported (only EUC_2D)")]
    UnsupportedEdgeWeightType {
        /// The line of `EDGE_WEIGHT_TYPE`.
        line: usize,
        /// The type given.
        found: String,
    },
    /// The file has no `EDGE_WEIGHT_TYPE`.
    #[error("no EDGE_WEIGHT_TYPE (EUC_2D expected)")]
    MissingEdgeWeightType,
    /// `DIMENSION` was not given before the node coordinates.
    #[error("line {line}: NODE_COORD_SECTION comes before any DIMENSION")]
    MissingDimension {
        /// The line of `NODE_COORD_SECTION`.
        line: usize,
    },
    /// `DIMENSION` is not a whole number.
    #[error("line {line}: DIMENSION {value:?} is not a whole number")]
    InvalidDimension {
        /// The line of `DIMENSION`.
        line: usize,
        /// The value given.
        value: String,
    },
    /// `DIMENSION` is outside [`MIN_CITIES`]`..=`[`MAX_CITIES`].
    #[error("line {line}: DIMENSION {dimension} is outside {min}..={max}")]
    DimensionOutOfRange {
        /// The line of `DIMENSION`.
        line: usize,
        /// The dimension given.
        dimension: u64,
        /// [`MIN_CITIES`].
        min: usize,
        /// [`MAX_CITIES`].
        max: usize,
    },
    /// A specification keyword appears twice.
    #[error("line {line}: {key} is given twice")]
    DuplicateKeyword {
        /// The second line giving it.
        line: usize,
        /// The keyword.
        key: String,
    },
    /// The file has no `NODE_COORD_SECTION`.
    #[error("no NODE_COORD_SECTION")]
    MissingNodeCoordSection,
    /// A line that is neither `KEY: value`, a section, `EOF` nor blank.
    #[error("line {line}: unexpected {text:?}")]
    UnexpectedLine {
        /// The line.
        line: usize,
        /// Its text (cut to 80 characters).
        text: String,
    },
    /// A node line does not have three fields: id, x and y.
    #[error("line {line}: a node is `id x y`, found {fields} field(s)")]
    MalformedNodeLine {
        /// The line.
        line: usize,
        /// How many fields it has.
        fields: usize,
    },
    /// A field that should be a number is not one (or is not finite).
    #[error("line {line}: {text:?} is not a valid {what}")]
    MalformedNumber {
        /// The line.
        line: usize,
        /// What the field is (node id, x coordinate, y coordinate).
        what: &'static str,
        /// The field (cut to 80 characters).
        text: String,
    },
    /// A coordinate's magnitude exceeds [`MAX_COORDINATE`].
    #[error("line {line}: coordinate {value} is beyond ±{max}")]
    CoordinateOutOfRange {
        /// The line.
        line: usize,
        /// The coordinate.
        value: f64,
        /// [`MAX_COORDINATE`].
        max: f64,
    },
    /// A node id is 0 or larger than `DIMENSION`.
    #[error("line {line}: node id {id} is outside 1..={dimension}")]
    NodeIdOutOfRange {
        /// The line.
        line: usize,
        /// The id.
        id: u64,
        /// The dimension.
        dimension: usize,
    },
    /// Two nodes share an id.
    #[error("line {line}: node id {id} was already given on line {first_line}")]
    DuplicateNodeId {
        /// The second line with the id.
        line: usize,
        /// The id.
        id: u64,
        /// The first line with the id.
        first_line: usize,
    },
    /// The section does not hold exactly `DIMENSION` nodes.
    #[error("line {line}: NODE_COORD_SECTION has {found} node(s), DIMENSION says {expected}")]
    CoordinateCountMismatch {
        /// The line where the mismatch showed (the extra node, or the end
        /// of the section).
        line: usize,
        /// `DIMENSION`.
        expected: usize,
        /// Nodes found (for too many: `DIMENSION + 1`, where reading stopped).
        found: usize,
    },
    /// An instance built from coordinates has a wrong number of cities.
    #[error("{count} cities: an instance has {min}..={max}")]
    CityCountOutOfRange {
        /// The number of cities.
        count: usize,
        /// [`MIN_CITIES`].
        min: usize,
        /// [`MAX_CITIES`].
        max: usize,
    },
    /// A coordinate given to [`Instance::from_coordinates`] is not finite or
    /// beyond [`MAX_COORDINATE`].
    #[error("city {city}: coordinate {value} is not finite or beyond ±{max}")]
    InvalidCoordinate {
        /// The city (0-based).
        city: usize,
        /// The coordinate.
        value: f64,
        /// [`MAX_COORDINATE`].
        max: f64,
    },
}

/// A symmetric TSP instance with Euclidean distances rounded to the nearest
/// integer (TSPLIB `EUC_2D`).
///
/// Cities are numbered from 0 here: TSPLIB's node `k` is city `k - 1`.
/// Tours are permutations of `0..dimension` as `u32`.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    name: String,
    comment: Option<String>,
    coordinates: Vec<[f64; 2]>,
    /// Row-major `dimension × dimension` matrix.
    distances: Vec<u32>,
    /// For each city, its nearest cities, closest first (ties by index):
    /// `neighbours_per_city` entries per city.
    neighbours: Vec<u32>,
    neighbours_per_city: usize,
}

/// What the parser has read of the specification part.
#[derive(Default)]
struct Header {
    name: Option<String>,
    comment: Option<String>,
    dimension: Option<usize>,
    edge_weight_type_given: bool,
    type_given: bool,
}

/// A line's text cut to a length fit for an error message.
fn excerpt(text: &str) -> String {
    text.chars().take(80).collect()
}

impl Instance {
    /// Parses a TSPLIB file of `TYPE: TSP` with `EDGE_WEIGHT_TYPE: EUC_2D`
    /// and a `NODE_COORD_SECTION`.
    ///
    /// Keywords may have spaces around `:`; `NAME`, `COMMENT`, `TYPE`,
    /// `DIMENSION`, `EDGE_WEIGHT_TYPE` are read, other specification
    /// keywords (`DISPLAY_DATA_TYPE`…) are ignored. Coordinates may be
    /// integers or decimals; node ids must be exactly `1..=DIMENSION`, in
    /// any order. Reading stops at `EOF` or the end of the text. Any
    /// malformed input is an error naming its line, never a panic.
    pub fn parse(text: &str) -> Result<Instance, TspError> {
        let mut header = Header::default();
        let mut coordinates: Option<Vec<[f64; 2]>> = None;
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(index, line)| (index + 1, line.trim()))
            .peekable();

        while let Some((line_number, line)) = lines.next() {
            if line.is_empty() {
                continue;
            }
            let (key, value) = match line.split_once(':') {
                Some((key, value)) => (key.trim(), value.trim()),
                None => (line, ""),
            };
            let key = key.to_ascii_uppercase();
            match key.as_str() {
                "EOF" if value.is_empty() => break,
                "NODE_COORD_SECTION" if value.is_empty() => {
                    if coordinates.is_some() {
                        return Err(TspError::DuplicateKeyword {
                            line: line_number,
                            key,
                        });
                    }
                    let Some(dimension) = header.dimension else {
                        return Err(TspError::MissingDimension { line: line_number });
                    };
                    coordinates = Some(read_node_section(&mut lines, dimension, line_number)?);
                }
                _ if line.contains(':') => {
                    handle_keyword(&mut header, line_number, key, value)?;
                }
                _ => {
                    return Err(TspError::UnexpectedLine {
                        line: line_number,
                        text: excerpt(line),
                    })
                }
            }
        }

        if !header.edge_weight_type_given {
            return Err(TspError::MissingEdgeWeightType);
        }
        let coordinates = coordinates.ok_or(TspError::MissingNodeCoordSection)?;
        let mut instance = Self::build(coordinates);
        instance.name = header.name.unwrap_or_default();
        instance.comment = header.comment;
        Ok(instance)
    }

    /// Reads and parses a TSPLIB file (see [`Instance::parse`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Instance, TspError> {
        let path = path.as_ref();
        let io_error = |reason| TspError::Io {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::metadata(path).map_err(io_error)?.len();
        if bytes > MAX_FILE_BYTES {
            return Err(TspError::FileTooLarge {
                path: path.to_path_buf(),
                bytes,
                max: MAX_FILE_BYTES,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io_error)?;
        Self::parse(&text)
    }

    /// An instance of the given cities (`[x, y]`, city `i` at index `i`),
    /// named `name`.
    pub fn from_coordinates(
        name: impl Into<String>,
        coordinates: Vec<[f64; 2]>,
    ) -> Result<Instance, TspError> {
        if !(MIN_CITIES..=MAX_CITIES).contains(&coordinates.len()) {
            return Err(TspError::CityCountOutOfRange {
                count: coordinates.len(),
                min: MIN_CITIES,
                max: MAX_CITIES,
            });
        }
        for (city, point) in coordinates.iter().enumerate() {
            for &value in point {
                if !value.is_finite() || value.abs() > MAX_COORDINATE {
                    return Err(TspError::InvalidCoordinate {
                        city,
                        value,
                        max: MAX_COORDINATE,
                    });
                }
            }
        }
        let mut instance = Self::build(coordinates);
        instance.name = name.into();
        Ok(instance)
    }

    /// The instance of checked coordinates: distances and neighbour lists.
    fn build(coordinates: Vec<[f64; 2]>) -> Instance {
        let dimension = coordinates.len();
        let mut distances = vec![0u32; dimension * dimension];
        for (from, a) in coordinates.iter().enumerate() {
            for (to, b) in coordinates.iter().enumerate().skip(from + 1) {
                let distance = euc_2d(*a, *b);
                distances[from * dimension + to] = distance;
                distances[to * dimension + from] = distance;
            }
        }
        let neighbours_per_city = NEIGHBOUR_COUNT.min(dimension.saturating_sub(1));
        let mut neighbours = Vec::with_capacity(dimension * neighbours_per_city);
        let mut others: Vec<(u32, u32)> = Vec::with_capacity(dimension);
        for city in 0..dimension {
            others.clear();
            let row = &distances[city * dimension..(city + 1) * dimension];
            others.extend(
                row.iter()
                    .enumerate()
                    .filter(|&(other, _)| other != city)
                    .map(|(other, &distance)| (distance, other as u32)),
            );
            if others.len() > neighbours_per_city && neighbours_per_city > 0 {
                others.select_nth_unstable(neighbours_per_city - 1);
            }
            let nearest = &mut others[..neighbours_per_city];
            nearest.sort_unstable();
            neighbours.extend(nearest.iter().map(|&(_, other)| other));
        }
        Instance {
            name: String::new(),
            comment: None,
            coordinates,
            distances,
            neighbours,
            neighbours_per_city,
        }
    }

    /// The `NAME` of the instance (empty if the file had none).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `COMMENT` of the instance, if any.
    pub fn comment(&self) -> Option<&str> {
        self.comment.as_deref()
    }

    /// The number of cities.
    pub fn dimension(&self) -> usize {
        self.coordinates.len()
    }

    /// The cities' coordinates, city `i` at index `i`.
    pub fn coordinates(&self) -> &[[f64; 2]] {
        &self.coordinates
    }

    /// The TSPLIB `EUC_2D` distance between two cities.
    ///
    /// # Panics
    ///
    /// If a city is not below [`Instance::dimension`].
    #[inline]
    pub fn distance(&self, from: u32, to: u32) -> u32 {
        self.distances[from as usize * self.coordinates.len() + to as usize]
    }

    /// The nearest cities of `city`, closest first (at most
    /// [`NEIGHBOUR_COUNT`]).
    ///
    /// # Panics
    ///
    /// If `city` is not below [`Instance::dimension`].
    #[inline]
    pub fn neighbours(&self, city: u32) -> &[u32] {
        let start = city as usize * self.neighbours_per_city;
        &self.neighbours[start..start + self.neighbours_per_city]
    }

    /// The published optimal tour length, for the TSPLIB instances this
    /// crate knows (eil51, berlin52, st70, eil76, kroA100, ch130, a280), by
    /// name and number of cities.
    pub fn known_optimum(&self) -> Option<u64> {
        KNOWN_OPTIMA
            .iter()
            .find(|&&(name, dimension, _)| name == self.name && dimension == self.dimension())
            .map(|&(_, _, optimum)| optimum)
    }

    /// The instance as a TSPLIB text that [`Instance::parse`] reads back to
    /// an equal instance (coordinates are printed exactly).
    pub fn to_tsplib(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let one_line = |value: &str| value.replace(['\r', '\n'], " ");
        let _ = writeln!(text, "NAME: {}", one_line(&self.name));
        if let Some(comment) = &self.comment {
            let _ = writeln!(text, "COMMENT: {}", one_line(comment));
        }
        let _ = writeln!(text, "TYPE: TSP");
        let _ = writeln!(text, "DIMENSION: {}", self.dimension());
        let _ = writeln!(text, "EDGE_WEIGHT_TYPE: EUC_2D");
        let _ = writeln!(text, "NODE_COORD_SECTION");
        for (city, [x, y]) in self.coordinates.iter().enumerate() {
            let _ = writeln!(text, "{} {x:?} {y:?}", city + 1);
        }
        text.push_str("EOF\n");
        text
    }
}

/// TSPLIB's `nint(√(dx² + dy²))`, for coordinates within [`MAX_COORDINATE`].
fn euc_2d(a: [f64; 2], b: [f64; 2]) -> u32 {
    let dx = a[0] - b[0];
    let dy = a[1] - b[1];
    // At most 2·√2·10⁹ < u32::MAX for checked coordinates.
    (dx * dx + dy * dy).sqrt().round() as u32
}

/// Handles one `KEY: value` line of the specification part (`key` upper
/// case, both trimmed).
fn handle_keyword(
    header: &mut Header,
    line_number: usize,
    key: String,
    value: &str,
) -> Result<(), TspError> {
    let duplicate = || TspError::DuplicateKeyword {
        line: line_number,
        key: key.clone(),
    };
    match key.as_str() {
        "NAME" => {
            if header.name.is_some() {
                return Err(duplicate());
            }
            header.name = Some(value.to_string());
        }
        "COMMENT" => {
            // Several COMMENT lines are common: keep them all.
            match &mut header.comment {
                Some(comment) => {
                    comment.push(' ');
                    comment.push_str(value);
                }
                None => header.comment = Some(value.to_string()),
            }
        }
        "TYPE" => {
            if header.type_given {
                return Err(duplicate());
            }
            if !value.eq_ignore_ascii_case("TSP") {
                return Err(TspError::UnsupportedType {
                    line: line_number,
                    found: excerpt(value),
                });
            }
            header.type_given = true;
        }
        "DIMENSION" => {
            if header.dimension.is_some() {
                return Err(duplicate());
            }
            let dimension: u64 = value.parse().map_err(|_| TspError::InvalidDimension {
                line: line_number,
                value: excerpt(value),
            })?;
            let in_range = usize::try_from(dimension)
                .ok()
                .filter(|dimension| (MIN_CITIES..=MAX_CITIES).contains(dimension));
            let Some(dimension) = in_range else {
                return Err(TspError::DimensionOutOfRange {
                    line: line_number,
                    dimension,
                    min: MIN_CITIES,
                    max: MAX_CITIES,
                });
            };
            header.dimension = Some(dimension);
        }
        "EDGE_WEIGHT_TYPE" => {
            if header.edge_weight_type_given {
                return Err(duplicate());
            }
            if !value.eq_ignore_ascii_case("EUC_2D") {
                return Err(TspError::UnsupportedEdgeWeightType {
                    line: line_number,
                    found: excerpt(value),
                });
            }
            header.edge_weight_type_given = true;
        }
        // Other specification keywords (DISPLAY_DATA_TYPE, …) do not change
        // an EUC_2D instance.
        _ if is_keyword(&key) => {}
        _ => {
            return Err(TspError::UnexpectedLine {
                line: line_number,
                text: excerpt(&key),
            })
        }
    }
    Ok(())
}

/// Whether `key` looks like a TSPLIB keyword (upper-case letters, digits
/// and underscores), so that `KEY: value` lines the parser does not use
/// are skipped while garbage is refused.
fn is_keyword(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_')
}

/// Reads the node lines after `NODE_COORD_SECTION` (on line
/// `section_line`) up to `EOF`, the end of the text or the next keyword (a
/// line starting with a letter, left for the caller). Checks that the ids
/// are exactly `1..=dimension`.
fn read_node_section<'text>(
    lines: &mut Peekable<impl Iterator<Item = (usize, &'text str)>>,
    dimension: usize,
    section_line: usize,
) -> Result<Vec<[f64; 2]>, TspError> {
    let mut coordinates = vec![[0.0; 2]; dimension];
    // The line on which each node id was given, 0 if not yet.
    let mut first_line_of_id = vec![0usize; dimension];
    let mut found = 0usize;
    let mut last_line = section_line;

    while let Some(&(line_number, line)) = lines.peek() {
        if line.starts_with(|character: char| character.is_ascii_alphabetic()) {
            break;
        }
        lines.next();
        last_line = line_number;
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(id), Some(x), Some(y), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(TspError::MalformedNodeLine {
                line: line_number,
                fields: line.split_whitespace().count(),
            });
        };
        let id: u64 = id.parse().map_err(|_| TspError::MalformedNumber {
            line: line_number,
            what: "node id",
            text: excerpt(id),
        })?;
        let x = parse_coordinate(x, line_number, "x coordinate")?;
        let y = parse_coordinate(y, line_number, "y coordinate")?;
        if found == dimension {
            return Err(TspError::CoordinateCountMismatch {
                line: line_number,
                expected: dimension,
                found: dimension + 1,
            });
        }
        let index = match usize::try_from(id) {
            Ok(id) if (1..=dimension).contains(&id) => id - 1,
            _ => {
                return Err(TspError::NodeIdOutOfRange {
                    line: line_number,
                    id,
                    dimension,
                })
            }
        };
        if first_line_of_id[index] != 0 {
            return Err(TspError::DuplicateNodeId {
                line: line_number,
                id,
                first_line: first_line_of_id[index],
            });
        }
        first_line_of_id[index] = line_number;
        coordinates[index] = [x, y];
        found += 1;
    }
    if found != dimension {
        return Err(TspError::CoordinateCountMismatch {
            line: last_line,
            expected: dimension,
            found,
        });
    }
    Ok(coordinates)
}

/// A coordinate field: a finite decimal within [`MAX_COORDINATE`].
fn parse_coordinate(text: &str, line: usize, what: &'static str) -> Result<f64, TspError> {
    let malformed = || TspError::MalformedNumber {
        line,
        what,
        text: excerpt(text),
    };
    // Rust also reads "inf" and "NaN": TSPLIB numbers are plain decimals.
    if !text
        .bytes()
        .all(|byte| byte.is_ascii_digit() || matches!(byte, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return Err(malformed());
    }
    let value: f64 = text.parse().map_err(|_| malformed())?;
    if !value.is_finite() {
        return Err(malformed());
    }
    if value.abs() > MAX_COORDINATE {
        return Err(TspError::CoordinateOutOfRange {
            line,
            value,
            max: MAX_COORDINATE,
        });
    }
    Ok(value)
}
