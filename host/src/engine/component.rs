//! A policy component that has been compiled and checked against the
//! contract, ready to instantiate.
//!
//! Invariants:
//! - It imports nothing but `tollgate:policy/host`, `tollgate:policy/types`
//!   (of one contract version) and the WASI interfaces of
//!   [`crate::engine::wasi::PROVIDED`].
//! - It exports `decide` with exactly the signature of one contract version,
//!   recorded as `contract`; if it exports
//!   `validate-config`, that has the contract's signature too.
//! - It is immutable and shared (`Arc`) by every tenant version that uses the
//!   same bytes; the engine deduplicates by content digest.

use wasmtime::component::{ComponentExportIndex, InstancePre, types::ComponentItem};

use crate::contract::ContractVersion;
use crate::engine::sandbox::CallContext;

/// Where a component's machine code came from when it was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadOrigin {
    /// Compiled from the Wasm bytes (and written to the artifact cache).
    Compiled,
    /// Mapped from a precompiled artifact on disk.
    DiskCache,
    /// Shared with a component already loaded in this process.
    Memory,
}

/// One import or export of a component, for `tollgate policy check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub name: String,
    pub kind: &'static str,
}

/// A compiled, checked policy component.
pub struct PolicyComponent {
    pub(crate) digest: String,
    pub(crate) pre: InstancePre<CallContext>,
    pub(crate) decide: ComponentExportIndex,
    pub(crate) validate_config: Option<ComponentExportIndex>,
    /// The contract version `decide` was built against.
    pub(crate) contract: ContractVersion,
    pub(crate) origin: LoadOrigin,
    pub(crate) size: usize,
    pub(crate) imports: Vec<Item>,
    pub(crate) exports: Vec<Item>,
}

impl PolicyComponent {
    /// Hex sha256 of the component's bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The first 12 hex digits of the digest, for display.
    pub fn short_digest(&self) -> &str {
        &self.digest[..12]
    }

    pub fn origin(&self) -> LoadOrigin {
        self.origin
    }

    /// Size of the component's Wasm bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn imports(&self) -> &[Item] {
        &self.imports
    }

    pub fn exports(&self) -> &[Item] {
        &self.exports
    }

    /// The contract version the component targets.
    pub fn contract(&self) -> ContractVersion {
        self.contract
    }

    pub fn has_validate_config(&self) -> bool {
        self.validate_config.is_some()
    }

    pub(crate) fn with_origin(&self, origin: LoadOrigin) -> PolicyComponent {
        PolicyComponent {
            digest: self.digest.clone(),
            pre: self.pre.clone(),
            decide: self.decide,
            validate_config: self.validate_config,
            contract: self.contract,
            origin,
            size: self.size,
            imports: self.imports.clone(),
            exports: self.exports.clone(),
        }
    }
}

impl std::fmt::Debug for PolicyComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyComponent")
            .field("digest", &self.digest)
            .field("origin", &self.origin)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

pub(crate) fn item_kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "function",
        ComponentItem::CoreFunc(_) => "core function",
        ComponentItem::Module(_) => "core module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "interface",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}
