//! Policies in languages other than Rust: which language a policy directory is
//! written in, where its toolchain is, and the files every build needs
//! (the contract's WIT and the language's helper module), embedded in the
//! binary so `tollgate policy build` works in any folder.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The contract, as compiled into this binary.
pub const WIT: &str = include_str!("../wit/policy.wit");
/// The Python helper module (`import tollgate_policy`).
pub const PYTHON_HELPER: &str = include_str!("../policies/python/tollgate_policy.py");
/// The JavaScript helper module (`import … from "tollgate-policy"`).
pub const JS_HELPER: &str = include_str!("../policies/js/tollgate-policy.js");
/// The C helper (`#include "tollgate_policy.h"`) and its implementation.
pub const C_HELPER_HEADER: &str = include_str!("../policies/c/tollgate_policy.h");
pub const C_HELPER: &str = include_str!("../policies/c/tollgate_policy.c");

/// The language of a policy directory, told by its entry file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// `Cargo.toml`: a crate or workspace of Rust policies.
    Rust,
    /// `policy.py` defining `class WitWorld(tollgate_policy.Policy)`.
    Python,
    /// `policy.js` exporting `decide` and `validateConfig`.
    JavaScript,
    /// `policy.c` defining `decide` and `validate_config` (and any other
    /// `.c` files of the directory).
    C,
}

impl Language {
    pub fn of(dir: &Path) -> Result<Self> {
        if dir.join("Cargo.toml").exists() {
            Ok(Language::Rust)
        } else if dir.join("policy.py").exists() {
            Ok(Language::Python)
        } else if dir.join("policy.js").exists() {
            Ok(Language::JavaScript)
        } else if dir.join("policy.c").exists() {
            Ok(Language::C)
        } else {
            bail!(
                "{} has no Cargo.toml, policy.py, policy.js or policy.c: point `tollgate policy build` at a policy directory (see docs/policies.md)",
                dir.display()
            )
        }
    }
}

/// Finds the guest toolchain installed by `policies/toolchain/install.sh`:
/// in `--tools`, then `$TOLLGATE_TOOLS`, then `./.tools`, then on `PATH`.
pub struct Tools {
    dir: Option<PathBuf>,
}

impl Tools {
    pub fn locate(explicit: Option<&Path>) -> Self {
        let dir = explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("TOLLGATE_TOOLS").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from(".tools")).filter(|d| d.is_dir()));
        Tools { dir }
    }

    /// The tools directory, when one was given or found.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// A command of the toolchain: `relative` inside the tools directory,
    /// else `name` on `PATH`.
    pub fn command(&self, relative: &str, name: &str) -> Result<Command> {
        if let Some(dir) = &self.dir {
            let path = dir.join(relative);
            if path.exists() {
                return Ok(Command::new(path));
            }
        }
        let on_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
            .unwrap_or(false);
        if !on_path {
            let looked = self
                .dir
                .as_ref()
                .map_or_else(String::new, |d| format!(" in {} nor", d.display()));
            bail!(
                "`{name}` was found neither{looked} on PATH; install the policy toolchain with `policies/toolchain/install.sh` and pass `--tools .tools`"
            );
        }
        Ok(Command::new(name))
    }
}

/// A scratch directory beside the output with the WIT and a helper module.
pub fn staging(out_dir: &Path, name: &str, helper_file: &str, helper: &str) -> Result<PathBuf> {
    let dir = out_dir.join(format!(".build-{name}"));
    let wit = dir.join("wit");
    std::fs::create_dir_all(&wit).with_context(|| format!("cannot create {}", wit.display()))?;
    std::fs::write(wit.join("policy.wit"), WIT)?;
    std::fs::write(dir.join(helper_file), helper)?;
    // Absolute: the bundler resolves aliases against its working directory.
    dir.canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))
}

/// Runs a toolchain command; on failure its output is shown.
pub fn run(mut command: Command, what: &str) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {what} ({:?})", command.get_program()))?;
    if !output.status.success() {
        bail!(
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// `budget-guard` + `py` → `budget_guard_py`.
pub fn component_name(dir: &Path, suffix: &str) -> Result<String> {
    let base = dir
        .canonicalize()
        .with_context(|| format!("cannot read {}", dir.display()))?
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.replace('-', "_"))
        .context("the policy directory has no usable name")?;
    Ok(format!("{base}_{suffix}"))
}
