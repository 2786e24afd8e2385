//! Allocates without bound, doubling each time. The memory cap must stop it.

use tollgate_policy::*;

struct MemoryBomb;

impl Policy for MemoryBomb {
    fn decide(request: &Request, _state: &TenantState) -> Verdict {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        let mut size = 1usize << 20;
        loop {
            // Reserving is enough to grow linear memory; touching one byte
            // keeps the allocation observable.
            let mut chunk = Vec::with_capacity(size);
            chunk.push(request.now_ms as u8);
            hoard.push(std::hint::black_box(chunk));
            size = size.saturating_mul(2);
            if hoard.len() == usize::MAX {
                break;
            }
        }
        Verdict::admit(format!("held {} chunks", hoard.len()))
    }
}

export_policy!(MemoryBomb);
