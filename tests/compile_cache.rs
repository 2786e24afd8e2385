//! A restart reuses the compile cache: the second process maps the
//! precompiled artifact instead of compiling (asserted, not assumed).

mod support;

use support::*;
use tollgate_host::{LoadOrigin, PolicyEngine};

#[test]
fn a_second_engine_loads_from_the_disk_cache() {
    let cache = std::env::temp_dir().join(format!("tollgate-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let bytes = wasm("budget-guard");

    let first = PolicyEngine::builder()
        .cache_dir(&cache)
        .max_instances(8)
        .build()
        .expect("engine");
    let component = first.load(&bytes).expect("load");
    assert_eq!(component.origin(), LoadOrigin::Compiled);
    // Same bytes in the same process: deduplicated in memory.
    assert_eq!(first.load(&bytes).expect("load").origin(), LoadOrigin::Memory);
    drop(component);
    drop(first);

    let artifacts: Vec<_> = std::fs::read_dir(&cache).expect("cache dir").collect();
    assert_eq!(artifacts.len(), 1, "one artifact per component");

    let second = PolicyEngine::builder()
        .cache_dir(&cache)
        .max_instances(8)
        .build()
        .expect("engine");
    assert_eq!(second.load(&bytes).expect("load").origin(), LoadOrigin::DiskCache);

    // A corrupt artifact is discarded and rebuilt, never trusted.
    let artifact = std::fs::read_dir(&cache)
        .expect("dir")
        .next()
        .expect("one")
        .expect("entry")
        .path();
    std::fs::write(&artifact, b"garbage").expect("corrupt");
    let third = PolicyEngine::builder()
        .cache_dir(&cache)
        .max_instances(8)
        .build()
        .expect("engine");
    assert_eq!(third.load(&bytes).expect("load").origin(), LoadOrigin::Compiled);
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn a_restarted_process_reuses_the_cache() {
    let cache = std::env::temp_dir().join(format!("tollgate-cache-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let check = || {
        let out = tollgate()
            .args(["policy", "check", "--cache-dir"])
            .arg(&cache)
            .arg(component("tiered"))
            .output()
            .expect("run");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(check().contains("load     compiled"));
    assert!(check().contains("load     loaded from the compile cache"));
    let _ = std::fs::remove_dir_all(&cache);
}

/// A file loaded before is known by its digest without being read again,
/// and any change to it is seen: the file is then read and hashed afresh.
#[test]
fn an_unchanged_file_is_not_hashed_again_and_a_changed_one_is() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    let file = dir.path().join("policy.wasm");
    let engine = || {
        PolicyEngine::builder()
            .cache_dir(&cache)
            .max_instances(8)
            .build()
            .expect("engine")
    };
    std::fs::write(&file, wasm("budget-guard")).expect("write");
    let first = engine().load_file(&file).expect("load");
    assert_eq!(first.origin(), LoadOrigin::Compiled);
    let notes = || {
        std::fs::read_dir(&cache)
            .expect("cache dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "digest"))
            })
            .count()
    };
    assert_eq!(notes(), 1, "the file's digest was noted");
    let again = engine().load_file(&file).expect("load");
    assert_eq!(again.origin(), LoadOrigin::DiskCache);
    assert_eq!(again.digest(), first.digest());
    assert_eq!(again.size(), first.size());

    // Rewritten in place with other bytes: the new component, never the old.
    std::fs::write(&file, wasm("allow-all")).expect("rewrite");
    let changed = engine().load_file(&file).expect("load");
    assert_ne!(changed.digest(), first.digest());
    assert_eq!(
        changed.digest(),
        engine().load(&wasm("allow-all")).expect("load").digest()
    );

    // A note that is not a digest is ignored, not trusted.
    for note in std::fs::read_dir(&cache).expect("dir").flatten() {
        if note.path().extension().is_some_and(|x| x == "digest") {
            std::fs::write(note.path(), "not a digest").expect("spoil");
        }
    }
    assert_eq!(engine().load_file(&file).expect("load").digest(), changed.digest());
}
