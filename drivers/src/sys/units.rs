//! Sizes: the one parser for sizes given as text (backend options, CLI parameters) and the
//! unit newtypes of block devices.
//!
//! Rules of [`parse_size`], the same everywhere:
//! - a bare number is bytes: `65536`;
//! - suffixes are binary: `K`, `M`, `G`, `T` (powers of 1024), in either case, optionally
//!   followed by `i`, `iB` or `B` (`4k`, `4K`, `4Ki`, `4KiB`, `4KB` are all 4096); a lone `B`
//!   means bytes;
//! - a decimal fraction is allowed and rounded to the nearest byte: `1.5G`, `0.5K` (512);
//! - blanks around the number and between number and suffix are ignored;
//! - nothing else: no sign, no exponent, no SI (1000-based) units.

use std::fmt;

use crate::error::{Error, Result};

/// Sectors and bytes as the device-mapper crate counts them (512-byte sectors; `Bytes` is
/// 128-bit there), so thin-pool figures go to and from the kernel without conversions.
pub use devicemapper::{Bytes, Sectors, SECTOR_SIZE};

/// Why a size did not parse. The text names the input and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeError {
    Empty,
    /// The number part is not a plain decimal number.
    Number { input: String },
    /// An unknown unit suffix.
    Unit { input: String, unit: String },
    /// More than 2^64-1 bytes.
    TooLarge { input: String },
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const EXAMPLES: &str = "a size is bytes or a number with K, M, G or T (binary), e.g. 4096, 64K, 1.5G, 2GiB";
        match self {
            SizeError::Empty => write!(f, "empty size; {EXAMPLES}"),
            SizeError::Number { input } => write!(f, "'{input}' is not a size; {EXAMPLES}"),
            SizeError::Unit { input, unit } => write!(f, "'{input}': unknown unit '{unit}'; {EXAMPLES}"),
            SizeError::TooLarge { input } => write!(f, "'{input}' is more than 2^64-1 bytes"),
        }
    }
}

impl std::error::Error for SizeError {}

/// Parse a size in bytes by the rules of this module.
pub fn parse_size(s: &str) -> std::result::Result<u64, SizeError> {
    let input = s.trim();
    if input.is_empty() {
        return Err(SizeError::Empty);
    }
    let split = input.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(input.len());
    let (num, unit) = (input[..split].trim(), input[split..].trim());
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KI" | "KIB" | "KB" => 10,
        "M" | "MI" | "MIB" | "MB" => 20,
        "G" | "GI" | "GIB" | "GB" => 30,
        "T" | "TI" | "TIB" | "TB" => 40,
        _ => {
            return Err(if num.is_empty() {
                SizeError::Number { input: input.into() }
            } else {
                SizeError::Unit { input: input.into(), unit: unit.into() }
            })
        }
    };
    let bad = || SizeError::Number { input: input.into() };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(bad());
    }
    // Exact arithmetic: int × 2^shift + round(frac × 2^shift).
    let mult = 1u128 << shift;
    let int: u128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| bad())? };
    let mut bytes = int.checked_mul(mult).ok_or_else(|| SizeError::TooLarge { input: input.into() })?;
    if !frac.is_empty() {
        // Digits beyond 30 cannot change the rounding of a value below 2^104.
        let digits = &frac[..frac.len().min(30)];
        let f: u128 = digits.parse().map_err(|_| bad())?;
        let den = 10u128.pow(digits.len() as u32);
        bytes = bytes.checked_add((f * mult + den / 2) / den).ok_or_else(|| SizeError::TooLarge { input: input.into() })?;
    }
    u64::try_from(bytes).map_err(|_| SizeError::TooLarge { input: input.into() })
}

/// A backend's size option (`size=8G`): parsed by [`parse_size`], more than zero, or a
/// configuration error naming the driver and the option.
pub fn size_option(driver: &str, key: &str, value: &str) -> Result<u64> {
    match parse_size(value) {
        Ok(0) => Err(Error::config(driver, format!("option {key}={value}: must be more than 0 bytes"))),
        Ok(n) => Ok(n),
        Err(e) => Err(Error::config(driver, format!("option {key}={value}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_set_of_rules() {
        for (s, v) in [
            ("65536", 65536u64),
            ("0", 0),
            ("512B", 512),
            ("4k", 4096),
            ("4K", 4096),
            ("4Ki", 4096),
            ("4KiB", 4096),
            ("4KB", 4096),
            ("512M", 512 << 20),
            ("8G", 8 << 30),
            (" 2 GiB ", 2 << 30),
            ("1T", 1 << 40),
            ("1.5G", 3 << 29),
            ("1.5GiB", 3 << 29),
            ("0.5K", 512),
            (".5K", 512),
            ("1.", 1),
            // Rounded to the nearest byte.
            ("0.0001K", 0),
            ("0.0005K", 1),
            ("1.3", 1),
            ("16777215T", 16777215 << 40),
        ] {
            assert_eq!(parse_size(s), Ok(v), "{s}");
        }
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert!(matches!(parse_size("x"), Err(SizeError::Number { .. })));
        assert!(matches!(parse_size("-1G"), Err(SizeError::Number { .. })));
        assert!(matches!(parse_size("1.2.3K"), Err(SizeError::Number { .. })));
        assert!(matches!(parse_size("."), Err(SizeError::Number { .. })));
        assert!(matches!(parse_size("1e9"), Err(SizeError::Unit { ref unit, .. }) if unit == "e9"));
        assert!(matches!(parse_size("12Q"), Err(SizeError::Unit { ref unit, .. }) if unit == "Q"));
        assert!(matches!(parse_size("16777216T"), Err(SizeError::TooLarge { .. })));
        assert!(matches!(parse_size("99999999999999999999999"), Err(SizeError::TooLarge { .. })));
        let text = parse_size("12Q").unwrap_err().to_string();
        assert!(text.contains("'12Q'") && text.contains("unknown unit 'Q'") && text.contains("1.5G"), "{text}");
    }

    #[test]
    fn options_must_be_positive() {
        assert_eq!(size_option("zfs", "size", "1G").unwrap(), 1 << 30);
        let e = size_option("zfs", "size", "0").unwrap_err().to_string();
        assert!(e.contains("size=0") && e.contains("more than 0"), "{e}");
        let e = size_option("btrfs", "size", "lots").unwrap_err().to_string();
        assert!(e.contains("btrfs") && e.contains("size=lots") && e.contains("not a size"), "{e}");
    }
}
