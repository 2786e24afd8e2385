//! `tollgate policy build`: compile a Rust policy crate or workspace for
//! `wasm32-unknown-unknown` and wrap each module as a component; Python,
//! JavaScript and C policy directories go to their own builders.
//!
//! Building for `wasm32-unknown-unknown` (not WASI) keeps Rust policies free
//! of any import but the tollgate host interface.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::policy_build_js::{self, JsEngine};
use crate::policy_guest::{Language, Tools};
use crate::{policy_build_c, policy_build_py};

pub const TARGET: &str = "wasm32-unknown-unknown";

/// Builds a policy directory in whatever language it is written in. Python,
/// JavaScript and C components go to `out` (default: `<dir>/target`).
pub fn build_dir(dir: &Path, out: Option<&Path>, tools: Option<&Path>, js_engine: JsEngine) -> Result<Vec<PathBuf>> {
    let language = Language::of(dir)?;
    if language == Language::Rust {
        return build(dir, out);
    }
    let out_dir = out.map_or_else(|| dir.join("target"), Path::to_path_buf);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let tools = Tools::locate(tools);
    let built = match language {
        Language::Python => policy_build_py::build(dir, &out_dir, &tools)?,
        Language::C => policy_build_c::build(dir, &out_dir, &tools)?,
        _ => policy_build_js::build(dir, &out_dir, &tools, js_engine)?,
    };
    Ok(vec![built])
}

/// Builds every cdylib under `manifest_dir` and writes components to `out`
/// (default: `<target-dir>/components`). Returns the component paths.
pub fn build(manifest_dir: &Path, out: Option<&Path>) -> Result<Vec<PathBuf>> {
    let manifest = manifest_dir.join("Cargo.toml");
    if !manifest.exists() {
        bail!(
            "{} has no Cargo.toml: point `tollgate policy build` at a Rust policy crate or workspace",
            manifest_dir.display()
        );
    }
    ensure_target()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run cargo; is the Rust toolchain installed?")?;
    let stdout = child.stdout.take().context("cargo's output is not readable")?;
    let mut modules = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let is_cdylib = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if !is_cdylib {
            continue;
        }
        for file in message["filenames"].as_array().into_iter().flatten() {
            if let Some(path) = file.as_str().filter(|f| f.ends_with(".wasm")) {
                modules.push(PathBuf::from(path));
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo build of {} failed (see the errors above)", manifest.display());
    }
    let mut components = Vec::new();
    for module in modules {
        let out_dir = match out {
            Some(dir) => dir.to_path_buf(),
            None => components_dir_for(&module),
        };
        std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
        let name = module.file_name().context("artifact without a file name")?;
        let dest = out_dir.join(name);
        componentize_file(&module, &dest)?;
        components.push(dest);
    }
    Ok(components)
}

/// `<target>/wasm32-unknown-unknown/release/x.wasm` → `<target>/components`.
fn components_dir_for(module: &Path) -> PathBuf {
    module
        .ancestors()
        .nth(3)
        .map(|target| target.join("components"))
        .unwrap_or_else(|| PathBuf::from("components"))
}

/// Wraps a core module that carries wit-bindgen's component-type section.
pub fn componentize_file(module: &Path, dest: &Path) -> Result<()> {
    let bytes = std::fs::read(module).with_context(|| format!("cannot read {}", module.display()))?;
    let component = componentize(&bytes).with_context(|| format!("cannot make a component of {}", module.display()))?;
    let tmp = dest.with_extension("wasm.tmp");
    std::fs::write(&tmp, component).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, dest).with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(())
}

pub fn componentize(module: &[u8]) -> Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .module(module)
        .context("the module has no usable component-type section; build it with wit-bindgen")?
        .validate(true)
        .encode()
}

/// Installs the wasm target with rustup when it is missing.
fn ensure_target() -> Result<()> {
    let Ok(output) = Command::new("rustup").args(["target", "list", "--installed"]).output() else {
        // No rustup: let cargo report a missing target itself.
        return Ok(());
    };
    let installed = String::from_utf8_lossy(&output.stdout);
    if installed.lines().any(|l| l.trim() == TARGET) {
        return Ok(());
    }
    eprintln!("installing the {TARGET} target with rustup…");
    let status = Command::new("rustup").args(["target", "add", TARGET]).status()?;
    if !status.success() {
        bail!("`rustup target add {TARGET}` failed; install the target and try again");
    }
    Ok(())
}

/// Builds the example policies for the demos (this checkout's `policies/`
/// unless `dir` names another workspace), saying so on stdout, and returns
/// the directory holding the components.
pub fn build_examples(dir: Option<PathBuf>) -> Result<PathBuf> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies"));
    println!("building the example policies from {} …", dir.display());
    let start = std::time::Instant::now();
    let built = build(&dir, None)?;
    let components = built
        .first()
        .and_then(|p| p.parent())
        .context("no policy components were built")?
        .to_path_buf();
    println!("  {} components in {:.1?}", built.len(), start.elapsed());
    Ok(components)
}
