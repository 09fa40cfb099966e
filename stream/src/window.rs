//! Window kinds and the assignment of an event time to windows. Pure.
//!
//! Windows are half-open intervals `[start, end)` in event time (ms since the epoch),
//! aligned to the epoch:
//! - `tumble(ts, size)`: the one window `[floor(ts / size) * size, + size)`;
//! - `hop(ts, slide, size)`: every window of length `size` starting at a multiple of
//!   `slide` that contains `ts` (`size / slide` windows when `slide` divides `size`);
//! - `session(ts, gap)`: per key, rows closer than `gap` to each other form one window
//!   `[first ts, last ts + gap)`; sessions that come to overlap are merged.

use std::fmt;

/// A window kind with its lengths in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowSpec {
    Tumble { size: i64 },
    Hop { slide: i64, size: i64 },
    Session { gap: i64 },
}

impl fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tumble { size } => write!(f, "tumble({size} ms)"),
            Self::Hop { slide, size } => write!(f, "hop(slide {slide} ms, size {size} ms)"),
            Self::Session { gap } => write!(f, "session(gap {gap} ms)"),
        }
    }
}

impl WindowSpec {
    /// Checks the lengths; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Self::Tumble { size } if size <= 0 => Err("tumble size must be positive".into()),
            Self::Hop { slide, size } if slide <= 0 || size <= 0 => {
                Err("hop slide and size must be positive".into())
            }
            Self::Hop { slide, size } if slide > size => Err(format!(
                "hop slide ({slide} ms) is longer than its size ({size} ms): rows between windows would be lost; use tumble for equal lengths"
            )),
            Self::Hop { slide, size } if size / slide > 1_000 => Err(format!(
                "hop size / slide is {}; at most 1000 windows per row are allowed",
                size / slide
            )),
            Self::Session { gap } if gap <= 0 => Err("session gap must be positive".into()),
            _ => Ok(()),
        }
    }

    /// Calls `f(start, end)` for every fixed window (tumble, hop) containing `ts`,
    /// earliest first. Session windows are not fixed: this yields `[ts, ts + gap)`.
    pub fn windows_of(&self, ts: i64, mut f: impl FnMut(i64, i64)) {
        match *self {
            Self::Tumble { size } => {
                let start = floor_to(ts, size);
                f(start, start.saturating_add(size));
            }
            Self::Hop { slide, size } => {
                let last = floor_to(ts, slide);
                // The earliest window start s with s + size > ts.
                let mut s = floor_to(ts.saturating_sub(size), slide).saturating_add(slide);
                while s <= last {
                    f(s, s.saturating_add(size));
                    s = s.saturating_add(slide);
                }
            }
            Self::Session { gap } => f(ts, ts.saturating_add(gap)),
        }
    }

    /// The largest window length (how far behind a window's end its start lies).
    pub fn max_len(&self) -> i64 {
        match *self {
            Self::Tumble { size } | Self::Hop { size, .. } => size,
            Self::Session { gap } => gap,
        }
    }
}

/// `floor(ts / size) * size`, also for negative `ts`.
pub fn floor_to(ts: i64, size: i64) -> i64 {
    ts.div_euclid(size).saturating_mul(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(spec: WindowSpec, ts: i64) -> Vec<(i64, i64)> {
        let mut v = Vec::new();
        spec.windows_of(ts, |s, e| v.push((s, e)));
        v
    }

    #[test]
    fn tumble_and_hop_assign_the_expected_windows() {
        assert_eq!(all(WindowSpec::Tumble { size: 10 }, 25), vec![(20, 30)]);
        assert_eq!(all(WindowSpec::Tumble { size: 10 }, -1), vec![(-10, 0)]);
        assert_eq!(
            all(WindowSpec::Hop { slide: 5, size: 15 }, 27),
            vec![(15, 30), (20, 35), (25, 40)]
        );
        assert_eq!(
            all(WindowSpec::Hop { slide: 5, size: 15 }, 30),
            vec![(20, 35), (25, 40), (30, 45)]
        );
    }

    #[test]
    fn bad_lengths_are_refused_with_a_reason() {
        assert!(WindowSpec::Hop {
            slide: 20,
            size: 10
        }
        .validate()
        .unwrap_err()
        .contains("longer"));
        assert!(WindowSpec::Tumble { size: 0 }.validate().is_err());
        assert!(WindowSpec::Session { gap: -1 }.validate().is_err());
    }

    proptest! {
        /// Against a brute-force model: hop yields exactly the aligned windows that
        /// contain ts.
        #[test]
        fn hop_windows_match_brute_force(ts in -10_000i64..10_000, slide in 1i64..50, k in 1i64..6) {
            let size = slide * k + (ts.rem_euclid(3)).min(slide - 1);
            let spec = WindowSpec::Hop { slide, size };
            let got = all(spec, ts);
            let mut want = Vec::new();
            let mut s = floor_to(ts - size - slide, slide);
            while s <= ts {
                if s <= ts && ts < s + size {
                    want.push((s, s + size));
                }
                s += slide;
            }
            prop_assert_eq!(got, want);
        }
    }
}
