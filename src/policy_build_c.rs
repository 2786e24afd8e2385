//! `tollgate policy build` for a C policy: the contract's C bindings are
//! generated in-process (wit-bindgen's C generator), every `.c` file of the
//! directory is compiled with the helper by Zig's clang for `wasm32-wasi`
//! as a reactor, and the module is wrapped as a component.
//!
//! WASI only for its libc (malloc, snprintf): a module that calls anything
//! that needs the system (printf, files, clocks) is refused here, so a C
//! policy imports nothing but the tollgate host, like a Rust one.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use wit_bindgen_core::Files;
use wit_bindgen_core::wit_parser::Resolve;

use crate::policy_build::componentize;
use crate::policy_guest::{C_HELPER, C_HELPER_HEADER, Tools, WIT, component_name, staging};

const STACK_BYTES: u32 = 1 << 20;

/// Builds the `.c` files of `dir` into `<out>/<dir>_c.wasm`.
pub fn build(dir: &Path, out_dir: &Path, tools: &Tools) -> Result<PathBuf> {
    let name = component_name(dir, "c")?;
    let stage = staging(out_dir, &name, "tollgate_policy.c", C_HELPER)?;
    std::fs::write(stage.join("tollgate_policy.h"), C_HELPER_HEADER)?;
    for (file, contents) in bindings()?.iter() {
        std::fs::write(stage.join(file), contents).with_context(|| format!("cannot write {file}"))?;
    }
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "c") && p.is_file())
        .collect();
    sources.sort();

    let module = stage.join(format!("{name}.core.wasm"));
    let mut command = compiler(tools)?;
    command
        .args([
            "cc",
            "-target",
            "wasm32-wasi",
            "-mexec-model=reactor",
            "-O2",
            "-s",
            "-Wall",
        ])
        // Zig's default stack is 16 MiB, the whole of a tenant's default
        // memory cap; Rust policies get 1 MiB.
        .arg(format!("-Wl,-z,stack-size={STACK_BYTES}"))
        .arg("-I")
        .arg(&stage)
        .arg("-I")
        .arg(dir)
        .args(&sources)
        .arg(stage.join("tollgate_policy.c"))
        .arg(stage.join("policy.c"))
        .arg(stage.join("policy_component_type.o"))
        .arg("-o")
        .arg(&module);
    compile(command)?;

    let bytes = std::fs::read(&module).with_context(|| format!("cannot read {}", module.display()))?;
    refuse_system_imports(&bytes)?;
    let component = componentize(&bytes).context("cannot make a component of the compiled policy")?;
    let dest = out_dir.join(format!("{name}.wasm"));
    std::fs::write(&dest, component).with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(dest)
}

/// `policy.h`, `policy.c` and `policy_component_type.o` for the contract.
fn bindings() -> Result<Files> {
    let mut resolve = Resolve::default();
    let package = resolve
        .push_str("policy.wit", WIT)
        .context("the embedded contract does not parse")?;
    let world = resolve.select_world(&[package], Some("policy"))?;
    let mut files = Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .context("cannot generate the C bindings of the contract")?;
    Ok(files)
}

/// Zig from the tools' Python environment (the `ziglang` package of
/// `policies/toolchain/requirements.txt`), else `zig` on PATH.
fn compiler(tools: &Tools) -> Result<Command> {
    if let Some(lib) = tools.dir().map(|d| d.join("python-venv/lib"))
        && let Ok(entries) = std::fs::read_dir(&lib)
    {
        for entry in entries.filter_map(Result::ok) {
            let zig = entry.path().join("site-packages/ziglang/zig");
            if zig.is_file() {
                return Ok(Command::new(zig));
            }
        }
    }
    tools.command("zig/zig", "zig")
}

/// Runs the compiler: its errors fail the build with the compiler's own
/// words; its warnings are passed on.
fn compile(mut command: Command) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot run the C compiler ({:?})", command.get_program()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "the C compiler failed:\n{}{stderr}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    if !stderr.trim().is_empty() {
        eprint!("{stderr}");
    }
    Ok(())
}

/// A policy gets the tollgate host and nothing else: a module that imports
/// WASI (stdio, files, clocks, random) would not load, so say which
/// functions pulled it in.
fn refuse_system_imports(module: &[u8]) -> Result<()> {
    let mut foreign = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::ImportSection(reader) = payload.context("the compiled module is not valid")? {
            for import in reader.into_imports() {
                let import = import.context("the compiled module is not valid")?;
                if !import.module.starts_with("tollgate:policy/") {
                    foreign.push(format!("{}::{}", import.module, import.name));
                }
            }
        }
    }
    if !foreign.is_empty() {
        bail!(
            "the policy uses functions that need the operating system ({}): a policy may only call the tollgate host. \
             Remove stdio, file, clock and random calls (printf, fopen, time, rand…); log with tollgate_log",
            foreign.join(", ")
        );
    }
    Ok(())
}
