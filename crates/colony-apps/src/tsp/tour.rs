//! Tours: length, validation, and the local search that improves them —
//! 2-opt and Or-opt over nearest-neighbour lists with don't-look bits.
//!
//! A tour is a permutation of the instance's cities `0..dimension` as
//! `u32`; it closes from its last city back to its first.

use std::collections::VecDeque;

use thiserror::Error;

use super::instance::Instance;

/// Why a sequence of cities is not a tour of an instance.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum TourError {
    /// The tour does not visit as many cities as the instance has.
    #[error("the tour has {found} cities, the instance {expected}")]
    WrongLength {
        /// The instance's dimension.
        expected: usize,
        /// The tour's length.
        found: usize,
    },
    /// A city number is not below the instance's dimension.
    #[error("city {city} does not exist (the instance has {dimension})")]
    CityOutOfRange {
        /// The city.
        city: u32,
        /// The instance's dimension.
        dimension: usize,
    },
    /// A city is visited twice.
    #[error("city {city} is visited twice")]
    RepeatedCity {
        /// The city.
        city: u32,
    },
}

/// Checks that `tour` is a permutation of the cities of `instance`.
pub fn validate_tour(instance: &Instance, tour: &[u32]) -> Result<(), TourError> {
    validate_permutation(tour, instance.dimension())
}

/// Checks that `tour` is a permutation of `0..dimension`.
pub(crate) fn validate_permutation(tour: &[u32], dimension: usize) -> Result<(), TourError> {
    if tour.len() != dimension {
        return Err(TourError::WrongLength {
            expected: dimension,
            found: tour.len(),
        });
    }
    let mut visited = vec![false; dimension];
    for &city in tour {
        let Some(seen) = visited.get_mut(city as usize) else {
            return Err(TourError::CityOutOfRange { city, dimension });
        };
        if *seen {
            return Err(TourError::RepeatedCity { city });
        }
        *seen = true;
    }
    Ok(())
}

/// The length of `tour` on `instance`, after checking it is a tour.
pub fn tour_length(instance: &Instance, tour: &[u32]) -> Result<u64, TourError> {
    validate_tour(instance, tour)?;
    Ok(length_of_valid_tour(instance, tour))
}

/// The length of a tour known to be valid.
pub(crate) fn length_of_valid_tour(instance: &Instance, tour: &[u32]) -> u64 {
    let closing = match (tour.first(), tour.last()) {
        (Some(&first), Some(&last)) => u64::from(instance.distance(last, first)),
        _ => 0,
    };
    tour.windows(2)
        .map(|pair| u64::from(instance.distance(pair[0], pair[1])))
        .sum::<u64>()
        + closing
}

/// Improves `tour` in place by 2-opt moves until none shortens it; returns
/// its length. The tour stays valid and never gets longer.
pub fn two_opt(instance: &Instance, tour: &mut [u32]) -> Result<u64, TourError> {
    validate_tour(instance, tour)?;
    LocalSearch::default().run(instance, tour, Moves::TWO_OPT, None);
    Ok(length_of_valid_tour(instance, tour))
}

/// Improves `tour` in place by Or-opt moves (a segment of 1 to 3 cities
/// moved elsewhere, either way round) until none shortens it; returns its
/// length.
pub fn or_opt(instance: &Instance, tour: &mut [u32]) -> Result<u64, TourError> {
    validate_tour(instance, tour)?;
    LocalSearch::default().run(instance, tour, Moves::OR_OPT, None);
    Ok(length_of_valid_tour(instance, tour))
}

/// Improves `tour` in place by 2-opt and Or-opt moves until neither
/// shortens it (a local optimum of both); returns its length.
pub fn local_search(instance: &Instance, tour: &mut [u32]) -> Result<u64, TourError> {
    validate_tour(instance, tour)?;
    LocalSearch::default().run(instance, tour, Moves::BOTH, None);
    Ok(length_of_valid_tour(instance, tour))
}

/// Which kinds of move a local search tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Moves {
    two_opt: bool,
    or_opt: bool,
}

impl Moves {
    /// 2-opt only.
    pub(crate) const TWO_OPT: Moves = Moves {
        two_opt: true,
        or_opt: false,
    };
    /// Or-opt only.
    pub(crate) const OR_OPT: Moves = Moves {
        two_opt: false,
        or_opt: true,
    };
    /// 2-opt, then Or-opt where 2-opt finds nothing.
    pub(crate) const BOTH: Moves = Moves {
        two_opt: true,
        or_opt: true,
    };
}

/// The local search's working memory, kept between runs so that improving
/// many tours allocates once.
#[derive(Debug, Default)]
pub(crate) struct LocalSearch {
    /// `position[city]`: where `city` is in the tour.
    position: Vec<u32>,
    /// Cities whose don't-look bit is off, to examine in order.
    queue: VecDeque<u32>,
    /// Whether each city is in `queue`.
    queued: Vec<bool>,
    /// New order of the stretch an Or-opt move rewrites.
    scratch: Vec<u32>,
}

impl LocalSearch {
    /// Improves a valid `tour` with `moves` until none applies. Starts from
    /// the cities `dirty` (a move near them may pay) or, if `None`, from
    /// every city.
    pub(crate) fn run(
        &mut self,
        instance: &Instance,
        tour: &mut [u32],
        moves: Moves,
        dirty: Option<&[u32]>,
    ) {
        let dimension = tour.len();
        if dimension < 5 {
            // Every tour of 3 cities has the same length; 4 cities have
            // three tours: try them all.
            if dimension == 4 {
                best_of_four(instance, tour);
            }
            return;
        }
        self.position.clear();
        self.position.resize(dimension, 0);
        for (index, &city) in tour.iter().enumerate() {
            self.position[city as usize] = index as u32;
        }
        self.queued.clear();
        self.queued.resize(dimension, false);
        self.queue.clear();
        match dirty {
            Some(cities) => {
                for &city in cities {
                    self.push(city);
                }
            }
            None => {
                for &city in tour.iter() {
                    self.push(city);
                }
            }
        }
        let mut search = Search {
            instance,
            tour,
            position: &mut self.position,
            scratch: &mut self.scratch,
            touched: [0; 6],
            touched_count: 0,
        };
        // Don't-look bits only wake the endpoints of a move, while a move
        // also changes what Or-opt sees from cities a few steps away: once
        // the queue is empty, a sweep over every city confirms the tour is
        // a local optimum (or wakes the search up again).
        let mut improved_since_sweep = dirty.is_some();
        loop {
            while let Some(city) = self.queue.pop_front() {
                self.queued[city as usize] = false;
                let improved = (moves.two_opt && search.try_two_opt(city))
                    || (moves.or_opt && search.try_or_opt(city));
                if improved {
                    improved_since_sweep = true;
                    for index in 0..search.touched_count {
                        let touched = search.touched[index];
                        if !self.queued[touched as usize] {
                            self.queued[touched as usize] = true;
                            self.queue.push_back(touched);
                        }
                    }
                }
            }
            if !improved_since_sweep {
                break;
            }
            improved_since_sweep = false;
            for index in 0..dimension {
                let city = search.tour[index];
                self.queued[city as usize] = true;
                self.queue.push_back(city);
            }
        }
    }

    /// Turns off the don't-look bit of `city`.
    fn push(&mut self, city: u32) {
        if !self.queued[city as usize] {
            self.queued[city as usize] = true;
            self.queue.push_back(city);
        }
    }
}

/// The shortest of the three tours of four cities, written into `tour`.
fn best_of_four(instance: &Instance, tour: &mut [u32]) {
    let [a, b, c, d] = [tour[0], tour[1], tour[2], tour[3]];
    let candidates = [[a, b, c, d], [a, b, d, c], [a, c, b, d]];
    let mut best = candidates[0];
    let mut best_length = length_of_valid_tour(instance, &best);
    for candidate in &candidates[1..] {
        let length = length_of_valid_tour(instance, candidate);
        if length < best_length {
            best = *candidate;
            best_length = length;
        }
    }
    tour.copy_from_slice(&best);
}

/// One local search over one tour: the tour, where each city is, and the
/// cities the last move touched.
struct Search<'a> {
    instance: &'a Instance,
    tour: &'a mut [u32],
    position: &'a mut [u32],
    scratch: &'a mut Vec<u32>,
    /// The endpoints of the last move's edges, whose don't-look bits turn
    /// off.
    touched: [u32; 6],
    touched_count: usize,
}

impl Search<'_> {
    #[inline]
    fn dimension(&self) -> usize {
        self.tour.len()
    }

    #[inline]
    fn distance(&self, from: u32, to: u32) -> i64 {
        i64::from(self.instance.distance(from, to))
    }

    #[inline]
    fn position_of(&self, city: u32) -> usize {
        self.position[city as usize] as usize
    }

    #[inline]
    fn city_at(&self, position: usize) -> u32 {
        self.tour[position % self.dimension()]
    }

    #[inline]
    fn next(&self, city: u32) -> u32 {
        let position = self.position_of(city) + 1;
        if position == self.dimension() {
            self.tour[0]
        } else {
            self.tour[position]
        }
    }

    #[inline]
    fn previous(&self, city: u32) -> u32 {
        let position = self.position_of(city);
        if position == 0 {
            self.tour[self.dimension() - 1]
        } else {
            self.tour[position - 1]
        }
    }

    fn touch(&mut self, cities: &[u32]) {
        self.touched_count = cities.len();
        self.touched[..cities.len()].copy_from_slice(cities);
    }

    /// Reverses the stretch of the tour from position `from` forward to
    /// position `to` (both included, wrapping around), or the rest of the
    /// tour when that is shorter: the same cycle either way.
    fn reverse(&mut self, from: usize, to: usize) {
        let dimension = self.dimension();
        let mut length = (to + dimension - from) % dimension + 1;
        let (mut left, mut right) = (from, to);
        if 2 * length > dimension {
            left = (to + 1) % dimension;
            right = (from + dimension - 1) % dimension;
            length = dimension - length;
        }
        for _ in 0..length / 2 {
            self.tour.swap(left, right);
            self.position[self.tour[left] as usize] = left as u32;
            self.position[self.tour[right] as usize] = right as u32;
            left = if left + 1 == dimension { 0 } else { left + 1 };
            right = if right == 0 { dimension - 1 } else { right - 1 };
        }
    }

    /// Tries a 2-opt move removing an edge at `city`: for each near city
    /// `other` closer than `city`'s tour neighbour, replace the edges
    /// (city, city's successor) and (other, other's successor) by (city,
    /// other) and (successors), and likewise with predecessors. Applies the
    /// first that shortens the tour.
    fn try_two_opt(&mut self, city: u32) -> bool {
        for forward in [true, false] {
            let city_neighbour = if forward {
                self.next(city)
            } else {
                self.previous(city)
            };
            let removed_at_city = self.distance(city, city_neighbour);
            for &other in self.instance.neighbours(city) {
                let first_gain = removed_at_city - self.distance(city, other);
                if first_gain <= 0 {
                    break;
                }
                let other_neighbour = if forward {
                    self.next(other)
                } else {
                    self.previous(other)
                };
                if other == city_neighbour || other_neighbour == city {
                    continue;
                }
                let gain = first_gain + self.distance(other, other_neighbour)
                    - self.distance(city_neighbour, other_neighbour);
                if gain > 0 {
                    if forward {
                        // city, next … other, next(other) →
                        // city, other … next, next(other)
                        self.reverse(self.position_of(city_neighbour), self.position_of(other));
                    } else {
                        // previous(city), city … previous(other), other →
                        // previous(city), previous(other) … city, other
                        self.reverse(self.position_of(city), self.position_of(other_neighbour));
                    }
                    self.touch(&[city, city_neighbour, other, other_neighbour]);
                    return true;
                }
            }
        }
        false
    }

    /// Tries an Or-opt move of a segment of 1 to 3 cities that starts or
    /// ends at `city`: take it out (joining its neighbours) and put it,
    /// either way round, between two adjacent cities one of which is near
    /// one of its ends. Applies the first that shortens the tour.
    fn try_or_opt(&mut self, city: u32) -> bool {
        let dimension = self.dimension();
        for segment_length in 1..=3usize {
            // The rest of the tour must hold an edge apart from the one
            // that closes the gap.
            if dimension < segment_length + 3 {
                break;
            }
            let city_position = self.position_of(city);
            let starts = if segment_length == 1 {
                [city_position, city_position]
            } else {
                [
                    city_position,
                    (city_position + dimension + 1 - segment_length) % dimension,
                ]
            };
            let variants = if segment_length == 1 { 1 } else { 2 };
            for &start in &starts[..variants] {
                if self.try_move_segment(start, segment_length) {
                    return true;
                }
            }
        }
        false
    }

    /// Tries to move the segment of `segment_length` cities from position
    /// `start` (see [`Search::try_or_opt`]).
    fn try_move_segment(&mut self, start: usize, segment_length: usize) -> bool {
        let dimension = self.dimension();
        let first = self.city_at(start);
        let last = self.city_at(start + segment_length - 1);
        let before = self.city_at(start + dimension - 1);
        let after = self.city_at(start + segment_length);
        let removal_gain = self.distance(before, first) + self.distance(last, after)
            - self.distance(before, after);
        if removal_gain <= 0 {
            return false;
        }
        let in_segment = |search: &Self, city: u32| {
            (search.position_of(city) + dimension - start) % dimension < segment_length
        };
        for (end, other_end) in [(first, last), (last, first)] {
            for &near in self.instance.neighbours(end) {
                let joined = self.distance(near, end);
                if joined >= removal_gain {
                    break;
                }
                if in_segment(self, near) {
                    continue;
                }
                for beside in [self.next(near), self.previous(near)] {
                    if in_segment(self, beside) {
                        continue;
                    }
                    let insertion_cost =
                        joined + self.distance(other_end, beside) - self.distance(near, beside);
                    if removal_gain - insertion_cost > 0 {
                        self.move_segment(start, segment_length, near, end, beside);
                        self.touch(&[before, after, first, last, near, beside]);
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Moves the segment of `segment_length` cities at position `start`
    /// between the adjacent cities `near` and `beside`, with its end `end`
    /// next to `near`. Rewrites the shorter of the two stretches between
    /// the segment's place and its new place.
    fn move_segment(
        &mut self,
        start: usize,
        segment_length: usize,
        near: u32,
        end: u32,
        beside: u32,
    ) {
        let dimension = self.dimension();
        let mut segment = [0u32; 3];
        for (offset, slot) in segment[..segment_length].iter_mut().enumerate() {
            *slot = self.city_at(start + offset);
        }
        // The new edge goes from `upstream` to `downstream` in tour order.
        let near_first = self.next(near) == beside;
        let (upstream, downstream) = if near_first {
            (near, beside)
        } else {
            (beside, near)
        };
        // The segment oriented to follow `upstream`.
        let upstream_end = if near_first {
            end
        } else if end == segment[0] {
            segment[segment_length - 1]
        } else {
            segment[0]
        };
        let segment = &mut segment[..segment_length];
        if upstream_end != segment[0] {
            segment.reverse();
        }
        // The rest of the tour runs from the city after the segment
        // ("after") to the city before it; `upstream` is `offset` steps
        // from its start.
        let after_position = (start + segment_length) % dimension;
        let offset = (self.position_of(upstream) + dimension - after_position) % dimension;
        let rest = dimension - segment_length;
        self.scratch.clear();
        let write_from = if offset < rest - offset - 1 {
            // after … upstream, then the segment, from where it was.
            for step in 0..=offset {
                self.scratch.push(self.city_at(after_position + step));
            }
            self.scratch.extend_from_slice(segment);
            start
        } else {
            // The segment, then downstream … before, from downstream's place.
            let downstream_position = self.position_of(downstream);
            self.scratch.extend_from_slice(segment);
            for step in 0..(rest - offset - 1) {
                self.scratch.push(self.city_at(downstream_position + step));
            }
            downstream_position
        };
        for (step, &city) in self.scratch.iter().enumerate() {
            let position = (write_from + step) % dimension;
            self.tour[position] = city;
            self.position[city as usize] = position as u32;
        }
    }
}

/// Applies a double bridge: cuts the tour into four stretches A B C D at
/// three random places and reconnects them as A C B D — a jump that 2-opt
/// and Or-opt cannot undo in one move. Returns the eight cities at the
/// cuts (whose neighbourhoods changed), or `None` for fewer than 8 cities.
pub(crate) fn double_bridge(
    tour: &mut Vec<u32>,
    rng: &mut super::rng::SplitMix64,
) -> Option<[u32; 8]> {
    let dimension = tour.len();
    if dimension < 8 {
        return None;
    }
    // Three distinct cuts in 1..dimension, each stretch non-empty.
    let mut cuts = [0usize; 3];
    loop {
        for cut in &mut cuts {
            *cut = 1 + rng.below(dimension - 1);
        }
        cuts.sort_unstable();
        if cuts[0] < cuts[1] && cuts[1] < cuts[2] {
            break;
        }
    }
    let [first, second, third] = cuts;
    let ends = [
        tour[0],
        tour[first - 1],
        tour[first],
        tour[second - 1],
        tour[second],
        tour[third - 1],
        tour[third],
        tour[dimension - 1],
    ];
    let mut rebuilt = Vec::with_capacity(dimension);
    rebuilt.extend_from_slice(&tour[..first]);
    rebuilt.extend_from_slice(&tour[second..third]);
    rebuilt.extend_from_slice(&tour[first..second]);
    rebuilt.extend_from_slice(&tour[third..]);
    *tour = rebuilt;
    Some(ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square_grid(side: usize) -> Instance {
        let coordinates = (0..side * side)
            .map(|index| [(index % side) as f64 * 10.0, (index / side) as f64 * 10.0])
            .collect();
        Instance::from_coordinates("grid", coordinates).unwrap()
    }

    #[test]
    fn validation_names_the_fault() {
        let instance = square_grid(3);
        assert_eq!(
            validate_tour(&instance, &[0, 1, 2]),
            Err(TourError::WrongLength {
                expected: 9,
                found: 3
            })
        );
        assert_eq!(
            validate_tour(&instance, &[0, 1, 2, 3, 4, 5, 6, 7, 9]),
            Err(TourError::CityOutOfRange {
                city: 9,
                dimension: 9
            })
        );
        assert_eq!(
            validate_tour(&instance, &[0, 1, 2, 3, 4, 5, 6, 7, 7]),
            Err(TourError::RepeatedCity { city: 7 })
        );
        assert_eq!(
            validate_tour(&instance, &[8, 1, 2, 3, 4, 5, 6, 7, 0]),
            Ok(())
        );
    }

    #[test]
    fn local_search_untangles_a_grid() {
        // A 6×6 grid's optimum is 36 edges of 10.
        let instance = square_grid(6);
        let mut rng = super::super::rng::SplitMix64::new(3);
        for _ in 0..20 {
            let mut tour: Vec<u32> = (0..36).collect();
            rng.shuffle(&mut tour);
            let before = length_of_valid_tour(&instance, &tour);
            let after = local_search(&instance, &mut tour).unwrap();
            assert!(after <= before);
            assert_eq!(after, length_of_valid_tour(&instance, &tour));
            validate_tour(&instance, &tour).unwrap();
            assert!(after <= 400, "grid tour of {after} after local search");
        }
    }

    #[test]
    fn double_bridge_keeps_a_permutation() {
        let instance = square_grid(4);
        let mut rng = super::super::rng::SplitMix64::new(5);
        let mut tour: Vec<u32> = (0..16).collect();
        for _ in 0..100 {
            double_bridge(&mut tour, &mut rng).unwrap();
            validate_tour(&instance, &tour).unwrap();
        }
    }
}
