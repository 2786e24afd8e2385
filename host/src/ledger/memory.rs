//! The in-memory store: fast, and forgets everything when the process ends.
//! For tests, demos and gateways whose budgets are enforced elsewhere too.

use crate::ids::TenantId;

use super::book::{Books, Change};
use super::book_store::{BookStore, Journal, Waiter};
use super::error::StoreError;
use super::store::Durable;

/// A journal that keeps nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Forget;

impl Journal for Forget {
    type Entry = ();
    type Ticket = ();

    const WAITS: bool = false;

    fn entry(_: &TenantId, _: Change<'_>) -> Option<()> {
        None
    }

    fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn enqueue(&self, _: Vec<()>, _: Waiter) -> Result<(), StoreError> {
        Ok(())
    }

    fn wait(&self, _: ()) -> Result<(), StoreError> {
        Ok(())
    }

    fn durable(&self, _: ()) -> Durable {
        Durable::ready()
    }
}

/// Tenants' books in memory only.
pub type MemoryStore = BookStore<Forget>;

impl BookStore<Forget> {
    pub fn new() -> Self {
        BookStore::from_parts(Books::default(), 1, Forget)
    }
}

impl Default for BookStore<Forget> {
    fn default() -> Self {
        Self::new()
    }
}
