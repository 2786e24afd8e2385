//! Money in integer nano-dollars (1 USD = 1e9). No floats: a budget check
//! must not depend on rounding of binary fractions.

use crate::{ModelPrice, NanoUsd};

pub const NANOS_PER_USD: u64 = 1_000_000_000;

/// Whole dollars as nano-dollars (saturating).
pub const fn usd(dollars: u64) -> NanoUsd {
    dollars.saturating_mul(NANOS_PER_USD)
}

/// Cents as nano-dollars (saturating).
pub const fn cents(cents: u64) -> NanoUsd {
    cents.saturating_mul(NANOS_PER_USD / 100)
}

/// `part` as a whole percentage of `whole`, rounded down; `whole == 0` counts
/// as 100% once anything is spent, so a zero budget admits nothing.
pub fn percent_of(part: NanoUsd, whole: NanoUsd) -> u64 {
    basis_points(part, whole) / 100
}

/// `part` in basis points (1/100 of a percent) of `whole`, rounded down.
pub fn basis_points(part: NanoUsd, whole: NanoUsd) -> u64 {
    if whole == 0 {
        return if part == 0 { 0 } else { 10_000 };
    }
    let bp = u128::from(part) * 10_000 / u128::from(whole);
    u64::try_from(bp).unwrap_or(u64::MAX)
}

/// Cost of `input` and `output` tokens at `price` (nano-dollars per million
/// tokens), rounded up to the next nano-dollar so estimates never undercount.
pub fn cost_of(price: &ModelPrice, input: u64, output: u64) -> NanoUsd {
    let total = u128::from(input) * u128::from(price.input) + u128::from(output) * u128::from(price.output);
    u64::try_from(total.div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// `$1,234.56`-style text for reasons: dollars and cents, rounded down.
/// Amounts under a dollar that are not whole cents keep their digits
/// (`$0.0174`), so a small cost never reads as zero.
pub fn format_usd(amount: NanoUsd) -> String {
    let dollars = amount / NANOS_PER_USD;
    let nanos = amount % NANOS_PER_USD;
    if dollars == 0 && !nanos.is_multiple_of(NANOS_PER_USD / 100) {
        let digits = format!("{nanos:09}");
        return format!("${}", format_args!("0.{}", digits.trim_end_matches('0')));
    }
    format!("${}.{:02}", group_thousands(dollars), nanos / (NANOS_PER_USD / 100))
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(usd(3), 3_000_000_000);
        assert_eq!(cents(250), 2_500_000_000);
        assert_eq!(usd(u64::MAX), u64::MAX);
    }

    #[test]
    fn percentages_round_down_and_survive_large_values() {
        assert_eq!(percent_of(usd(80), usd(100)), 80);
        assert_eq!(percent_of(usd(80) - 1, usd(100)), 79);
        assert_eq!(percent_of(u64::MAX, u64::MAX), 100);
        assert_eq!(percent_of(1, 0), 100);
        assert_eq!(percent_of(0, 0), 0);
        assert_eq!(basis_points(usd(1), usd(3)), 3_333);
    }

    #[test]
    fn cost_rounds_up() {
        // Claude Sonnet 4: $3 / $15 per million tokens.
        let price = ModelPrice {
            input: usd(3),
            output: usd(15),
            cache_read: 300_000_000,
            cache_write: 3_750_000_000,
            cache_write_long: usd(6),
        };
        assert_eq!(cost_of(&price, 800, 1000), 17_400_000);
        assert_eq!(cost_of(&price, 1, 0), 3_000);
        let tiny = ModelPrice {
            input: 1,
            output: 0,
            cache_read: 0,
            cache_write: 0,
            cache_write_long: 0,
        };
        assert_eq!(cost_of(&tiny, 1, 0), 1, "a fraction of a nano-dollar rounds up");
    }

    #[test]
    fn formatting() {
        assert_eq!(format_usd(usd(1234) + cents(5)), "$1,234.05");
        assert_eq!(format_usd(0), "$0.00");
        assert_eq!(format_usd(17_400_000), "$0.0174");
        assert_eq!(format_usd(usd(100)), "$100.00");
        assert_eq!(format_usd(35), "$0.000000035");
        assert_eq!(format_usd(cents(5)), "$0.05");
    }
}
