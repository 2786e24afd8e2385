//! Money as integer nano-dollars (1e-9 USD). Never floats: every figure a
//! tenant is charged must add up exactly, and costs round up.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An amount of money in nano-dollars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NanoUsd(pub u64);

impl NanoUsd {
    pub const ZERO: NanoUsd = NanoUsd(0);
    /// One US dollar.
    pub const PER_USD: u64 = 1_000_000_000;

    pub const fn from_usd(dollars: u64) -> Self {
        NanoUsd(dollars.saturating_mul(Self::PER_USD))
    }

    pub const fn from_cents(cents: u64) -> Self {
        NanoUsd(cents.saturating_mul(Self::PER_USD / 100))
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    pub const fn saturating_add(self, other: NanoUsd) -> NanoUsd {
        NanoUsd(self.0.saturating_add(other.0))
    }

    pub const fn saturating_sub(self, other: NanoUsd) -> NanoUsd {
        NanoUsd(self.0.saturating_sub(other.0))
    }

    /// The cost of `tokens` at `per_million` nano-dollars per million tokens,
    /// rounded up to the next nano-dollar.
    pub fn for_tokens(tokens: u64, per_million: NanoUsd) -> NanoUsd {
        let product = u128::from(tokens) * u128::from(per_million.0);
        let cost = product.div_ceil(1_000_000);
        NanoUsd(u64::try_from(cost).unwrap_or(u64::MAX))
    }

    /// Exact decimal dollars → nano-dollars: "3", "3.30", "$0.00875".
    pub fn parse_usd(text: &str) -> Option<NanoUsd> {
        let text = text.trim();
        let text = text.strip_prefix('$').unwrap_or(text);
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(frac) || frac.len() > 9 {
            return None;
        }
        if text.ends_with('.') {
            return None;
        }
        let whole: u64 = whole.parse().ok()?;
        let frac_nanos: u64 = if frac.is_empty() {
            0
        } else {
            frac.parse::<u64>().ok()? * 10u64.pow(9 - frac.len() as u32)
        };
        whole
            .checked_mul(NanoUsd::PER_USD)?
            .checked_add(frac_nanos)
            .map(NanoUsd)
    }
}

impl fmt::Display for NanoUsd {
    /// Exact dollars: `$12.345678901`, trailing zeros of the fraction trimmed
    /// to at least cents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dollars = self.0 / Self::PER_USD;
        let frac = self.0 % Self::PER_USD;
        let mut digits = format!("{frac:09}");
        while digits.len() > 2 && digits.ends_with('0') {
            digits.pop();
        }
        write!(f, "${dollars}.{digits}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_cost_rounds_up() {
        // 1 token at $3 per million = 3000 nano-dollars exactly.
        assert_eq!(NanoUsd::for_tokens(1, NanoUsd::from_usd(3)), NanoUsd(3_000));
        // 1 token at 1 nano-dollar per million is a millionth: rounds up to 1.
        assert_eq!(NanoUsd::for_tokens(1, NanoUsd(1)), NanoUsd(1));
        assert_eq!(NanoUsd::for_tokens(0, NanoUsd(1)), NanoUsd(0));
        assert_eq!(NanoUsd::for_tokens(u64::MAX, NanoUsd(u64::MAX)), NanoUsd(u64::MAX));
    }

    #[test]
    fn displays_exact_dollars() {
        assert_eq!(NanoUsd(0).to_string(), "$0.00");
        assert_eq!(NanoUsd::from_usd(12).to_string(), "$12.00");
        assert_eq!(NanoUsd(12_345_678_901).to_string(), "$12.345678901");
        assert_eq!(NanoUsd::from_cents(150).to_string(), "$1.50");
    }
}
