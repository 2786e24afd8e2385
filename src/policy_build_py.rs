//! `tollgate policy build` for a Python policy: componentize-py bundles
//! CPython, the policy and the helper module into one component.
//!
//! The interpreter is initialised and the policy module imported at build
//! time (a snapshot), so a fresh instance does not run Python start-up.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::policy_guest::{PYTHON_HELPER, Tools, component_name, run, staging};

/// Builds `dir/policy.py` into `<out>/<dir>_py.wasm`.
pub fn build(dir: &Path, out_dir: &Path, tools: &Tools) -> Result<PathBuf> {
    let name = component_name(dir, "py")?;
    let stage = staging(out_dir, &name, "tollgate_policy.py", PYTHON_HELPER)?;
    let dest = out_dir.join(format!("{name}.wasm"));
    let mut command = tools.command("python-venv/bin/componentize-py", "componentize-py")?;
    command
        .arg("--wit-path")
        .arg(stage.join("wit"))
        .args(["--world", "policy", "--quiet", "componentize"])
        .arg("--python-path")
        .arg(dir)
        .arg("--python-path")
        .arg(&stage)
        .arg("--output")
        .arg(&dest)
        .arg("policy");
    run(command, "componentize-py")?;
    Ok(dest)
}
