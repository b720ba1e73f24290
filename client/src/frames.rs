//! Frame specifications as artists type them: `"1-48"`, `"1,5,9-12"`, `"7"`,
//! `"-5--1"`.
//!
//! Why a parser of our own: the frame list arrives from a text field or a
//! command line, so it is untrusted input. A typo must come back as an error
//! that names the item, and a slip of the keyboard (`1-10000000`) must be
//! refused before the coordinator allocates a job per frame.
//!
//! Grammar: comma-separated items, each `N` or `A-B` (inclusive, `A <= B`),
//! with optional whitespace around each item but not inside one. Numbers are
//! decimal `i32` with an optional leading `-`: negative frames are legal in
//! Blender, so `-5--1` is the range from -5 to -1. The result is sorted
//! ascending without duplicates, so `"3,1-3"` is `[1, 2, 3]`.
//!
//! **Invariant:** the number of distinct frames is computed (in 64 bits,
//! from the merged ranges) before any frame list is allocated,
//! and more than [`MAX_FRAMES`] is an error.

use std::fmt::Write as _;

/// The most frames one specification may name.
pub const MAX_FRAMES: u64 = 100_000;

/// Why a frame specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameSpecError {
    #[error("empty frame specification")]
    Empty,
    #[error("malformed frame item {item:?}: expected a frame N or a range A-B, like 1-48")]
    Malformed { item: String },
    #[error("frame item {item:?}: frame number out of range ({} to {})", i32::MIN, i32::MAX)]
    OutOfRange { item: String },
    #[error("frame range {item:?} runs backwards: {start} > {end}")]
    Reversed { item: String, start: i32, end: i32 },
    #[error("frame specification names {count} frames; at most {max} are allowed")]
    TooMany { count: u64, max: u64 },
}

/// Parses a frame specification into sorted, distinct frame numbers.
pub fn parse_frames(spec: &str) -> Result<Vec<i32>, FrameSpecError> {
    if spec.trim().is_empty() {
        return Err(FrameSpecError::Empty);
    }
    let mut ranges = spec.split(',').map(|item| parse_item(item.trim())).collect::<Result<Vec<_>, _>>()?;
    ranges.sort_unstable();
    // Merge overlapping and adjacent ranges, so the count below is of distinct frames.
    let mut merged: Vec<(i32, i32)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match merged.last_mut() {
            Some((_, end)) if i64::from(a) <= i64::from(*end) + 1 => *end = (*end).max(b),
            _ => merged.push((a, b)),
        }
    }
    let mut count: u64 = 0;
    for &(a, b) in &merged {
        // b >= a, so this is 1 to 2^32, exact in i64 and u64. Merged ranges
        // are disjoint within i32, so the sum is at most 2^32 too; it
        // saturates rather than wraps all the same.
        let n = (i64::from(b) - i64::from(a) + 1) as u64;
        count = count.saturating_add(n);
    }
    if count > MAX_FRAMES {
        return Err(FrameSpecError::TooMany { count, max: MAX_FRAMES });
    }
    let mut frames = Vec::with_capacity(count as usize);
    for (a, b) in merged {
        frames.extend(a..=b);
    }
    Ok(frames)
}

/// One trimmed item: `N` or `A-B`.
fn parse_item(item: &str) -> Result<(i32, i32), FrameSpecError> {
    // The range dash is the first '-' after the first character (a leading
    // '-' is the sign of A).
    let split = item.char_indices().skip(1).find(|&(_, c)| c == '-').map(|(i, _)| i);
    let (a, b) = match split {
        Some(i) => (&item[..i], &item[i + 1..]),
        None => (item, item),
    };
    let (start, end) = (parse_number(a, item)?, parse_number(b, item)?);
    if start > end {
        return Err(FrameSpecError::Reversed { item: item.to_owned(), start, end });
    }
    Ok((start, end))
}

fn parse_number(s: &str, item: &str) -> Result<i32, FrameSpecError> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FrameSpecError::Malformed { item: item.to_owned() });
    }
    s.parse().map_err(|_| FrameSpecError::OutOfRange { item: item.to_owned() })
}

/// The compact specification of a set of frames: runs of consecutive frames
/// become `A-B`, the rest single numbers, ascending (`[1, 2, 3, 7]` →
/// `"1-3,7"`). Order and duplicates in the input do not matter;
/// [`parse_frames`] of the result gives the sorted, distinct frames back. An
/// empty slice gives `""`.
pub fn format_frames(frames: &[i32]) -> String {
    let mut sorted = frames.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && end.checked_add(1) == Some(sorted[i + 1]) {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        // Writing to a String cannot fail.
        let _ = if start == end { write!(out, "{start}") } else { write!(out, "{start}-{end}") };
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn malformed(item: &str) -> FrameSpecError {
        FrameSpecError::Malformed { item: item.to_owned() }
    }

    #[test]
    fn single_frames_and_ranges() {
        assert_eq!(parse_frames("7"), Ok(vec![7]));
        assert_eq!(parse_frames("1-4"), Ok(vec![1, 2, 3, 4]));
        assert_eq!(parse_frames("1,5,9-12"), Ok(vec![1, 5, 9, 10, 11, 12]));
        assert_eq!(parse_frames("3-3"), Ok(vec![3]));
        assert_eq!(parse_frames("0"), Ok(vec![0]));
        assert_eq!(parse_frames("1-48").map(|f| f.len()), Ok(48));
    }

    #[test]
    fn negative_frames() {
        assert_eq!(parse_frames("-5--1"), Ok(vec![-5, -4, -3, -2, -1]));
        assert_eq!(parse_frames("-2-1"), Ok(vec![-2, -1, 0, 1]));
        assert_eq!(parse_frames("-3"), Ok(vec![-3]));
        assert_eq!(parse_frames("-1,-3"), Ok(vec![-3, -1]));
    }

    #[test]
    fn whitespace_around_items_sorting_and_duplicates() {
        assert_eq!(parse_frames(" 9-10 , 1,\t5 \n"), Ok(vec![1, 5, 9, 10]));
        assert_eq!(parse_frames("5,1-3,2,3-6"), Ok(vec![1, 2, 3, 4, 5, 6]));
        assert_eq!(parse_frames("10-12,1-2,1-2"), Ok(vec![1, 2, 10, 11, 12]));
    }

    #[test]
    fn empty_specs() {
        assert_eq!(parse_frames(""), Err(FrameSpecError::Empty));
        assert_eq!(parse_frames("  \t"), Err(FrameSpecError::Empty));
    }

    #[test]
    fn malformed_items_are_named() {
        assert_eq!(parse_frames("1,,2"), Err(malformed("")));
        assert_eq!(parse_frames("1,2,"), Err(malformed("")));
        assert_eq!(parse_frames("1, x"), Err(malformed("x")));
        assert_eq!(parse_frames("1-"), Err(malformed("1-")));
        assert_eq!(parse_frames("-"), Err(malformed("-")));
        assert_eq!(parse_frames("--5"), Err(malformed("--5")));
        assert_eq!(parse_frames("1-2-3"), Err(malformed("1-2-3")));
        assert_eq!(parse_frames("1 - 5"), Err(malformed("1 - 5")));
        assert_eq!(parse_frames("+5"), Err(malformed("+5")));
        assert_eq!(parse_frames("1.5"), Err(malformed("1.5")));
        assert_eq!(parse_frames("1-48x2"), Err(malformed("1-48x2")));
        assert_eq!(parse_frames("１"), Err(malformed("１")));
        let msg = parse_frames("1,5,oops").unwrap_err().to_string();
        assert!(msg.contains("\"oops\""), "{msg}");
    }

    #[test]
    fn backwards_ranges() {
        assert_eq!(parse_frames("5-1"), Err(FrameSpecError::Reversed { item: "5-1".into(), start: 5, end: 1 }));
        assert_eq!(parse_frames("-1--5"), Err(FrameSpecError::Reversed { item: "-1--5".into(), start: -1, end: -5 }));
        assert_eq!(parse_frames("3--2"), Err(FrameSpecError::Reversed { item: "3--2".into(), start: 3, end: -2 }));
    }

    #[test]
    fn i32_edges() {
        assert_eq!(parse_frames("2147483647"), Ok(vec![i32::MAX]));
        assert_eq!(parse_frames("-2147483648"), Ok(vec![i32::MIN]));
        assert_eq!(parse_frames("2147483645-2147483647"), Ok(vec![i32::MAX - 2, i32::MAX - 1, i32::MAX]));
        assert_eq!(parse_frames("-2147483648--2147483647"), Ok(vec![i32::MIN, i32::MIN + 1]));
        assert_eq!(parse_frames("-2147483648,2147483647"), Ok(vec![i32::MIN, i32::MAX]));
        assert_eq!(parse_frames("2147483648"), Err(FrameSpecError::OutOfRange { item: "2147483648".into() }));
        assert_eq!(parse_frames("-2147483649-0"), Err(FrameSpecError::OutOfRange { item: "-2147483649-0".into() }));
        assert_eq!(
            parse_frames("1-99999999999999999999"),
            Err(FrameSpecError::OutOfRange { item: "1-99999999999999999999".into() })
        );
    }

    #[test]
    fn huge_ranges_are_refused_before_allocating() {
        // The whole i32 line: 2^32 frames, a count that overflows i32 and u32.
        assert_eq!(
            parse_frames("-2147483648-2147483647"),
            Err(FrameSpecError::TooMany { count: 1 << 32, max: MAX_FRAMES })
        );
        // Several whole-line ranges merge into one: still 2^32, not 3 * 2^32.
        assert_eq!(
            parse_frames("-2147483648-2147483647,-2147483648-2147483647,0-2147483647"),
            Err(FrameSpecError::TooMany { count: 1 << 32, max: MAX_FRAMES })
        );
        assert_eq!(parse_frames("1-100001"), Err(FrameSpecError::TooMany { count: 100_001, max: MAX_FRAMES }));
        assert_eq!(
            parse_frames("1-50000,60001-110001"),
            Err(FrameSpecError::TooMany { count: 100_001, max: MAX_FRAMES })
        );
        // Exactly the limit is fine, and overlap is counted once.
        assert_eq!(parse_frames("1-100000").map(|f| f.len()), Ok(100_000));
        assert_eq!(parse_frames("1-100000,1-100000,50000").map(|f| f.len()), Ok(100_000));
    }

    #[test]
    fn format_compacts_runs() {
        assert_eq!(format_frames(&[1, 2, 3, 7]), "1-3,7");
        assert_eq!(format_frames(&[7, 3, 1, 2, 2]), "1-3,7");
        assert_eq!(format_frames(&[]), "");
        assert_eq!(format_frames(&[5]), "5");
        assert_eq!(format_frames(&[4, 5]), "4-5");
        assert_eq!(format_frames(&[-5, -4, -3, -2, -1]), "-5--1");
        assert_eq!(format_frames(&[-1, 0, 1, 3]), "-1-1,3");
        assert_eq!(format_frames(&[i32::MIN, i32::MAX]), "-2147483648,2147483647");
        assert_eq!(format_frames(&[i32::MAX - 1, i32::MAX]), "2147483646-2147483647");
        assert_eq!(format_frames(&[i32::MIN, i32::MIN + 1]), "-2147483648--2147483647");
    }

    #[test]
    fn format_and_parse_round_trip() {
        for spec in ["1-48", "1,5,9-12", "7", "-5--1", "-10--8,-3-2,4,6-7,100", "-2147483648,2147483647"] {
            let frames = parse_frames(spec).unwrap();
            assert_eq!(format_frames(&frames), spec);
            assert_eq!(parse_frames(&format_frames(&frames)), Ok(frames));
        }
    }
}
