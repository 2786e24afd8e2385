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
//! - A component file seen before is known by its digest without being read
//!   again, through a note keyed by the file's identity: path, device,
//!   inode, size, and modification and change times to the nanosecond. Any
//!   write to the file changes its change time, so the note no longer
//!   matches and the file is read and hashed again.

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
        self.write_atomically(&path, &format!("{digest}-{}", self.engine_key), artifact)?;
        Ok(path)
    }

    /// The content digest noted for a file with this identity, if any.
    pub fn digest_of(&self, file: &FileIdentity) -> Option<String> {
        let noted = std::fs::read_to_string(self.note_path(file)).ok()?;
        let digest = noted.trim();
        (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit())).then(|| digest.to_owned())
    }

    /// Notes that the file with this identity has this content digest. A
    /// note that cannot be written only costs a read and a hash next time.
    pub fn note_digest(&self, file: &FileIdentity, digest: &str) {
        let path = self.note_path(file);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Err(err) = self.write_atomically(&path, &name, digest.as_bytes()) {
            tracing::debug!(path = %path.display(), error = %err, "cannot note a policy file's digest");
        }
    }

    fn note_path(&self, file: &FileIdentity) -> PathBuf {
        self.dir.join(format!("{}.digest", file.key))
    }

    fn write_atomically(&self, path: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    }
}

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentity {
    key: String,
    /// The file's size in bytes.
    pub len: u64,
}

impl FileIdentity {
    /// The identity of the file at `path` now; `None` where the platform
    /// does not give inode and change times (the file is then always read).
    #[cfg(unix)]
    pub fn of(path: &Path) -> Option<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let path = std::fs::canonicalize(path).ok()?;
        let meta = std::fs::metadata(&path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let mut hasher = Sha256::new();
        hasher.update(path.as_os_str().as_encoded_bytes());
        for n in [meta.dev(), meta.ino(), meta.size()] {
            hasher.update(n.to_le_bytes());
        }
        for n in [meta.mtime(), meta.mtime_nsec(), meta.ctime(), meta.ctime_nsec()] {
            hasher.update(n.to_le_bytes());
        }
        Some(FileIdentity {
            key: hex::encode(&hasher.finalize()[..16]),
            len: meta.size(),
        })
    }

    #[cfg(not(unix))]
    pub fn of(_path: &Path) -> Option<FileIdentity> {
        None
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
