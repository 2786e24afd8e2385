//! `tollgate policy build` for a JavaScript policy: esbuild bundles the
//! policy with the helper module, then one of two engines makes the
//! component (see `benches/RESULTS.md` for how they compare):
//! - QuickJS (componentize-qjs, the default): small and fast to call;
//! - StarlingMonkey (componentize-js, SpiderMonkey-based): a JIT-less
//!   SpiderMonkey, the engine of the Bytecode Alliance's JS tooling.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::policy_guest::{JS_HELPER, Tools, component_name, run, staging};

/// The JavaScript engine compiled into the component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum JsEngine {
    #[default]
    Quickjs,
    Starlingmonkey,
}

/// Builds `dir/policy.js` into `<out>/<dir>_js.wasm`.
pub fn build(dir: &Path, out_dir: &Path, tools: &Tools, engine: JsEngine) -> Result<PathBuf> {
    let name = component_name(dir, "js")?;
    let stage = staging(out_dir, &name, "tollgate-policy.js", JS_HELPER)?;
    let bundle = stage.join("bundle.js");
    let mut esbuild = tools.command("npm/node_modules/.bin/esbuild", "esbuild")?;
    esbuild
        .arg(dir.join("policy.js"))
        .args(["--bundle", "--format=esm", "--platform=neutral", "--log-level=warning"])
        .arg(format!(
            "--alias:tollgate-policy={}",
            stage.join("tollgate-policy.js").display()
        ))
        // The contract's interfaces are imports of the component, not files.
        .arg("--external:tollgate:*")
        .arg(format!("--outfile={}", bundle.display()));
    run(esbuild, "esbuild")?;

    let dest = out_dir.join(format!("{name}.wasm"));
    let wit = stage.join("wit");
    let command = match engine {
        JsEngine::Quickjs => {
            let mut c = tools.command("npm/node_modules/.bin/componentize-qjs", "componentize-qjs")?;
            // --sync: the host runs policies without component-model async.
            c.arg("--sync")
                .arg("--wit")
                .arg(&wit)
                .args(["--world", "policy", "--js"])
                .arg(&bundle)
                .arg("--output")
                .arg(&dest);
            c
        }
        JsEngine::Starlingmonkey => {
            let mut c = tools.command("npm/node_modules/.bin/componentize-js", "componentize-js")?;
            c.arg(&bundle)
                .arg("--wit")
                .arg(&wit)
                .args(["--world-name", "policy", "--out"])
                .arg(&dest)
                // Without these the component would import wasi:http.
                .args(["--disable", "http", "fetch-event"]);
            c
        }
    };
    run(command, "the JavaScript componentizer")?;
    Ok(dest)
}
