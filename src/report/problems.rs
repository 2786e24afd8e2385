//! What a report skipped or could not price, told rather than fatal: a bad
//! line costs that line, an unknown model costs its price, not the report.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

/// Places of bad lines kept to show; the rest are only counted.
const SHOWN: usize = 5;

#[derive(Default, Serialize)]
pub struct Problems {
    /// Lines that are not a record of their log's format.
    pub malformed: u64,
    /// The first few: where, and what is wrong.
    pub first_malformed: Vec<Place>,
    /// Files that stopped being readable part way (a truncated download).
    pub broken_files: Vec<Place>,
    /// Models without a price: their calls count with no spend.
    pub unpriced: BTreeMap<String, Unpriced>,
}

#[derive(Serialize)]
pub struct Place {
    pub file: String,
    pub line: u64,
    pub error: String,
}

#[derive(Serialize)]
pub struct Unpriced {
    pub calls: u64,
    /// Why, the first time.
    pub reason: String,
}

impl Problems {
    pub fn malformed(&mut self, file: &Path, line: u64, error: String) {
        self.malformed += 1;
        if self.first_malformed.len() < SHOWN {
            self.first_malformed.push(Place {
                file: file.display().to_string(),
                line,
                error,
            });
        }
    }

    pub fn broken(&mut self, file: &Path, after_line: u64, error: String) {
        self.broken_files.push(Place {
            file: file.display().to_string(),
            line: after_line,
            error,
        });
    }

    pub fn unpriced(&mut self, model: &str, reason: String) {
        match self.unpriced.get_mut(model) {
            Some(u) => u.calls += 1,
            None => {
                self.unpriced.insert(model.to_owned(), Unpriced { calls: 1, reason });
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.malformed == 0 && self.broken_files.is_empty() && self.unpriced.is_empty()
    }

    /// The problems in words, for stderr.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.malformed > 0 {
            lines.push(format!(
                "warning: skipped {} malformed line{}{}:",
                self.malformed,
                if self.malformed == 1 { "" } else { "s" },
                if self.malformed as usize > self.first_malformed.len() {
                    format!(", the first {}", self.first_malformed.len())
                } else {
                    String::new()
                }
            ));
            for p in &self.first_malformed {
                lines.push(format!("  {}:{}: {}", p.file, p.line, p.error));
            }
        }
        for p in &self.broken_files {
            lines.push(format!(
                "warning: {} could not be read past line {}: {}; its earlier lines are counted",
                p.file, p.line, p.error
            ));
        }
        for (model, u) in &self.unpriced {
            lines.push(format!(
                "warning: {} call{} to {model} counted without a price: {}",
                u.calls,
                if u.calls == 1 { "" } else { "s" },
                u.reason
            ));
        }
        lines
    }
}
