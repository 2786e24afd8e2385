//! On-disk cache of precompiled policy components.
//!
//! Invariants:
//! - An artifact is keyed by the sha256 of the component's bytes and by the
//!   engine's compatibility hash (wasmtime version, target, settings), so a
//!   restart with the same engine reuses it and any other engine ignores it.
//! - Files are written to a temporary name and renamed into place, so a crash
//!   never leaves a truncated artifact under a real key.
//! - The directory is trusted: artifacts are native code that is mapped and
//!   run without re-validation. Keep it writable by the service user only.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of precompiled components for one engine configuration.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

impl ArtifactCache {
    /// Opens (creating if needed) a cache directory for `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut hasher = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Ok(ArtifactCache {
            dir: dir.to_path_buf(),
            engine_key,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the artifact for a component with this content digest lives.
    pub fn path_for(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// Maps a cached artifact, or `None` if there is none or it is unusable
    /// (an unusable file is removed so it is rebuilt).
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path_for(digest);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was produced by `Engine::precompile_component` for
        // an engine with the same compatibility hash and renamed into place
        // whole; the directory is trusted (see the module invariants).
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "discarding unusable precompiled policy");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a precompiled artifact atomically and returns its path.
    pub fn store(&self, digest: &str, artifact: &[u8]) -> std::io::Result<PathBuf> {
        let path = self.path_for(digest);
        let tmp = self
            .dir
            .join(format!(".{digest}-{}.{}.tmp", self.engine_key, std::process::id()));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(artifact)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }
}

/// Feeds `Hash` output into sha256 so the key is stable across processes.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        unreachable!("only the sha256 digest is read")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Hex sha256 of a component's bytes: its identity everywhere in tollgate.
pub fn content_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
