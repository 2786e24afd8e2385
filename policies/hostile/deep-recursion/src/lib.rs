//! Recurses without bound. The Wasm stack cap must stop it.

use tollgate_policy::*;

/// Work after the recursive call keeps it from becoming a loop, and plain
/// integer locals keep the frames on the Wasm stack (not in linear memory).
fn descend(n: u64) -> u64 {
    if n == 0 {
        return 1;
    }
    let below = descend(n - 1);
    below.wrapping_mul(31).rotate_left((n % 7) as u32) ^ n
}

struct DeepRecursion;

impl Policy for DeepRecursion {
    fn decide(request: &Request, _state: &TenantState) -> Verdict {
        let depth = u64::MAX - (request.now_ms & 0xff);
        Verdict::admit(format!("depth {}", descend(depth)))
    }
}

export_policy!(DeepRecursion);
