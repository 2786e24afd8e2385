//! `tollgate policy check | test | bench`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tollgate_host::registry::cases::{self, CasesFile};
use tollgate_host::{
    InstanceStrategy, LoadOrigin, PolicyComponent, PolicyEngine, PolicySettings, PolicyVersion, Request, TenantId,
    TenantState,
};

/// Engine for CLI use: the same cache directory as the gateway's default.
pub fn engine(cache_dir: Option<&Path>) -> Result<PolicyEngine> {
    let mut builder = PolicyEngine::builder().max_instances(64);
    if let Some(dir) = cache_dir {
        builder = builder.cache_dir(dir);
    }
    Ok(builder.build()?)
}

fn load(engine: &PolicyEngine, file: &Path) -> Result<(Arc<PolicyComponent>, Duration)> {
    let start = Instant::now();
    let component = engine.load_file(file).with_context(|| format!("{}", file.display()))?;
    Ok((component, start.elapsed()))
}

pub fn check(engine: &PolicyEngine, file: &Path) -> Result<()> {
    let (component, took) = load(engine, file)?;
    let how = match component.origin() {
        LoadOrigin::Compiled => "compiled",
        LoadOrigin::DiskCache => "loaded from the compile cache",
        LoadOrigin::Memory => "already loaded",
    };
    let contract = component.contract();
    let note = if contract < tollgate_host::ContractVersion::CURRENT {
        format!(
            " (an older contract, still supported; rebuild against {} for its new fields)",
            tollgate_host::ContractVersion::CURRENT
        )
    } else {
        String::new()
    };
    println!("{}: ok, a {contract} policy{note}", file.display());
    println!("  size     {:.1} KiB", component.size() as f64 / 1024.0);
    println!("  sha256   {}", component.digest());
    println!("  load     {how} in {took:.2?}");
    let list = |items: &[tollgate_host::ComponentItem]| {
        items
            .iter()
            .map(|i| format!("{} ({})", i.name, i.kind))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("  exports  {}", list(component.exports()));
    println!("  imports  {}", list(component.imports()));
    if !component.has_validate_config() {
        println!("  note     no `validate-config` export: any policy parameters are accepted unchecked");
    }
    Ok(())
}

fn version(
    engine: &PolicyEngine,
    file: &Path,
    config: Option<&str>,
    strategy: InstanceStrategy,
) -> Result<PolicyVersion> {
    let (component, _) = load(engine, file)?;
    let settings = PolicySettings {
        config: config.unwrap_or_default().to_owned(),
        instances: strategy,
        // The CLI measures and tests; give cold first calls room.
        deadline_ms: 50,
        ..PolicySettings::default()
    };
    let tenant = TenantId::new("cli")?;
    Ok(PolicyVersion::build(
        engine,
        component,
        tenant,
        1,
        settings,
        file.display().to_string(),
    )?)
}

pub fn test(engine: &PolicyEngine, file: &Path, cases_path: &Path, config: Option<&str>) -> Result<()> {
    let cases = CasesFile::load(cases_path)?;
    let version = version(engine, file, config, InstanceStrategy::default())?;
    println!("{} against {}", file.display(), cases_path.display());
    let outcomes = cases::run(&version, &cases);
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    for outcome in &outcomes {
        println!("  {outcome}");
    }
    println!("{} passed, {failed} failed", outcomes.len() - failed);
    if failed > 0 {
        bail!("{failed} of {} cases failed", outcomes.len());
    }
    Ok(())
}

pub struct BenchOptions {
    pub cases: Option<PathBuf>,
    pub config: Option<String>,
    pub duration: Duration,
    pub threads: usize,
    pub fresh: bool,
}

pub fn bench(engine: &PolicyEngine, file: &Path, options: &BenchOptions) -> Result<()> {
    let strategy = if options.fresh {
        InstanceStrategy::Fresh
    } else {
        InstanceStrategy::Pooled {
            max_idle: options.threads.max(1),
        }
    };
    let version = Arc::new(version(engine, file, options.config.as_deref(), strategy)?);
    let (request, state) = match &options.cases {
        Some(path) => {
            let cases = CasesFile::load(path)?;
            let case = cases.cases.into_iter().next().context("the cases file has no case")?;
            (case.request, case.state)
        }
        None => (bench_request(), TenantState::default()),
    };
    // Warm up: first calls fault in code and memory.
    let mut warm = request.clone();
    for _ in 0..100 {
        version.decide(&mut warm, &state);
    }
    let failed = version.decide(&mut warm, &state);
    if let Some(failure) = &failed.failure {
        bail!("the policy fails on the bench request: {failure}");
    }
    let deadline = Instant::now() + options.duration;
    let mut handles = Vec::new();
    for _ in 0..options.threads.max(1) {
        let version = Arc::clone(&version);
        let mut request = request.clone();
        let state = state.clone();
        handles.push(std::thread::spawn(move || {
            let mut samples = Vec::with_capacity(1 << 20);
            while Instant::now() < deadline {
                for _ in 0..64 {
                    let start = Instant::now();
                    std::hint::black_box(version.decide(&mut request, &state));
                    samples.push(start.elapsed());
                }
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for handle in handles {
        samples.extend(handle.join().map_err(|_| anyhow::anyhow!("a bench thread panicked"))?);
    }
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    let secs = options.duration.as_secs_f64();
    println!(
        "{}: {} instances, {} thread(s), {:.1} s",
        file.display(),
        if options.fresh { "fresh" } else { "pooled" },
        options.threads.max(1),
        secs
    );
    println!("  decisions/s  {:.0}", samples.len() as f64 / secs);
    println!(
        "  latency      p50 {:.2?}  p90 {:.2?}  p99 {:.2?}  p99.9 {:.2?}  max {:.2?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        samples[samples.len() - 1]
    );
    if let Some(bytes) = version.instance_memory_bytes() {
        println!(
            "  memory       {:.1} MiB of linear memory per instance",
            bytes as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}

/// A typical request: a chat call to a mid-priced model.
pub fn bench_request() -> Request {
    Request {
        request_id: "bench".into(),
        tenant_id: "cli".into(),
        user_id: "user-42".into(),
        use_case: "chat".into(),
        model_id: "us.anthropic.claude-3-5-haiku-20241022-v1:0".into(),
        base_model_id: "anthropic.claude-3-5-haiku-20241022-v1:0".into(),
        estimated_input_tokens: 1200,
        max_output_tokens: 1000,
        worst_case_cost: 4_960_000,
        metadata: vec![("user".into(), "user-42".into()), ("use-case".into(), "chat".into())],
        now_ms: 1_767_225_600_000,
        ..Request::default()
    }
}
